"""Functional training: a pytree train state, jitted steps, whole epochs under `lax.scan`.

Every function here trains ONE model; `elemnet_jax.training.fit` trains an ensemble of K members (K >= 1) held
on a leading member axis of the state, vmapped or one after another, so a single run is the case K = 1.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from elemnet_jax.configs.schema import LOSSES
from elemnet_jax.errors import UserError
from elemnet_jax.models import heads, with_tables

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
  if kind == 'bce':  # the prediction is a logit, the target a 0/1 label
    return optax.sigmoid_binary_cross_entropy(prediction, target)
  raise ValueError(f'unknown loss {kind!r}; use one of {", ".join(LOSSES)}')


def target_weights(mask_B: jax.Array, y_B: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
  """(weights like `y_B`, `y_B` with missing values set to 0): padded rows (`mask_B` false) and missing targets
  (NaN, of several targets [B, T]) weigh 0, so the loss and its gradient see only the values present."""
  present = jnp.isfinite(y_B)
  weight = mask_B.astype(bool).reshape(mask_B.shape + (1,) * (y_B.ndim - mask_B.ndim)) & present
  return weight.astype(dtype), jnp.where(present, y_B, 0)


@functools.lru_cache(maxsize=16)
def _compiled_init(model: nn.Module) -> Callable:
  return jax.jit(model.init)


def random_params(model: nn.Module, key: jax.Array, width: int) -> Params:
  """`model.init` for inputs `width` wide, compiled as one program per model (run eagerly it compiles each
  operation on its own: about 150 programs for the transformer, seconds before the first step). The
  same numbers as the eager call."""
  return _compiled_init(model)(key, jnp.zeros((1, width), jnp.float32))


def init_state(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  width: int,
  seed: int,
  params: Params | None = None,
  moving_average: bool = False,
  tables: dict | None = None,
) -> TrainState:
  """A fresh state; `params` (e.g. pretrained) replace the random initialisation.

  `tables` (path -> array, e.g. published element vectors) replace those leaves of a fresh initialisation.

  With `moving_average` the state also keeps an exponential moving average of the weights,
  starting from `params` (see `make_train_step`'s `ema_decay`).
  """
  key = jax.random.PRNGKey(seed)
  init_key, rng = jax.random.split(key)
  if params is None:
    params = with_tables(random_params(model, init_key, width), tables or {})
  average = jax.tree.map(jnp.array, params) if moving_average else None  # a copy: states are donated
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), rng, average)


def make_train_step(
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  loss: str = 'mae',
  frozen: frozenset[tuple[str, ...]] = frozenset(),
  ema_decay: float = 0.0,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, dict]]:
  """`train_step(state, x_BxF, y_B, mask_B) -> (state, {'loss'})`; masked rows do not count.

  A model whose head is not 'point' trains with its head's loss (`models.heads.loss`), `loss` then being
  its regressor's.

  With `frozen` paths, gradients are taken only with respect to the trainable leaves: frozen ones are
  closed over as constants, so XLA computes no backward pass into frozen layers; with none, the
  gradient of the whole tree is taken directly. A state that keeps a moving
  average (`init_state(..., moving_average=True)`) updates it after every step, frozen leaves excepted:
  average <- ema_decay * average + (1 - ema_decay) * params.
  """

  head = getattr(model.config, 'head', 'point')

  def per_example(prediction, y_B):
    if head == 'point':
      return loss_per_example(loss, prediction, y_B)
    return heads.loss(head, functools.partial(loss_per_example, loss), prediction, y_B)  # the head's own loss

  def objective(params, x_BxF, y_B, mask_B, dropout_key):
    prediction = model.apply(params, x_BxF, dropout=True, rngs={'dropout': dropout_key})
    weight, y_B = target_weights(mask_B, y_B, prediction.dtype)
    return jnp.sum(weight * per_example(prediction, y_B)) / jnp.maximum(weight.sum(), 1)

  def gradients(params, *batch):
    """(loss, gradient tree like `params`); frozen leaves get zeros and no backward pass."""
    if not frozen:
      return jax.value_and_grad(objective)(params, *batch)
    flat = traverse_util.flatten_dict(params)
    fixed = {path: leaf for path, leaf in flat.items() if path in frozen}
    trainable = {path: leaf for path, leaf in flat.items() if path not in frozen}
    value, grads = jax.value_and_grad(
      lambda trainable: objective(traverse_util.unflatten_dict({**fixed, **trainable}), *batch)
    )(trainable)
    return value, traverse_util.unflatten_dict(
      {**{path: jnp.zeros_like(leaf) for path, leaf in fixed.items()}, **grads}
    )

  def train_step(state, x_BxF, y_B, mask_B):
    dropout_key = jax.random.fold_in(state.rng, state.step)
    value, grads = gradients(state.params, x_BxF, y_B, mask_B, dropout_key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    average = state.average
    if average is not None and frozen:  # frozen leaves are left as they are: averaging them would round them away
      moved = traverse_util.flatten_dict(optax.incremental_update(params, average, step_size=1.0 - ema_decay))
      kept = traverse_util.flatten_dict(average)
      average = traverse_util.unflatten_dict({path: kept[path] if path in frozen else moved[path] for path in moved})
    elif average is not None:
      average = optax.incremental_update(params, average, step_size=1.0 - ema_decay)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, average=average), {'loss': value}

  return train_step


def compiler_options(platform: str | None = None) -> dict:
  """XLA options of the compiled training programs (`jax.jit(..., compiler_options=...)`).

  On CPU: copy insertion with region analysis, which finds that a step's weight update may overwrite
  the weights in place once the forward and backward passes have read them, so a scanned epoch no
  longer copies every weight each step (about a tenth of a step at batch 32). Other platforms: none.
  """
  return {'xla_cpu_copy_insertion_use_region_analysis': True} if (platform or jax.default_backend()) == 'cpu' else {}


def epoch_order(rng: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(next rng, indices [S, B], mask [S, B]): one reshuffle; the last partial batch is masked."""
  rng, shuffle_key = jax.random.split(rng)
  steps = -(-n // batch_size)
  order = jax.random.permutation(shuffle_key, n)
  padded = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])
  mask = jnp.arange(steps * batch_size) < n
  return rng, padded.reshape(steps, batch_size), mask.reshape(steps, batch_size)


def data_mesh(devices: int | None = None) -> Mesh:
  """A 1-D mesh over all devices (`jax.device_count()`, every host's) with one 'data' axis."""
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


@functools.lru_cache(maxsize=64)
def make_predict(model: nn.Module, hidden_layer: int | None = None, dropout_passes: int = 0):
  """Jitted `predict(params_K, x) -> [K, B]` over an ensemble axis of the parameters.

  `x` is one batch for every member, [B, F], or each member's own, [K, B, F]. The same model, layer and
  passes get the same compiled function back (one compilation per batch shape).
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


def device_chunks(x: np.ndarray, batch_size: int = 8192) -> list[tuple[jax.Array, int]]:
  """`x` ([N, F], or [K, N, F] each member's own) as zero-padded chunks of one size along the example
  axis (`batch_size`, or the power of two that holds N), placed on the device once: [(chunk, rows of it
  that are examples)]."""
  n = x.shape[-2]
  size = min(batch_size, 1 << max(n - 1, 0).bit_length())  # a power of two: few shapes, few compilations
  chunks = []
  for start in range(0, n, size):
    chunk = np.asarray(x[..., start : start + size, :])
    padded = np.zeros(x.shape[:-2] + (size, x.shape[-1]), x.dtype)
    padded[..., : chunk.shape[-2], :] = chunk
    chunks.append((jax.device_put(padded), chunk.shape[-2]))
  return chunks


def predict_chunks(predict, params, chunks: list[tuple[jax.Array, int]]) -> np.ndarray:
  """`predict` over `device_chunks` (one compilation for all of them); [K, N, ...]."""
  return np.concatenate([np.asarray(predict(params, chunk))[:, :rows] for chunk, rows in chunks], axis=1)


def predict_in_batches(predict, params, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
  """Runs `predict` over fixed-size padded chunks of the example axis; [K, N, ...].

  `x`: [N, F] for every member, or [K, N, F] with each member's own examples.
  """
  return predict_chunks(predict, params, device_chunks(x, batch_size))


@dataclasses.dataclass
class Members:
  """An ensemble ready to train: the network, its optimizer, states stacked on a member axis [K, ...], frozen paths."""

  model: nn.Module
  optimizer: optax.GradientTransformation
  states: TrainState
  frozen: frozenset[tuple[str, ...]] = frozenset()

  @property
  def count(self) -> int:
    return int(jax.tree.leaves(self.states.step)[0].shape[0])


def stack_members(states: list[TrainState]) -> TrainState:
  """Stacks single-model states into one state with a leading member axis."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
