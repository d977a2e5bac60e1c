"""Pieces the model families share: activations by name and dropout that a frozen group turns off."""

from __future__ import annotations

import flax.linen as nn
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
