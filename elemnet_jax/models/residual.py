"""A residual ElemNet (IRNet-style): ElemNet's widths with shortcuts and layer normalisation in every hidden layer."""

from __future__ import annotations

import flax.linen as nn

from elemnet_jax.models import heads
from elemnet_jax.models.elemnet import ElemNetConfig
from elemnet_jax.models.layers import ACTIVATIONS, check_hidden_layer, dropout_layer


class _ResidualBlock(nn.Module):
  """activation(LayerNorm(Dense(x))) + x, the shortcut projected where the width changes."""

  width: int
  activation: str

  @nn.compact
  def __call__(self, x):
    h = ACTIVATIONS[self.activation](nn.LayerNorm(name='norm')(nn.Dense(self.width, name='linear')(x)))
    shortcut = x if x.shape[-1] == self.width else nn.Dense(self.width, use_bias=False, name='shortcut')(x)
    return h + shortcut


class ResidualElemNet(nn.Module):
  """Hidden layer i is the block `dense_{i-1}` (its dense kernel, norm and shortcut): the groups of `ElemNetConfig`."""

  config: ElemNetConfig
  frozen_layers: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x_BxF, *, dropout: bool = False, hidden_layer: int | None = None, one_mask: bool = False):
    """As `ElemNet.__call__`."""
    config = self.config
    check_hidden_layer(hidden_layer, config.widths)
    rates = dict(zip(config.dropout_after, config.dropout_rates))
    x = x_BxF
    for i, width in enumerate(config.widths):
      x = _ResidualBlock(width, config.activation, name=f'dense_{i}')(x)
      if hidden_layer == i + 1:
        return x
      if config.use_dropout and i + 1 in rates and i + 1 not in self.frozen_layers:
        x = dropout_layer(rates[i + 1], active=dropout, one_mask=one_mask)(x)
    return heads.output_layer(config.head, x, f'dense_{len(config.widths)}', config.outputs)
