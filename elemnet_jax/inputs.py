"""A run's inputs: a dataset read, validated, featurized and grouped, split into train/val/test, and scaled."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import logging

from elemnet_jax import data, featurizers, targets, tasks
from elemnet_jax.configs.schema import DatasetConfig, FeaturizerConfig, RunConfig, TargetTransferConfig, TrainConfig
from elemnet_jax.data import datasets
from elemnet_jax.errors import UserError


@dataclasses.dataclass
class Inputs:
  """Featurized, scaled data of one run, split into train/val/test."""

  parts: dict[str, data.Examples]  # unscaled features and targets, for reporting
  x: dict[str, np.ndarray]  # scaled features per split
  y: dict[str, np.ndarray]  # scaled targets per split
  featurizer: dict  # description
  feature_scaling: data.FeatureScaling
  target_scaling: data.TargetScaling
  notes: dict


def load_examples(dataset: DatasetConfig, featurizer_config: FeaturizerConfig, data_dir: str = ''):
  """Reads, validates, featurizes and groups a dataset; returns (examples, featurizer, notes, spec)."""
  table, spec = datasets.load_table(
    dataset.name,
    dataset.target or None,
    data_dir=data_dir or None,
    input_column=dataset.input_column,
    input_kind=dataset.input_kind,
    unit=dataset.unit,
  )
  if dataset.resplit and table.split is not None:  # one pool, grouped across the published split
    table = dataclasses.replace(table, split=None)
  featurizer = featurizers.build(featurizer_config.to_dict())  # its options were checked with the config
  notes: dict = {'dataset': dataset.name}
  table = tasks.encode_labels(table, dataset, notes)  # classification: 0/1 labels
  tic = time.perf_counter()
  examples = data.prepare(table, spec, featurizer, skip_invalid=dataset.skip_invalid, notes=notes)
  logging.info(
    '%s: %d rows -> %d examples, featurized in %.1fs (%s)',
    dataset.name,
    len(table.inputs),
    len(examples),
    time.perf_counter() - tic,
    notes,
  )
  excluded = [name for name in dataset.exclude_from.split(',') if name]
  if excluded:
    examples = _exclude(examples, excluded, featurizer, notes, dataset, data_dir)
  return examples, featurizer, notes, spec


def _exclude(examples, names: list[str], featurizer, notes: dict, dataset: DatasetConfig, data_dir) -> data.Examples:
  """Leakage control: `examples` without the inputs that the datasets `names` hold (whatever their targets)."""
  excluded = set()
  for name in names:  # a registered dataset, or a CSV file whose `input_column` names the inputs
    other_table, other_spec = datasets.load_table(
      name,
      data_dir=data_dir or None,
      input_column=dataset.input_column,
      input_kind=featurizer.input_kind,
      inputs_only=True,
    )
    if other_spec.input_kind != featurizer.input_kind:
      raise UserError(
        f'exclude_from={name}: it holds {other_spec.input_kind} inputs, this dataset {featurizer.input_kind} inputs'
      )
    excluded |= set(featurizer.featurize(other_table.inputs)[1]) - {''}  # an invalid input's key is ''
  keep = np.array([key not in excluded for key in examples.keys])
  notes['excluded'] = {'from': names, 'count': int((~keep).sum())}
  logging.info('%s: removed %d examples whose inputs occur in %s', dataset.name, (~keep).sum(), names)
  return examples.take(np.flatnonzero(keep))


def fit_target_scaling(
  y_train: np.ndarray,
  kind: str,
  transfer_config: TargetTransferConfig,
  source_meta: dict | None = None,
  dataset: DatasetConfig | None = None,
  head: str = '',
) -> data.TargetScaling:
  """The units the model learns targets in.

  Fitted to `y_train` as `kind` (train.target_scaling) says; when fine-tuning a regression, the source model's
  own, or standardised with `y_train` with `transfer.target_scaling='refit'` or when `dataset` names other
  targets than the source's outputs (`targets.new_outputs`; no `dataset`: one regression target). The output
  `head` trained ('': the source's, else point) may keep only the scale: a hurdle's never shifts (`tasks.head_scaling`).
  """
  head = head or ((source_meta or {}).get('model') or {}).get('head', 'point')
  where = dataset.name if dataset is not None else 'target'
  if source_meta is None or (dataset is not None and dataset.task == 'classification'):
    return tasks.head_scaling(data.TargetScaling.fit(y_train, kind), y_train, head, where)
  other_targets = dataset is not None and targets.new_outputs(source_meta, dataset)
  if other_targets or transfer_config.target_scaling == 'refit':
    return tasks.head_scaling(data.TargetScaling.fit(y_train, 'standard'), y_train, head, where)
  return tasks.head_scaling(data.TargetScaling(**source_meta['target_scaling']), y_train, head, where)


def fit_feature_scaling(x_train: np.ndarray, features, source_meta: dict | None = None) -> data.FeatureScaling:
  """The source model's column selection and scaling when fine-tuning, else fitted to `x_train` as `features` says."""
  if source_meta is not None:
    return data.FeatureScaling.from_dict(source_meta['feature_scaling'])
  return data.FeatureScaling.fit(x_train, features.drop_constant, features.standardize)


def make_inputs(parts, featurizer_description: dict, feature_scaling, target_scaling, notes=None) -> Inputs:
  """The scaled features and targets of each part."""
  x = {name: feature_scaling(part.x) for name, part in parts.items()}
  y = {name: target_scaling.apply(part.y) for name, part in parts.items()}
  return Inputs(parts, x, y, featurizer_description, feature_scaling, target_scaling, notes or {})


def split_parts(config: RunConfig) -> dict[str, data.Examples]:
  """The train/val/test examples a run with `config` trains on: what its split.csv records."""
  return split(load_examples(config.dataset, config.featurizer, config.data_dir)[0], config.dataset, config.train)


def split(examples: data.Examples, dataset: DatasetConfig, train: TrainConfig | None = None) -> dict:
  """The examples' train/val/test parts; with `train.calibration_fraction`, a share of the training rows set apart
  in a 'calibration' part that only calibrates the ensemble's spread."""
  labels = data.assign_splits(examples, dataset.split, dataset.split_seed)
  parts = data.split_examples(examples, labels, dataset.min_split_size, dataset.name)
  fraction = train.calibration_fraction if train is not None else 0.0
  return data.set_apart(parts, fraction, dataset.split_seed + 300) if fraction > 0 else parts
