"""Early-stopped training of an ensemble of K members (K >= 1) on host-side epochs; resumable."""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from elemnet_jax import workdir
from elemnet_jax.train import (
  Members,
  Params,
  TrainingDiverged,
  TrainState,
  epoch_order,
  evaluation_params,
  make_indexed_step,
  make_predict,
  make_train_epoch,
  make_train_step,
  predict_in_batches,
)


@dataclasses.dataclass
class Progress:
  """Host-side bookkeeping of `fit`, saved beside the state so a run can resume; history in target units."""

  epoch: int = 0  # epochs completed
  best_val: list[float] = dataclasses.field(default_factory=list)  # per member
  best_epoch: list[int] = dataclasses.field(default_factory=list)
  history: list[dict] = dataclasses.field(default_factory=list)
  stopped: bool = False


@dataclasses.dataclass(frozen=True)
class FitOptions:
  batch_size: int = 32
  max_epochs: int = 100
  patience: int = 20
  loss: str = 'mae'
  log_every: int = 1
  eval_batch_size: int = 8192
  mode: str = 'epoch'  # 'epoch' (lax.scan) or 'step' (a Python loop; same result)
  eval_dropout_passes: int = 0  # > 0: validate on the mean of that many dropout passes
  log_scale: float = 1.0  # the target scale: history and log show target units
  ema_decay: float = 0.0  # for states that keep a moving average of the weights (evaluated instead)
  learning_rate: Callable[[int], float] | None = None  # the schedule, step -> rate, for the history

  @property
  def loss_scale(self) -> float:
    """Training loss -> target units (squared target units for mse and huber)."""
    return self.log_scale ** (1 if self.loss == 'mae' else 2)


def epoch_runner(members: Members, train, options: FitOptions, mesh: Mesh | None = None):
  """(run_epoch, states, x_train, y_train): one call trains every member one epoch; data and states placed.

  `train` is (x [N, F], y [N]) shared by the members or (x [K, N, F], y [K, N]) each member's own.
  `mesh`: shard each minibatch over its
  'data' axis, the states and data replicated. In epoch mode `run_epoch` is one jitted call; in step
  mode it is a Python loop of jitted `make_indexed_step` calls.
  """
  x_train, y_train = (jnp.asarray(a) for a in train)
  states, count = members.states, members.count
  own_data = x_train.ndim == 3  # each member trains on its own rows
  if own_data and (x_train.shape[0] != count or tuple(y_train.shape) != tuple(x_train.shape[:2])):
    raise ValueError(f'train data {x_train.shape}, {y_train.shape} for {count} members: give all their own or none')
  if own_data and count == 1:
    x_train, y_train, own_data = x_train[0], y_train[0], False
  if (options.ema_decay > 0) != (states.average is not None):
    raise ValueError('ema_decay > 0 needs states made with init_state(..., moving_average=True), and only then')
  train_step = make_train_step(members.model, members.optimizer, options.loss, members.frozen, options.ema_decay)
  if mesh is not None:
    replicated = NamedSharding(mesh, P())
    states, x_train, y_train = jax.device_put((states, x_train, y_train), replicated)
  if options.mode == 'epoch':
    train_epoch = make_train_epoch(train_step, options.batch_size, mesh)
    if count == 1:  # XLA:CPU runs batched matmuls of one member slower than plain ones

      def one_member(states, x, y):
        state, losses = train_epoch(jax.tree.map(lambda a: a[0], states), x, y)
        return jax.tree.map(lambda a: a[None], state), losses[None]

      run_epoch = jax.jit(one_member, donate_argnums=0)
    else:
      data_axis = 0 if own_data else None
      run_epoch = jax.jit(jax.vmap(train_epoch, in_axes=(0, data_axis, data_axis)), donate_argnums=0)
  elif options.mode == 'step':
    order = jax.jit(jax.vmap(epoch_order, in_axes=(0, None, None)), static_argnums=(1, 2))

    step_s = make_indexed_step(train_step, mesh)
    # One member steps without its member axis, as in epoch mode: no batched matmuls, and the axis is
    # dropped and restored once per epoch (inside every step call, that costs a copy of the state).
    stacked = count > 1
    data_axis = 0 if own_data else None
    step = jax.jit(
      jax.vmap(step_s, in_axes=(0, data_axis, data_axis, 0, 0, None)) if stacked else step_s, donate_argnums=0
    )
    squeeze = jax.jit(lambda tree: jax.tree.map(lambda a: a[0], tree))
    unsqueeze = jax.jit(lambda tree: jax.tree.map(lambda a: a[None], tree))

    def run_epoch(states, x, y):  # each member reshuffles on its own, then one compiled call per step
      rng, index_KxSxB, mask_KxSxB = order(states.rng, x.shape[-2], options.batch_size)
      states, order_arrays = states.replace(rng=rng), (index_KxSxB, mask_KxSxB)
      if not stacked:
        states, order_arrays = squeeze((states, order_arrays))
      losses = []
      for s in range(index_KxSxB.shape[1]):
        states, metrics = step(states, x, y, *order_arrays, np.int32(s))
        losses.append(metrics['loss'])
      result = states, jnp.stack(losses, axis=-1)
      return result if stacked else unsqueeze(result)
  else:
    raise ValueError(f'unknown training mode {options.mode!r}; use epoch or step')
  return run_epoch, states, x_train, y_train


@jax.jit
def _select_members(chosen_K, new: Params, old: Params) -> Params:
  """Member k of `new` where chosen_K[k], else of `old`."""
  return jax.tree.map(lambda n, o: jnp.where(chosen_K.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


def _check_finite(losses_KxS: np.ndarray, name: str, epoch: int, start_step: int) -> None:
  if not np.isfinite(losses_KxS).all():
    member, step = np.argwhere(~np.isfinite(losses_KxS))[0]
    raise TrainingDiverged(
      f'{name}: training diverged: non-finite loss at epoch {epoch}, step {start_step + step + 1} '
      f'(member {member}); lower the learning rate or check the targets'
    )


def fit(
  members: Members,
  train: tuple[np.ndarray, np.ndarray],
  val: tuple[np.ndarray, np.ndarray],
  options: FitOptions,
  *,
  mesh: Mesh | None = None,
  resume: tuple[Params, Progress] | None = None,
  save: Callable[[TrainState, Params, Progress], None] | None = None,
  name: str = 'fit',
) -> tuple[TrainState, Params, Progress]:
  """Trains K members with early stopping on validation MAE; (final states, best parameters, progress).

  `train` and `val` are (x [N, F], y [N]) shared by every member, or each member's own data with a
  leading member axis, (x [K, N, F], y [K, N]), all members' sets of one size.
  `save(states, best_params, progress)` is called after every epoch (it decides how often to
  write); passing what it saved back as `members.states` and `resume=(best_params, progress)` resumes the run.
  """
  x_val, y_val = val
  count = members.count
  own_val = x_val.ndim == 3
  if own_val != (np.ndim(train[0]) == 3) or (own_val and (x_val.shape[0] != count or y_val.shape != x_val.shape[:2])):
    raise ValueError(f'val data {x_val.shape}, {y_val.shape} for {count} members: give all their own or none')
  run_epoch, states, x_train, y_train = epoch_runner(members, train, options, mesh)
  own_data = x_train.ndim == 3  # after one member's own rows lost their member axis
  if own_val and not own_data:
    x_val, y_val = x_val[0], y_val[0]
  predict = make_predict(members.model, dropout_passes=options.eval_dropout_passes)
  best_params, progress = resume or (None, Progress(best_val=[math.inf] * count, best_epoch=[0] * count))
  if best_params is None:
    best_params = jax.tree.map(jnp.copy, evaluation_params(states))
  if mesh is not None:
    best_params = jax.device_put(best_params, NamedSharding(mesh, P()))
  while not progress.stopped and progress.epoch < options.max_epochs:
    epoch, start_step = progress.epoch + 1, int(np.asarray(states.step).reshape(-1)[0])
    tic = time.perf_counter()
    states, losses_KxS = run_epoch(states, x_train, y_train)
    losses_KxS = np.asarray(losses_KxS)
    _check_finite(losses_KxS, name, epoch, start_step)
    val_pred = predict_in_batches(predict, evaluation_params(states), x_val, options.eval_batch_size)
    val_mae = np.abs(val_pred - (y_val if own_data else y_val[None])).mean(axis=1)
    better = _record_epoch(progress, options, losses_KxS, val_mae, start_step, time.perf_counter() - tic)
    if better.any():
      best_params = _select_members(jnp.asarray(better), evaluation_params(states), best_params)
    if epoch % options.log_every == 0 or progress.stopped or epoch == options.max_epochs:
      _log_epoch(name, progress, options, losses_KxS, count * int(x_train.shape[-2]))
    if save is not None:
      save(states, best_params, progress)
  return states, best_params, progress


def _record_epoch(progress: Progress, options: FitOptions, losses_KxS, val_mae, start_step: int, seconds: float):
  """Adds one epoch to `progress`; returns which members improved (a member out of patience keeps its best)."""
  epoch = progress.epoch + 1
  active = np.array([epoch - 1 - b < options.patience for b in progress.best_epoch])
  better = active & np.isfinite(val_mae) & (val_mae < np.asarray(progress.best_val))
  progress.best_val = [float(v) if b else old for v, b, old in zip(val_mae, better, progress.best_val)]
  progress.best_epoch = [epoch if b else old for b, old in zip(better, progress.best_epoch)]
  rate = float(options.learning_rate(start_step)) if options.learning_rate is not None else None
  progress.history.append(
    {
      'epoch': epoch,
      'train_loss': [float(v) for v in losses_KxS.mean(axis=1) * options.loss_scale],
      'val_mae': [float(v) * options.log_scale for v in val_mae],
      'learning_rate': rate,
      'seconds': round(seconds, 3),
    }
  )
  progress.epoch = epoch
  progress.stopped = min(epoch - b for b in progress.best_epoch) >= options.patience
  return better


def _log_epoch(name: str, progress: Progress, options: FitOptions, losses_KxS, samples: int) -> None:
  last = progress.history[-1]
  recent = [entry['seconds'] for entry in progress.history[-5:]]
  # The ETA assumes early stopping at the latest epoch patience allows, capped by max_epochs.
  end = min(options.max_epochs, max(progress.best_epoch, default=0) + options.patience)
  logging.info(
    '%s epoch %d/%d  train_loss %.4f  val_mae %.4f  best %.4f@%d  %.0f samples/s  %.1fs/epoch  ETA %s',
    name,
    progress.epoch,
    options.max_epochs,
    float(losses_KxS.mean()) * options.loss_scale,
    float(np.mean(last['val_mae'])),
    np.mean(progress.best_val) * options.log_scale,
    int(np.median(progress.best_epoch)),
    samples / last['seconds'],
    last['seconds'],
    _duration(max(end - progress.epoch, 0) * float(np.mean(recent))),
  )


def fit_epochs(
  members: Members,
  train: tuple[np.ndarray, np.ndarray],
  epochs: list[int],
  options: FitOptions,
  *,
  mesh: Mesh | None = None,
  name: str = 'retrain',
) -> Params:
  """Trains member k for `epochs[k]` epochs with no validation; each member's evaluation parameters then.

  Early stopping's choice of epochs, applied to a run on more rows (training and validation rows).
  `train` as for `fit`.
  """
  if len(epochs) != members.count or min(epochs) < 0:
    raise ValueError(f'epochs {epochs} for {members.count} members: give each a count >= 0')
  run_epoch, states, x_train, y_train = epoch_runner(members, train, options, mesh)
  epochs_K, last = np.asarray(epochs), max(epochs, default=0)
  params = jax.tree.map(jnp.copy, evaluation_params(states))  # 0 epochs: the starting weights
  for epoch in range(1, last + 1):
    start_step = int(np.asarray(states.step).reshape(-1)[0])
    states, losses_KxS = run_epoch(states, x_train, y_train)
    losses_KxS = np.asarray(losses_KxS)
    _check_finite(losses_KxS, name, epoch, start_step)
    if (epochs_K == epoch).any():
      params = _select_members(jnp.asarray(epochs_K == epoch), evaluation_params(states), params)
    if epoch % options.log_every == 0 or epoch == last:
      logging.info('%s epoch %d/%d  train_loss %.4f', name, epoch, last, float(losses_KxS.mean()) * options.loss_scale)
  return params


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes // 60}h{minutes % 60:02d}m' if minutes >= 60 else f'{minutes}m{seconds:02d}s'


def write_history(path: Path, progress: Progress) -> None:
  """history.csv: one row per epoch; train loss and validation MAE per member, in target units."""
  members = len(progress.best_epoch)
  with workdir.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    writer.writerow(
      ['epoch']
      + [f'train_loss_{k}' for k in range(members)]
      + [f'val_mae_{k}' for k in range(members)]
      + ['learning_rate', 'seconds']
    )
    for entry in progress.history:
      writer.writerow(
        [entry['epoch']]
        + [f'{v:.6g}' for v in entry['train_loss'] + entry['val_mae']]
        + ['' if entry.get('learning_rate') is None else f'{entry["learning_rate"]:.6g}', entry.get('seconds', '')]
      )
