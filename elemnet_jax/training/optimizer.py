"""Optimizers: Adam(W) with an optional warm-up + cosine schedule, L2-SP, and frozen parameter subtrees.

The schedule's numbers live in the optimizer state, so a change of rate is data and not a new program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from elemnet_jax.configs.schema import DECAY_TOWARD, OPTIMIZERS, SCHEDULES

Params = Any


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


def learning_rate_schedule(peak: float, schedule: str, warmup_steps: int = 0, total_steps: int = 0):
  """The rate on the host (the history's column): `peak` throughout ('constant'), or cosine decay from `peak`
  after a linear warm-up; `ScheduledRate` computes the same on the device."""
  if schedule == 'constant':
    return peak
  if schedule == 'cosine' and warmup_steps <= 0:  # no warm-up: the first step already at the peak
    return optax.cosine_decay_schedule(peak, max(total_steps, 1))
  if schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1))
  raise ValueError(f'unknown schedule {schedule!r}; use one of {", ".join(SCHEDULES)}')


class RateState(NamedTuple):
  """The schedule's numbers, as data: optimizers that differ only in them share one compiled step."""

  count: jax.Array  # int32 [], steps taken
  peak: jax.Array  # float32 []
  warmup_steps: jax.Array  # float32 []
  total_steps: jax.Array  # float32 []


def rate_at(schedule: str, state: RateState) -> jax.Array:
  """The rate of step `state.count`: constant, or linear warm-up then cosine decay to 0 at `total_steps`."""
  if schedule == 'constant':
    return state.peak
  count = state.count.astype(jnp.float32)
  warmup = state.warmup_steps
  total = jnp.maximum(state.total_steps, warmup + jnp.where(warmup > 0, 1.0, 0.0))
  total = jnp.maximum(total, 1.0)
  warming = state.peak * count / jnp.maximum(warmup, 1.0)
  progress = jnp.clip((count - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
  return jnp.where(count < warmup, warming, state.peak * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))


def scheduled_rate(schedule: str, peak: float = 0.0, warmup_steps: int = 0, total_steps: int = 0):
  """Scales updates by minus the scheduled rate; the numbers enter the state at `init`, the code knows only
  the schedule's kind."""
  if schedule not in SCHEDULES:
    raise ValueError(f'unknown schedule {schedule!r}; use one of {", ".join(SCHEDULES)}')

  def init(params):
    del params
    numbers = (peak, warmup_steps, total_steps)
    return RateState(jnp.zeros((), jnp.int32), *(jnp.asarray(n, jnp.float32) for n in numbers))

  def update(updates, state, params=None):
    del params
    rate = rate_at(schedule, state)
    return jax.tree.map(lambda u: -rate * u, updates), state._replace(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax transformation and the key of its structure.

  Optimizers with one `key` (the same kind, schedule kind, weight decay and frozen/body/head labels)
  update alike and differ only in the numbers their `init` puts in the state (rates, schedule
  lengths, the body's rate factor): they share one compiled train step.
  """

  key: tuple
  transformation: optax.GradientTransformation = dataclasses.field(compare=False, hash=False)

  def init(self, params):
    return self.transformation.init(params)

  def update(self, updates, state, params=None):
    return self.transformation.update(updates, state, params)


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
) -> Optimizer:
  """Adam(W) with an optional warm-up + cosine schedule.

  AdamW's decoupled weight decay pulls the weights toward zero (`decay_toward='zero'`) or toward
  the weights training started from (`'start'`: L2-SP, for fine-tuning).
  With `labels` (a pytree of 'frozen' | 'body' | 'head', see `elemnet_jax.transfer`), the
  optimizer is `optax.multi_transform`: frozen leaves get `set_to_zero()` and keep no moments,
  'body' leaves learn at `body_lr_scale` times the head's rate.
  """

  def base(scale: float) -> optax.GradientTransformation:
    rate = scheduled_rate(schedule, learning_rate * scale, warmup_steps, total_steps)
    if name == 'adam':
      return optax.chain(optax.scale_by_adam(), rate)
    if name == 'adamw' and decay_toward == 'zero':
      return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay), rate)
    if name == 'adamw' and decay_toward == 'start':
      return optax.chain(optax.scale_by_adam(), decay_toward_start(weight_decay), rate)
    if name == 'adamw':
      raise ValueError(f'unknown decay_toward {decay_toward!r}; use one of {", ".join(DECAY_TOWARD)}')
    raise ValueError(f'unknown optimizer {name!r}; use one of {", ".join(OPTIMIZERS)}')

  structure = (name, schedule, float(weight_decay) if name == 'adamw' else 0.0, decay_toward)
  if labels is None:
    return Optimizer(structure, base(1.0))
  partition = {'head': base(1.0), 'body': base(body_lr_scale), 'frozen': optax.set_to_zero()}
  key = structure + (tuple(sorted(traverse_util.flatten_dict(labels).items())),)
  return Optimizer(key, optax.multi_transform(partition, labels))
