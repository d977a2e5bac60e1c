"""The Python API: train, fine-tune, run a study and predict from a notebook or script.

import elemnet_jax as ej
config = ej.get_config('test')
metrics = ej.train_model(config, 'workdirs/ssub_small')
model = ej.load('workdirs/ssub_small')
model.predict(['Fe2O3', 'NaCl']).mean
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from elemnet_jax import configs, predict, pretrained, run, study
from elemnet_jax.errors import UserError
from elemnet_jax.training import checkpoint


def show_progress(level: str = 'info') -> None:
  """Shows the library's log (epochs, ETA, results) on standard error, as the commands do."""
  logging.set_verbosity(level)


def get_config(name: str = 'default'):
  """A named config ('default', 'oqmd', 'finetune', 'paper', 'demo', 'porphyrin_tl[:HOMO]', 'test'), to change and
  pass to `train_model`, `finetune` or `run_study` (which check it: `configs.resolve`)."""
  try:
    return configs.get_config(name)
  except ValueError as error:
    raise UserError(str(error)) from None


def train_model(config, workdir: str | os.PathLike, overwrite: bool = False) -> dict:
  """Trains (or resumes) one run in `workdir`; returns its metrics (metrics.json)."""
  show_progress()
  return run.train_and_evaluate(configs.resolve(config), workdir, overwrite)


def finetune(
  pretrained: str | os.PathLike | Sequence[str | os.PathLike],
  workdir: str | os.PathLike,
  config=None,
  overwrite: bool = False,
) -> dict:
  """Fine-tunes finished runs (one workdir, or several joined into one ensemble) with `config` ('finetune' if None)."""
  names = [pretrained] if isinstance(pretrained, str | os.PathLike) else list(pretrained)
  values = (config if config is not None else get_config('finetune')).to_dict()  # typed or not, checked below
  values['transfer'] = {**values['transfer'], 'pretrained': ','.join(map(str, names))}
  return train_model(values, workdir, overwrite)


def run_study(config, workdir: str | os.PathLike, overwrite: bool = False) -> list[dict]:
  """Runs (or resumes) a transfer study in `workdir`; returns its rows (results.json's runs)."""
  show_progress()
  return study.run_study(configs.resolve(config), workdir, overwrite)


@dataclasses.dataclass
class Model:
  """Finished runs loaded for prediction; several act as one ensemble."""

  workdirs: list[str]
  meta: dict  # the first run's model meta (featurizer, scalings, target and its unit)
  loaded: list | None = dataclasses.field(default=None, repr=False)  # read at the first prediction, then kept

  @property
  def unit(self) -> str:
    return (self.meta.get('target') or {}).get('unit', '')

  def predict(self, inputs: Sequence[str]) -> predict.Predictions:
    """Mean and std over every member for each input (formulas or SMILES); invalid ones have NaN and a reason."""
    if self.loaded is None:
      self.loaded = predict.load_models(self.workdirs)
    return predict.predict_inputs(self.workdirs, list(inputs), self.loaded)

  def fingerprint(self, inputs: Sequence[str], layer: int = 0, member: int = 0) -> np.ndarray:
    """Activations after hidden layer `layer` (1-based; 0: the last) of one member, [N, width]; NaN where invalid."""
    return predict.fingerprint(self.workdirs, list(inputs), layer, member)[0]


def load(*workdirs: str | os.PathLike) -> Model:
  """The finished runs in `workdirs` (their model/ folders, or shipped models' names) as one model."""
  names = [pretrained.workdir_of(name) for name in workdirs]
  return Model(names, checkpoint.read_meta(names[0], checkpoint.MODEL_META))


def load_pretrained(name: str = 'oqmd_fe') -> Model:
  """A model shipped with the package (`pretrained.SHIPPED`), its files checked against their SHA-256."""
  folder = pretrained.resolve(name)
  return Model([str(folder)], checkpoint.read_meta(folder, checkpoint.MODEL_META))
