"""Optimizers: Adam(W) with an optional warm-up + cosine schedule, L2-SP, and frozen parameter subtrees."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

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
  """The rate: `peak` throughout ('constant'), or cosine decay from `peak` after a linear warm-up."""
  if schedule == 'constant':
    return peak
  if schedule == 'cosine' and warmup_steps <= 0:  # no warm-up: the first step already at the peak
    return optax.cosine_decay_schedule(peak, max(total_steps, 1))
  if schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(total_steps, warmup_steps + 1))
  raise ValueError(f'unknown schedule {schedule!r}; use constant or cosine')


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
    return learning_rate_schedule(learning_rate * scale, schedule, warmup_steps, total_steps)

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
