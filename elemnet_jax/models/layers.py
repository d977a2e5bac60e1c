"""Pieces the model families share: activations by name and dropout that a frozen group turns off."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {'relu': nn.relu, 'gelu': nn.gelu, 'silu': nn.silu, 'elu': nn.elu, 'tanh': jnp.tanh}


def check_activation(activation: str) -> None:
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation {activation!r} is not one of {sorted(ACTIVATIONS)}')


def check_hidden_layer(hidden_layer: int | None, sizes: tuple[int, ...]) -> None:
  """`hidden_layer` must name one of the representations 1..len(sizes) (or be None: the prediction)."""
  if hidden_layer is not None and not 1 <= hidden_layer <= len(sizes):
    raise ValueError(f'hidden_layer={hidden_layer}: the hidden layers are 1..{len(sizes)}')


def dropout_layer(rate: float, *, active: bool, one_mask: bool) -> nn.Dropout:
  """Dropout of `rate`, applied only when `active`; with `one_mask` every row of a batch shares the mask."""
  return nn.Dropout(rate, broadcast_dims=(0,) if one_mask else (), deterministic=not active)


def check_outputs(outputs: int) -> None:
  if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
    raise ValueError(f'outputs={outputs!r} must be a positive integer (one output per target)')


def output_layer(x: jax.Array, outputs: int, name: str) -> jax.Array:
  """The linear output layer (called inside a module's compact method): predictions [B] for one target,
  [B, outputs] for several."""
  prediction = nn.Dense(outputs, name=name)(x)
  return prediction[..., 0] if outputs == 1 else prediction
