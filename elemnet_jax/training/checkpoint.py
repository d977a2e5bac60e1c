"""Orbax checkpoints: training state for resuming, and the exported model for reuse.

``WORKDIR/checkpoints/<step>/`` holds the training state of every member, their best parameters
and the host-side progress (JSON); orbax writes each step to a temporary folder and renames it
when complete, so a run killed at any moment leaves the last complete checkpoint intact.
``WORKDIR/model/`` holds what a later fine-tune or prediction needs: the best parameters
(leading axis = ensemble members) and ``meta.json`` (model config, featurizer description,
feature and target scaling, dataset). A shipped model holds ``params.npz`` instead of the orbax
folder. Nothing is ever pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from elemnet_jax import data, interrupts
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, build_model, config_from_dict
from elemnet_jax.training import distributed
from elemnet_jax.training.fit import Progress

MODEL_DIR = 'model'
META_FILE = 'meta.json'
PORTABLE_FILE = 'params.npz'  # a shipped model's parameters
FORMAT_VERSION = 1


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _uninterrupted() -> contextlib.AbstractContextManager:
  """Holds signals back while orbax hands over or finishes a save (an interrupted wait can leave it hanging) or
  restores. In a joined run JAX's preemption notifier holds SIGTERM (see distributed.preempted): it stays there."""
  if distributed.holds_sigterm():
    return interrupts.held(signal.SIGINT)
  return interrupts.held(signal.SIGINT, signal.SIGTERM)


def _process_zero_only() -> ocp.options.MultiprocessingOptions:
  """Orbax options of a checkpointer that process 0 runs alone (no barrier waits for the other processes)."""
  return ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, leaving JAX's preemption sync point to the run: the run asks it once per epoch on every
  process (distributed.preempted) and saves that epoch; orbax's own asks, some from its background thread
  with an earlier epoch, would move the point where the run would not see it."""

  def reached_preemption(self, step: int) -> bool:
    return False


class TrainingCheckpoints:
  """Saves `(states, best_params, progress)` in the background and restores the latest.

  An epoch is saved when it is a multiple of `every` and at least `seconds` have passed since the last
  save (0: every such epoch), so a kill loses at most about `seconds` of training; the last epoch
  (`force`, or training stopped) is always saved. Saves are asynchronous: training goes on while
  orbax writes a host copy of the arrays; `close` waits for the last one.

  With several processes, process 0 alone saves and restores; `restore` hands what it read to the
  others.
  """

  def __init__(self, directory: str | os.PathLike, every: int = 1, seconds: float = 0.0, keep: int = 2):
    self.every, self.seconds = max(int(every), 1), float(seconds)
    self.last_save = time.monotonic()
    self.manager = None
    if distributed.is_writer():
      several = {'multiprocessing_options': _process_zero_only()} if distributed.count() > 1 else {}
      Path(directory).mkdir(parents=True, exist_ok=True)  # orbax creates it only when every process runs it
      self.manager = _Manager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(
          max_to_keep=keep, enable_async_checkpointing=True, create=not several, **several
        ),
        item_names=('state', 'progress'),
      )

  def latest_epoch(self) -> int | None:
    """The last epoch saved; None when there is none, or on a process other than 0."""
    return self.manager.latest_step() if self.manager is not None else None

  def due(self, progress: Progress, force: bool = False) -> bool:
    """Whether `save` would write this epoch."""
    if force or progress.stopped:
      return self.manager.latest_step() != progress.epoch
    interval = progress.epoch % self.every == 0 and time.monotonic() - self.last_save >= self.seconds
    return interval and self.manager.latest_step() != progress.epoch

  def save(self, states, best_params, progress: Progress, force: bool = False) -> bool:
    """Starts writing this epoch if it is due (on process 0); True if it did."""
    if self.manager is None or not self.due(progress, force):
      return False
    # Host copies: the next epoch donates the device buffers while orbax is still writing.
    arrays = jax.tree.map(np.array, jax.device_get(distributed.local({'states': states, 'best_params': best_params})))
    with _uninterrupted():
      self._save(progress, arrays)
    self.last_save = time.monotonic()
    return True

  def _save(self, progress: Progress, arrays) -> None:
    self.manager.save(
      progress.epoch,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(arrays),
        progress=ocp.args.JsonSave(dataclasses.asdict(progress)),
      ),
    )

  def restore(self, states, best_params) -> tuple[Any, Any, Progress]:
    """Restores the latest checkpoint into the structure of `states` and `best_params` (every process)."""
    target = {'states': states, 'best_params': best_params}
    if self.manager is not None:
      target, progress = self._restore(target)
    else:
      progress = None
    restored = distributed.from_writer(target)
    progress = Progress(**distributed.from_writer_json(progress))
    return restored['states'], restored['best_params'], progress

  def _restore(self, target) -> tuple[Any, dict]:
    # Signals wait until it is done: orbax's wait drops any exception raised inside it, and one raised inside
    # its reads would surface as a read error of the checkpoint.
    with _uninterrupted():
      self.manager.wait_until_finished()
      epoch = self.manager.latest_step()
      try:
        restored = self.manager.restore(
          epoch,
          args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(target)),
            progress=ocp.args.JsonRestore(),
          ),
        )
      except Exception as error:  # noqa: BLE001 - any failure means the checkpoint is unusable
        raise UserError(
          f'{self.manager.directory}/{epoch}: checkpoint cannot be restored '
          f'({_reason(error)}; one written by an earlier version of elemnet_jax may not fit this one); delete it '
          'or start a new workdir'
        ) from None
    return restored['state'], dict(restored['progress'])

  def close(self) -> None:
    """Waits for the last save to be complete on disk."""
    if self.manager is not None:
      with _uninterrupted():
        self.manager.wait_until_finished()
        self.manager.close()


def _reason(error: Exception) -> str:
  """An exception in a few words: its type and the first line of its message, if it has one."""
  lines = str(error).strip().splitlines()
  return f'{type(error).__name__}: {lines[0][:200]}' if lines else type(error).__name__


def save_model(workdir: str | os.PathLike, params: Any, meta: dict) -> Path:
  """Writes WORKDIR/model atomically (a sibling temporary folder, then a rename)."""
  final = Path(workdir).absolute() / MODEL_DIR
  partial = final.with_name(MODEL_DIR + '.partial')
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  several = {'multiprocessing_options': _process_zero_only()} if distributed.count() > 1 else {}  # process 0 alone
  checkpointer = ocp.StandardCheckpointer(**several)
  checkpointer.save(partial / 'params', jax.device_get(distributed.local(params)))
  checkpointer.wait_until_finished()
  meta = {'format_version': FORMAT_VERSION, **meta}
  (partial / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
  if final.exists():
    old = final.with_name(MODEL_DIR + '.old')
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(partial, final)
  return final


def read_meta(workdir: str | os.PathLike, required: tuple[str, ...] = ('model', 'members')) -> dict:
  """The metadata of a saved model; a clear error when the workdir holds none."""
  path = Path(workdir) / MODEL_DIR / META_FILE
  if not Path(workdir).exists():
    raise UserError(f'{workdir}: no such workdir')
  if not path.exists():
    raise UserError(
      f'{workdir}: holds no finished model ({MODEL_DIR}/{META_FILE} is missing); train it to the end first'
    )
  try:
    meta = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise UserError(f'{path}: corrupted model metadata ({error})') from None
  if not isinstance(meta, dict):
    raise UserError(f'{path}: corrupted model metadata (not a JSON object)')
  if meta.get('format_version') != FORMAT_VERSION:
    raise UserError(f'{path}: unsupported model format {meta.get("format_version")!r}')
  missing = [key for key in required if key not in meta]
  if missing:
    raise UserError(f'{path}: corrupted model metadata (missing {", ".join(missing)})')
  if 'feature_scaling' in required and data.scaling_problem(meta):
    raise UserError(f'{path}: corrupted model metadata ({data.scaling_problem(meta)})')
  return meta


def _leaf_names(tree: Any) -> list[str]:
  """'params/<group>/kernel'-style names of a parameter tree's leaves, in flattening order."""
  return ['/'.join(str(key.key) for key in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def save_portable(directory: Path, params: Any, dtype: str = 'float32') -> None:
  """Writes `params` as one NumPy archive, directory/params.npz (the shipped models' format)."""
  leaves = [np.asarray(leaf, dtype) for leaf in jax.tree.leaves(jax.device_get(params))]
  np.savez(directory / PORTABLE_FILE, **dict(zip(_leaf_names(params), leaves)))


def _load_portable(path: Path, abstract_params: Any) -> Any:
  """Parameters from params.npz, cast to the dtypes of `abstract_params`; its names and shapes must match."""
  try:
    with np.load(path) as archive:
      arrays = {name: archive[name] for name in archive.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
    raise UserError(f'{path}: model parameters cannot be read ({_reason(error)})') from None
  leaves = []
  for name, want in zip(_leaf_names(abstract_params), jax.tree.leaves(abstract_params)):
    if name not in arrays or arrays[name].shape != tuple(want.shape):
      found = arrays[name].shape if name in arrays else 'missing'
      raise UserError(f'{path}: {name} is {found}, the model meta says {tuple(want.shape)}')
    leaves.append(arrays[name].astype(want.dtype))
  return jax.tree.unflatten(jax.tree.structure(abstract_params), leaves)


def load_model(workdir: str | os.PathLike, abstract_params: Any) -> Any:
  """Restores the parameters of WORKDIR/model (orbax, or params.npz) into the structure `abstract_params`."""
  if (Path(workdir) / MODEL_DIR / PORTABLE_FILE).exists():
    return _load_portable(Path(workdir) / MODEL_DIR / PORTABLE_FILE, abstract_params)
  path = Path(workdir).absolute() / MODEL_DIR / 'params'
  try:
    with _uninterrupted():  # a signal raised inside orbax's reads would surface as a read error of the checkpoint
      params = ocp.StandardCheckpointer().restore(path, _abstract(abstract_params))
  except Exception as error:  # noqa: BLE001 - any failure means the checkpoint is unusable
    raise UserError(
      f'{path}: model parameters cannot be restored ({_reason(error)}); the checkpoint is missing or corrupted'
    ) from None
  return jax.tree.map(np.asarray, params)


MODEL_META = ('model', 'featurizer', 'feature_scaling', 'target_scaling', 'members')  # what save_model writes


def stacked_abstract_params(model_config: ModelConfig, width: int, members: int):
  """Shapes and dtypes of the parameters of `members` stacked models (an orbax restore target)."""
  model = build_model(model_config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, width))))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct((members,) + a.shape, a.dtype), abstract)


def load_trained(workdir: str | os.PathLike) -> tuple[Any, Any, dict]:
  """(model, parameters [K, ...], meta) of a finished run."""
  meta = read_meta(workdir, MODEL_META)
  try:
    model_config = config_from_dict(meta['model'])
  except (TypeError, ValueError) as error:
    raise UserError(f'{Path(workdir) / MODEL_DIR / META_FILE}: model config: {error}') from None
  model = build_model(model_config, frozen_layers=tuple(meta.get('frozen_layers', ())))
  width = len(meta['feature_scaling']['keep'])
  return model, load_model(workdir, stacked_abstract_params(model_config, width, meta['members'])), meta
