"""Early-stopped training of an ensemble of K members (K >= 1) on host-side epochs; resumable."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from elemnet_jax.configs.schema import ENSEMBLE_SCHEDULES, MODES, FitConfig
from elemnet_jax.models import heads
from elemnet_jax.training import distributed
from elemnet_jax.training.losses import validation_error
from elemnet_jax.training.optimizer import learning_rate_schedule
from elemnet_jax.training.timing import Phases, untimed
from elemnet_jax.training.train import (
  Members,
  Params,
  TrainingDiverged,
  TrainState,
  compiler_options,
  device_chunks,
  epoch_order,
  evaluation_params,
  make_indexed_step,
  make_predict,
  make_train_epoch,
  make_train_step,
  predict_chunks,
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
  """What `fit` takes: how the network trains (a config's train section) and what the run knows besides."""

  train: FitConfig = FitConfig()
  log_scale: float = 1.0  # the target scale: history and log show target units
  rate_schedule: Callable[[int], float] | None = None  # step -> learning rate, for the history
  guard: Callable[[int, int, np.ndarray], None] | None = None  # (epoch, step, val predictions [K, N]); may stop
  eval_batch_size: int = 8192

  @property
  def loss_scale(self) -> float:
    """Training loss -> target units (squared target units for mse and huber; nll as the model's units give it)."""
    return self.log_scale ** {'mae': 1, 'nll': 0}.get(self.train.loss, 2)


def fit_options(train: FitConfig, target_scale: float = 1.0, n_train: int = 0, **more) -> FitOptions:
  """`fit`'s options for `n_train` training rows whose targets are in units of `target_scale` (the rate schedule's
  length counts their steps)."""
  steps = train.steps_per_epoch(n_train)
  warmup, total = int(train.warmup_epochs * steps), train.max_epochs * steps
  rate = learning_rate_schedule(train.learning_rate, train.schedule, warmup, total)
  return FitOptions(train, target_scale, rate if callable(rate) else (lambda step, rate=rate: rate), **more)


def ensemble_schedule(schedule: str, platform: str | None = None) -> str:
  """The schedule an ensemble of K > 1 members trains on: 'vmap' or 'sequential'.

  'vmap' trains the members together (one program over a stacked member axis); 'sequential' trains
  them one after another with the single-member program. 'auto' is 'sequential' on CPU, where
  XLA runs the members' batched matmuls slower than K plain ones, and 'vmap' elsewhere.
  """
  if schedule not in ENSEMBLE_SCHEDULES:
    raise ValueError(f'unknown ensemble schedule {schedule!r}; use {", ".join(ENSEMBLE_SCHEDULES)}')
  if schedule != 'auto':
    return schedule
  return 'sequential' if (platform or jax.default_backend()) == 'cpu' else 'vmap'


def epoch_runner(members: Members, train, options: FitOptions, mesh: Mesh | None = None):
  """(run_epoch, states, x_train, y_train): one call trains every member one epoch; data and states placed.

  `train` is (x [N, F], y [N]) shared by the members or (x [K, N, F], y [K, N]) each member's own.
  `mesh`: shard each minibatch over its 'data' axis, the states and data replicated. In epoch mode
  one member's epoch is one jitted call; in step mode it is a Python loop of jitted
  `make_indexed_step` calls. K > 1 members train as `ensemble_schedule(options.train.ensemble_schedule)` says.
  """
  x_train, y_train = (jnp.asarray(a) for a in train)
  batch_size = options.train.batch_size
  states, count = members.states, members.count
  own_data = x_train.ndim == 3  # each member trains on its own rows
  if own_data and (x_train.shape[0] != count or tuple(y_train.shape) != tuple(x_train.shape[:2])):
    raise ValueError(f'train data {x_train.shape}, {y_train.shape} for {count} members: give all their own or none')
  if own_data and count == 1:
    x_train, y_train, own_data = x_train[0], y_train[0], False
  if (options.train.ema_decay > 0) != (states.average is not None):
    raise ValueError('ema_decay > 0 needs states made with init_state(..., moving_average=True), and only then')
  platform = mesh.devices.flat[0].platform if mesh is not None else None
  schedule = ensemble_schedule(options.train.ensemble_schedule, platform)
  if mesh is not None:  # on every device of every process
    states, x_train, y_train = distributed.replicate((states, x_train, y_train), mesh)
  data_axis = 0 if own_data else None
  settings = options.train
  step = Program(members.model, members.optimizer, settings.loss, members.frozen, settings.ema_decay, mesh, platform)
  if options.train.mode == 'epoch':
    if count == 1:  # one member runs without its member axis: XLA:CPU runs batched matmuls slower than plain ones
      return _compiled_epoch(step, batch_size, 'single'), states, x_train, y_train
    if schedule == 'vmap':
      return _compiled_epoch(step, batch_size, 'vmap', data_axis), states, x_train, y_train
    return _one_after_another(_compiled_epoch(step, batch_size, 'plain'), own_data), states, x_train, y_train
  if options.train.mode == 'step':
    if count == 1:  # the member axis is dropped and restored once per epoch, not in every step call
      single = _step_loop(step, batch_size)
      return (lambda states, x, y: _unsqueeze(single(_squeeze(states), x, y))), states, x_train, y_train
    if schedule == 'vmap':
      return _step_loop(step, batch_size, member_axis=True, data_axis=data_axis), states, x_train, y_train
    return _one_after_another(_step_loop(step, batch_size), own_data), states, x_train, y_train
  raise ValueError(f'unknown training mode {options.train.mode!r}; use one of {", ".join(MODES)}')


@dataclasses.dataclass(frozen=True)
class Program:
  """What fixes a compiled train step: equal values share one compilation across fits, folds, seeds and rates."""

  model: Any  # a Flax module (hashable: its config is a frozen dataclass)
  optimizer: Any  # `training.optimizer.Optimizer`: compared by its structure, not its rates
  loss: str
  frozen: frozenset
  ema_decay: float
  mesh: Mesh | None
  platform: str | None

  def train_step(self):
    return make_train_step(self.model, self.optimizer, self.loss, self.frozen, self.ema_decay)


@functools.lru_cache(maxsize=64)
def _compiled_epoch(program: Program, batch_size: int, layout: str, data_axis: int | None = None):
  """One jitted epoch of `program` (donating the state): of one member ('single', stacked on an axis of one),
  of a member without its axis ('plain'), or of every member at once ('vmap')."""
  train_epoch = make_train_epoch(program.train_step(), batch_size, program.mesh)
  if layout == 'single':
    train_epoch = _without_member_axis(train_epoch)
  elif layout == 'vmap':
    train_epoch = jax.vmap(train_epoch, in_axes=(0, data_axis, data_axis))
  return jax.jit(train_epoch, donate_argnums=0, compiler_options=compiler_options(program.platform))


def _without_member_axis(train_epoch):
  """`train_epoch` of a state stacked on a member axis of one, run on the member itself."""

  def one_member(states, x, y):
    state, losses = train_epoch(jax.tree.map(lambda a: a[0], states), x, y)
    return jax.tree.map(lambda a: a[None], state), losses[None]

  return one_member


@functools.lru_cache(maxsize=64)
def _compiled_step(program: Program, member_axis: bool, data_axis: int | None):
  """(jitted reshuffle, jitted indexed step) of `program`, vmapped over stacked members with `member_axis`."""
  order = jax.vmap(epoch_order, in_axes=(0, None, None)) if member_axis else epoch_order  # each member reshuffles
  step = make_indexed_step(program.train_step(), program.mesh)
  if member_axis:
    step = jax.vmap(step, in_axes=(0, data_axis, data_axis, 0, 0, None))
  jitted_step = jax.jit(step, donate_argnums=0, compiler_options=compiler_options(program.platform))
  return jax.jit(order, static_argnums=(1, 2)), jitted_step


def _step_loop(program: Program, batch_size: int, member_axis: bool = False, data_axis: int | None = None):
  """`run_epoch(state, x, y) -> (state, losses [S])`: a reshuffle, then one jitted step call per minibatch.

  With `member_axis`, the states are stacked [K, ...] and the steps vmapped over them (losses [K, S]).
  """
  order, step = _compiled_step(program, member_axis, data_axis)

  def run_epoch(states, x, y):
    rng, index_SxB, mask_SxB = order(states.rng, x.shape[-2], batch_size)
    states, losses = states.replace(rng=rng), []
    for s in range(index_SxB.shape[-2]):
      states, metrics = step(states, x, y, index_SxB, mask_SxB, np.int32(s))
      losses.append(metrics['loss'])
    return states, jnp.stack(losses, axis=-1)

  return run_epoch


_squeeze = jax.jit(lambda tree: jax.tree.map(lambda a: a[0], tree))
_unsqueeze = jax.jit(lambda tree: jax.tree.map(lambda a: a[None], tree))
_take = jax.jit(lambda tree, k: jax.tree.map(lambda a: a[k], tree))
_put = jax.jit(  # in place: the stack is donated
  lambda tree, k, value: jax.tree.map(lambda a, b: jax.lax.dynamic_update_index_in_dim(a, b, k, 0), tree, value),
  donate_argnums=0,
)


def _one_after_another(single, own_data: bool):
  """`run_epoch(states [K, ...], x, y)` that trains member k alone with `single(state, x, y)`, k = 0 .. K-1.

  Each member trains without a member axis (no batched matmuls), on its own rows with `own_data`. Its
  state stays between epochs in the buffers its last epoch left, so an epoch only copies it into the
  stack it returns; given any other stack, the members are first taken out of it.
  """
  kept = {}  # 'states': the stack the last epoch returned, 'members': the member states it holds

  def run_epoch(states, x, y):
    count = int(jax.tree.leaves(states.step)[0].shape[0])
    members = kept['members'] if kept.get('states') is states else [_take(states, np.int32(k)) for k in range(count)]
    kept.clear()
    losses = []
    for k in range(count):
      member = np.int32(k)
      data = _take((x, y), member) if own_data else (x, y)
      members[k], losses_S = single(members[k], *data)
      states = _put(states, member, members[k])
      losses.append(losses_S)
    kept.update(states=states, members=members)
    return states, jnp.stack(losses)

  return run_epoch


@jax.jit
def select_members(chosen_K, new: Params, old: Params) -> Params:
  """Member k of `new` where chosen_K[k], else of `old`."""
  return jax.tree.map(lambda n, o: jnp.where(chosen_K.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


def check_finite(losses_KxS: np.ndarray, name: str, epoch: int, start_step: int) -> None:
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
  phases: Phases | None = None,
) -> tuple[TrainState, Params, Progress]:
  """Trains K members with early stopping on validation MAE; (final states, best parameters, progress).

  `train` and `val` are (x [N, F], y [N]) shared by every member, or each member's own data with a
  leading member axis, (x [K, N, F], y [K, N]), all members' sets of one size.
  `save(states, best_params, progress)` is called after every epoch (it decides how often to
  write); passing what it saved back as `members.states` and `resume=(best_params, progress)` resumes the run.
  `phases` (`training.timing.Phases`) counts the time of the epochs ('train'), of validation ('evaluate')
  and of `save` ('checkpoint').
  """
  phase = phases or untimed
  x_val, y_val = val
  count = members.count
  own_val = x_val.ndim == 3
  if own_val != (np.ndim(train[0]) == 3) or (own_val and (x_val.shape[0] != count or y_val.shape != x_val.shape[:2])):
    raise ValueError(f'val data {x_val.shape}, {y_val.shape} for {count} members: give all their own or none')
  run_epoch, states, x_train, y_train = epoch_runner(members, train, options, mesh)
  own_data = x_train.ndim == 3  # after one member's own rows lost their member axis
  if own_val and not own_data:
    x_val, y_val = x_val[0], y_val[0]
  predict = make_predict(members.model, dropout_passes=options.train.eval_dropout_passes)
  head = getattr(members.model.config, 'head', 'point')
  best_params, progress = resume or (None, Progress(best_val=[math.inf] * count, best_epoch=[0] * count))
  if best_params is None:
    best_params = jax.tree.map(jnp.copy, evaluation_params(states))
  if mesh is not None:
    best_params = distributed.replicate(best_params, mesh)
  val_chunks = device_chunks(x_val, options.eval_batch_size)  # on the device once, for every epoch
  while not progress.stopped and progress.epoch < options.train.max_epochs:
    epoch, start_step = progress.epoch + 1, int(np.asarray(states.step).reshape(-1)[0])
    tic = time.perf_counter()
    with phase('train'):
      states, losses_KxS = run_epoch(states, x_train, y_train)
      losses_KxS = np.asarray(losses_KxS)  # waits for the epoch
    check_finite(losses_KxS, name, epoch, start_step)
    with phase('evaluate'):
      val_pred = predict_chunks(predict, distributed.local(evaluation_params(states)), val_chunks)
      val_y = y_val if own_data else y_val[None]
      if head != 'point':  # the head's prediction (a mean, a hurdle's better rule), in model units
        val_pred = heads.validation_predictions(head, val_pred, val_y)
      val_mae = validation_error(options.train.loss, val_pred, val_y)  # bce: log-loss
    if options.guard is not None:  # raises for a run that learned nothing (training.guard.monitor)
      options.guard(epoch, int(np.asarray(states.step).reshape(-1)[0]), np.asarray(val_pred))
    better = _record_epoch(progress, options, losses_KxS, val_mae, start_step, time.perf_counter() - tic)
    if better.any():
      best_params = select_members(better, evaluation_params(states), best_params)
    if epoch % options.train.log_every == 0 or progress.stopped or epoch == options.train.max_epochs:
      _log_epoch(name, progress, options, losses_KxS, count * int(x_train.shape[-2]))
    if save is not None:
      with phase('checkpoint'):
        save(states, best_params, progress)
  return states, best_params, progress


def _record_epoch(progress: Progress, options: FitOptions, losses_KxS, val_mae, start_step: int, seconds: float):
  """Adds one epoch to `progress`; returns which members improved (a member out of patience keeps its best)."""
  epoch = progress.epoch + 1
  active = np.array([epoch - 1 - b < options.train.patience for b in progress.best_epoch])
  better = active & np.isfinite(val_mae) & (val_mae < np.asarray(progress.best_val))
  progress.best_val = [float(v) if b else old for v, b, old in zip(val_mae, better, progress.best_val)]
  progress.best_epoch = [epoch if b else old for b, old in zip(better, progress.best_epoch)]
  rate = float(options.rate_schedule(start_step)) if options.rate_schedule is not None else None
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
  progress.stopped = min(epoch - b for b in progress.best_epoch) >= options.train.patience
  return better


def _log_epoch(name: str, progress: Progress, options: FitOptions, losses_KxS, samples: int) -> None:
  last = progress.history[-1]
  recent = [entry['seconds'] for entry in progress.history[-5:]]
  # The ETA assumes early stopping at the latest epoch patience allows, capped by max_epochs.
  end = min(options.train.max_epochs, max(progress.best_epoch, default=0) + options.train.patience)
  logging.info(
    '%s epoch %d/%d  train_loss %.4f  val_mae %.4f  best %.4f@%d  %.0f samples/s  %.1fs/epoch  ETA %s',
    name,
    progress.epoch,
    options.train.max_epochs,
    float(losses_KxS.mean()) * options.loss_scale,
    float(np.mean(last['val_mae'])),
    np.mean(progress.best_val) * options.log_scale,
    int(np.median(progress.best_epoch)),
    samples / max(last['seconds'], 1e-3),  # a recorded 0.0 s (rounded) reads as 1 ms
    last['seconds'],
    _duration(max(end - progress.epoch, 0) * float(np.mean(recent))),
  )


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes // 60}h{minutes % 60:02d}m' if minutes >= 60 else f'{minutes}m{seconds:02d}s'
