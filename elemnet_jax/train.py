"""Functional training: a pytree train state, jitted steps, whole epochs under `lax.scan`.

Every function here trains ONE model. `fit` trains an ensemble of K members (K >= 1) at once by
`jax.vmap` over a leading member axis of the state, so a single run is the case K = 1.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from elemnet_jax.errors import UserError
from elemnet_jax.model import ElemNet

Params = Any


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; arrays only, so it vmaps, shards and saves."""

  step: jax.Array  # int32 []
  params: Params
  opt_state: Any
  rng: jax.Array  # uint32 [2], raw key: split once per epoch for the shuffle, folded per step
  average: Params = None  # exponential moving average of params (`ema_decay` > 0), else None


def evaluation_params(state: TrainState) -> Params:
  """The weights validation, early stopping and the saved model use: the moving average if kept."""
  return state.params if state.average is None else state.average


class TrainingDiverged(UserError):
  """A non-finite loss; the message names epoch and step."""


def loss_per_example(kind: str, prediction: jax.Array, target: jax.Array) -> jax.Array:
  error = prediction - target
  if kind == 'mae':
    return jnp.abs(error)
  if kind == 'mse':
    return jnp.square(error)
  if kind == 'huber':
    return optax.huber_loss(prediction, target, delta=0.1)
  raise ValueError(f'unknown loss {kind!r}; use mae, mse or huber')


class StartingPoint(NamedTuple):
  """Optimizer state of `decay_toward_start`: the parameters training started from."""

  start: Params


def decay_toward_start(weight_decay: float) -> optax.GradientTransformation:
  """Adds `weight_decay * (params - start)` to the updates: L2-SP, decoupled as in AdamW.

  `start` is what `init` saw, i.e. the pretrained weights when fine-tuning, so the decay pulls the
  network back toward what it learnt on the source data instead of toward zero (Li et al., 2018).
  """

  def init(params):
    return StartingPoint(jax.tree.map(jnp.array, params))  # a copy: params are donated each step

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('decay_toward_start needs the current params in update()')
    decayed = jax.tree.map(lambda u, p, s: u + weight_decay * (p - s), updates, params, state.start)
    return decayed, state

  return optax.GradientTransformation(init, update)


def make_optimizer(
  learning_rate: float,
  *,
  name: str = 'adam',
  schedule: str = 'constant',
  warmup_steps: int = 0,
  total_steps: int = 0,
  weight_decay: float = 0.0,
  decay_toward: str = 'zero',
  labels: Params | None = None,
  body_lr_scale: float = 1.0,
) -> optax.GradientTransformation:
  """Adam(W) with an optional warm-up + cosine schedule.

  AdamW's decoupled weight decay pulls the weights toward zero (`decay_toward='zero'`) or toward
  the weights training started from (`'start'`: L2-SP, for fine-tuning).
  With `labels` (a pytree of 'frozen' | 'body' | 'head', see `elemnet_jax.transfer`), the
  optimizer is `optax.multi_transform`: frozen leaves get `set_to_zero()` and keep no moments,
  'body' leaves learn at `body_lr_scale` times the head's rate.
  """

  def rate(scale: float):
    peak = learning_rate * scale
    if schedule == 'constant':
      return peak
    if schedule == 'cosine' and warmup_steps <= 0:  # no warm-up: the first step already at the peak
      return optax.cosine_decay_schedule(peak, max(total_steps, 1))
    if schedule == 'cosine':
      return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1))
    raise ValueError(f'unknown schedule {schedule!r}; use constant or cosine')

  def base(scale: float) -> optax.GradientTransformation:
    if name == 'adam':
      return optax.adam(rate(scale))
    if name == 'adamw' and decay_toward == 'zero':
      return optax.adamw(rate(scale), weight_decay=weight_decay)
    if name == 'adamw' and decay_toward == 'start':
      return optax.chain(
        optax.scale_by_adam(), decay_toward_start(weight_decay), optax.scale_by_learning_rate(rate(scale))
      )
    if name == 'adamw':
      raise ValueError(f'unknown decay_toward {decay_toward!r}; use zero or start')
    raise ValueError(f'unknown optimizer {name!r}; use adam or adamw')

  if labels is None:
    return base(1.0)
  return optax.multi_transform({'head': base(1.0), 'body': base(body_lr_scale), 'frozen': optax.set_to_zero()}, labels)


def init_state(
  model: ElemNet,
  optimizer: optax.GradientTransformation,
  width: int,
  seed: int,
  params: Params | None = None,
  moving_average: bool = False,
) -> TrainState:
  """A fresh state; `params` (e.g. pretrained) replace the random initialisation.

  With `moving_average` the state also keeps an exponential moving average of the weights,
  starting from `params` (see `make_train_step`'s `ema_decay`).
  """
  key = jax.random.PRNGKey(seed)
  init_key, rng = jax.random.split(key)
  if params is None:
    params = model.init(init_key, jnp.zeros((1, width), jnp.float32))
  average = jax.tree.map(jnp.array, params) if moving_average else None  # a copy: states are donated
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), rng, average)


def frozen_paths(labels: Params | None) -> frozenset[tuple[str, ...]]:
  if labels is None:
    return frozenset()
  return frozenset(path for path, label in traverse_util.flatten_dict(labels).items() if label == 'frozen')


def make_train_step(
  model: ElemNet,
  optimizer: optax.GradientTransformation,
  loss: str = 'mae',
  frozen: frozenset[tuple[str, ...]] = frozenset(),
  ema_decay: float = 0.0,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, dict]]:
  """`train_step(state, x_BxF, y_B, mask_B) -> (state, {'loss'})`; masked rows do not count.

  Gradients are taken only with respect to the trainable leaves: frozen ones are closed over as
  constants, so XLA computes no backward pass into frozen layers. A state that keeps a moving
  average (`init_state(..., moving_average=True)`) updates it after every step, frozen leaves excepted:
  average <- ema_decay * average + (1 - ema_decay) * params.
  """

  def train_step(state, x_BxF, y_B, mask_B):
    dropout_key = jax.random.fold_in(state.rng, state.step)
    flat = traverse_util.flatten_dict(state.params)
    fixed = {path: leaf for path, leaf in flat.items() if path in frozen}
    trainable = {path: leaf for path, leaf in flat.items() if path not in frozen}

    def objective(trainable):
      params = traverse_util.unflatten_dict({**fixed, **trainable})
      prediction = model.apply(params, x_BxF, dropout=True, rngs={'dropout': dropout_key})
      weight = mask_B.astype(prediction.dtype)
      return jnp.sum(weight * loss_per_example(loss, prediction, y_B)) / jnp.maximum(weight.sum(), 1)

    value, trainable_grads = jax.value_and_grad(objective)(trainable)
    grads = traverse_util.unflatten_dict(
      {**{path: jnp.zeros_like(leaf) for path, leaf in fixed.items()}, **trainable_grads}
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    average = state.average
    if average is not None:  # frozen leaves are left as they are: averaging them would round them away
      moved = traverse_util.flatten_dict(optax.incremental_update(params, average, step_size=1.0 - ema_decay))
      kept = traverse_util.flatten_dict(average)
      average = traverse_util.unflatten_dict({path: kept[path] if path in frozen else moved[path] for path in moved})
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, average=average), {'loss': value}

  return train_step


def epoch_order(rng: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(next rng, indices [S, B], mask [S, B]): one reshuffle; the last partial batch is masked."""
  rng, shuffle_key = jax.random.split(rng)
  steps = -(-n // batch_size)
  order = jax.random.permutation(shuffle_key, n)
  padded = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])
  mask = jnp.arange(steps * batch_size) < n
  return rng, padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def data_mesh(devices: int | None = None) -> Mesh:
  """A 1-D mesh over the local devices with one 'data' axis (automatic sharding propagation)."""
  return jax.make_mesh((devices or jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(batch, mesh: Mesh | None):
  """Inside a jitted step: the minibatch arrays split over the mesh's 'data' axis (as they are without a mesh)."""
  if mesh is None:
    return batch
  return jax.lax.with_sharding_constraint(batch, NamedSharding(mesh, P('data')))


def make_indexed_step(train_step, mesh: Mesh | None = None):
  """`step(state, x_NxF, y_N, index_SxB, mask_SxB, s)`: step s of an epoch's order (`epoch_order`).

  The per-step loop's unit of work: gathers the step's shuffled rows from the data on the device,
  shards them over the mesh's 'data' axis (with a `mesh`) and trains one step.
  """

  def step(state, x_NxF, y_N, index_SxB, mask_SxB, s):
    index_B = index_SxB[s]
    return train_step(state, *shard_batch((x_NxF[index_B], y_N[index_B], mask_SxB[s]), mesh))

  return step


def make_train_epoch(train_step, batch_size: int, mesh: Mesh | None = None):
  """`train_epoch(state, x_NxF, y_N) -> (state, losses [S])`: one compiled call per epoch.

  The data stay on the device; each step gathers its shuffled minibatch. With a `mesh`, each
  minibatch is sharded over the 'data' axis while the state stays replicated.
  """

  def train_epoch(state, x_NxF, y_N):
    rng, index_SxB, mask_SxB = epoch_order(state.rng, x_NxF.shape[0], batch_size)

    def body(state, batch):
      index_B, mask_B = batch
      state, metrics = train_step(state, *shard_batch((x_NxF[index_B], y_N[index_B], mask_B), mesh))
      return state, metrics['loss']

    return jax.lax.scan(body, state.replace(rng=rng), (index_SxB, mask_SxB))

  return train_epoch


def make_predict(model: ElemNet, hidden_layer: int | None = None, dropout_passes: int = 0):
  """Jitted `predict(params_K, x) -> [K, B]` over an ensemble axis of the parameters.

  `x` is one batch for every member, [B, F], or each member's own, [K, B, F].
  With `dropout_passes > 0`, each prediction is the mean of that many stochastic dropout passes
  (as the TF1 ElemNet evaluated). Pass p applies one thinned network, drawn from a fixed key, to
  every row, so an input's prediction is reproducible and the same at any position in any batch.
  """

  def apply(params, x):
    if dropout_passes <= 0:
      return model.apply(params, x, hidden_layer=hidden_layer)
    keys = jax.random.split(jax.random.PRNGKey(0), dropout_passes)
    passes = jax.vmap(
      lambda key: model.apply(params, x, dropout=True, hidden_layer=hidden_layer, one_mask=True, rngs={'dropout': key})
    )(keys)
    return passes.mean(axis=0)

  shared, own = (jax.jit(jax.vmap(apply, in_axes=(0, axis))) for axis in (None, 0))
  return lambda params, x: (own if x.ndim == 3 else shared)(params, x)


def predict_in_batches(predict, params, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
  """Runs `predict` over fixed-size padded chunks of the example axis (one compilation); [K, N, ...].

  `x`: [N, F] for every member, or [K, N, F] with each member's own examples.
  """
  n = x.shape[-2]
  size = min(batch_size, max(n, 1))
  chunks = []
  for start in range(0, n, size):
    chunk = x[..., start : start + size, :]
    padded = np.zeros(x.shape[:-2] + (size, x.shape[-1]), x.dtype)
    padded[..., : chunk.shape[-2], :] = chunk
    chunks.append(np.asarray(predict(params, padded))[:, : chunk.shape[-2]])
  return np.concatenate(chunks, axis=1)


@dataclasses.dataclass
class Progress:
  """Host-side bookkeeping of `fit`, saved beside the state so a run can resume."""

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
  log_scale: float = 1.0  # the target scale: logged losses are shown in target units (squared for mse, huber)
  ema_decay: float = 0.0  # for states that keep a moving average of the weights (evaluated instead)


def epoch_runner(model, optimizer, states, train, options, frozen=frozenset(), mesh=None):
  """(run_epoch, states, x_train, y_train): one call trains every member one epoch; data and states placed.

  `train` is (x [N, F], y [N]) shared by the members or (x [K, N, F], y [K, N]) each member's own.
  `frozen`: parameter paths not trained (`frozen_paths`); `mesh`: shard each minibatch over its
  'data' axis, the states and data replicated. In epoch mode `run_epoch` is one jitted call; in step
  mode it is a Python loop of jitted `make_indexed_step` calls.
  """
  x_train, y_train = (jnp.asarray(a) for a in train)
  members = jax.tree.leaves(states.step)[0].shape[0]
  own_data = x_train.ndim == 3  # each member trains on its own rows
  if own_data and (x_train.shape[0] != members or tuple(y_train.shape) != tuple(x_train.shape[:2])):
    raise ValueError(f'train data {x_train.shape}, {y_train.shape} for {members} members: give all their own or none')
  if own_data and members == 1:
    x_train, y_train, own_data = x_train[0], y_train[0], False
  if (options.ema_decay > 0) != (states.average is not None):
    raise ValueError('ema_decay > 0 needs states made with init_state(..., moving_average=True), and only then')
  train_step = make_train_step(model, optimizer, options.loss, frozen, options.ema_decay)
  if mesh is not None:
    replicated = NamedSharding(mesh, P())
    states, x_train, y_train = jax.device_put((states, x_train, y_train), replicated)
  if options.mode == 'epoch':
    train_epoch = make_train_epoch(train_step, options.batch_size, mesh)
    if members == 1:  # XLA:CPU runs batched matmuls of one member slower than plain ones

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
    stacked = members > 1
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


def _loss_in_target_units(losses_KxS: np.ndarray, options: FitOptions) -> float:
  """The mean training loss for the log: in target units for mae, squared target units for mse and huber."""
  return float(losses_KxS.mean()) * options.log_scale ** (1 if options.loss == 'mae' else 2)


def _check_finite(losses_KxS: np.ndarray, name: str, epoch: int, start_step: int) -> None:
  if not np.isfinite(losses_KxS).all():
    member, step = np.argwhere(~np.isfinite(losses_KxS))[0]
    raise TrainingDiverged(
      f'{name}: training diverged: non-finite loss at epoch {epoch}, step {start_step + step + 1} '
      f'(member {member}); lower the learning rate or check the targets'
    )


def fit(
  model: ElemNet,
  optimizer,
  states: TrainState,
  train: tuple[np.ndarray, np.ndarray],
  val: tuple[np.ndarray, np.ndarray],
  options: FitOptions,
  *,
  frozen: frozenset = frozenset(),
  mesh: Mesh | None = None,
  best_params: Params | None = None,
  progress: Progress | None = None,
  save: Callable[[TrainState, Params, Progress], None] | None = None,
  name: str = 'fit',
) -> tuple[TrainState, Params, Progress]:
  """Trains K members (leading axis of `states`) with early stopping on validation MAE.

  `train` and `val` are (x [N, F], y [N]) shared by every member, or each member's own data with a
  leading member axis, (x [K, N, F], y [K, N]), all members' sets of one size: members that hold
  out different validation rows (`study.rotate_validation`).
  Returns the final states, the best-on-validation parameters of each member, and the progress.
  `save(states, best_params, progress)` is called after every epoch (it decides how often to
  write); passing back what it saved as `states`, `best_params`, `progress` resumes the run.
  """
  x_val, y_val = val
  members = jax.tree.leaves(states.step)[0].shape[0]
  own_val = x_val.ndim == 3
  if own_val != (np.ndim(train[0]) == 3) or (own_val and (x_val.shape[0] != members or y_val.shape != x_val.shape[:2])):
    raise ValueError(f'val data {x_val.shape}, {y_val.shape} for {members} members: give all their own or none')
  run_epoch, states, x_train, y_train = epoch_runner(model, optimizer, states, train, options, frozen, mesh)
  own_data = x_train.ndim == 3  # after one member's own rows lost their member axis
  if own_val and not own_data:
    x_val, y_val = x_val[0], y_val[0]
  predict = make_predict(model, dropout_passes=options.eval_dropout_passes)

  progress = progress or Progress(best_val=[math.inf] * members, best_epoch=[0] * members)
  if best_params is None:
    best_params = jax.tree.map(jnp.copy, evaluation_params(states))
  if mesh is not None:
    best_params = jax.device_put(best_params, NamedSharding(mesh, P()))
  n_train = int(x_train.shape[-2])
  epoch_seconds: list[float] = []
  while not progress.stopped and progress.epoch < options.max_epochs:
    epoch = progress.epoch + 1
    start_step = int(np.asarray(states.step).reshape(-1)[0])
    tic = time.perf_counter()
    states, losses_KxS = run_epoch(states, x_train, y_train)
    losses_KxS = np.asarray(losses_KxS)
    _check_finite(losses_KxS, name, epoch, start_step)
    val_pred = predict_in_batches(predict, evaluation_params(states), x_val, options.eval_batch_size)
    val_mae = np.abs(val_pred - (y_val if own_data else y_val[None])).mean(axis=1)
    seconds = time.perf_counter() - tic
    epoch_seconds.append(seconds)
    # A member whose patience ran out keeps its best, as it would have had it trained alone.
    active = np.array([epoch - 1 - b < options.patience for b in progress.best_epoch])
    better = active & np.isfinite(val_mae) & (val_mae < np.asarray(progress.best_val))
    if better.any():
      best_params = _select_members(jnp.asarray(better), evaluation_params(states), best_params)
    progress.best_val = [float(v) if b else old for v, b, old in zip(val_mae, better, progress.best_val)]
    progress.best_epoch = [epoch if b else old for b, old in zip(better, progress.best_epoch)]
    progress.history.append(
      {
        'epoch': epoch,
        'train_loss': [float(v) for v in losses_KxS.mean(axis=1)],
        'val_mae': [float(v) for v in val_mae],
      }
    )
    progress.epoch = epoch
    waited = [epoch - b for b in progress.best_epoch]
    progress.stopped = min(waited) >= options.patience
    if epoch % options.log_every == 0 or progress.stopped or epoch == options.max_epochs:
      mean_seconds = float(np.mean(epoch_seconds[-5:]))
      eta = (options.max_epochs - epoch) * mean_seconds
      logging.info(
        '%s epoch %d/%d  train_loss %.4f  val_mae %.4f  best %.4f@%d  %.0f samples/s  %.1fs/epoch  ETA %s',
        name,
        epoch,
        options.max_epochs,
        _loss_in_target_units(losses_KxS, options),
        val_mae.mean() * options.log_scale,
        np.mean(progress.best_val) * options.log_scale,
        int(np.median(progress.best_epoch)),
        n_train * members / seconds,
        seconds,
        _duration(eta),
      )
    if save is not None:
      save(states, best_params, progress)
  return states, best_params, progress


def fit_epochs(
  model: ElemNet,
  optimizer,
  states: TrainState,
  train: tuple[np.ndarray, np.ndarray],
  epochs: list[int],
  options: FitOptions,
  *,
  frozen: frozenset = frozenset(),
  mesh: Mesh | None = None,
  name: str = 'retrain',
) -> Params:
  """Trains K members for a set number of epochs each, with no validation: member k for `epochs[k]`.

  Returns each member's evaluation parameters (its moving average, if kept) after its own epochs,
  as `fit` returns them at the best epoch: early stopping's choice of epochs, applied to a run on
  more rows (the training rows and the validation rows that chose it). `train` as for `fit`.
  """
  members = jax.tree.leaves(states.step)[0].shape[0]
  if len(epochs) != members or min(epochs) < 0:
    raise ValueError(f'epochs {epochs} for {members} members: give each a count >= 0')
  run_epoch, states, x_train, y_train = epoch_runner(model, optimizer, states, train, options, frozen, mesh)
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
      logging.info(
        '%s epoch %d/%d  train_loss %.4f',
        name,
        epoch,
        last,
        _loss_in_target_units(losses_KxS, options),
      )
  return params


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f'{minutes // 60}h{minutes % 60:02d}m' if minutes >= 60 else f'{minutes}m{seconds:02d}s'


def stack_members(states: list[TrainState]) -> TrainState:
  """Stacks single-model states into one state with a leading member axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
