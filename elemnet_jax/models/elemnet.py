"""ElemNet (Jha et al. 2018): a deep fully connected network from input features to one property."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from elemnet_jax.errors import UserError
from elemnet_jax.models import heads
from elemnet_jax.models.layers import ACTIVATIONS, check_activation, check_hidden_layer, check_outputs, dropout_layer

# Jha et al. 2018: 1024x4D-512x3D-256x3D-128x3D-64x2-32x1-1.
PAPER_WIDTHS = (1024,) * 4 + (512,) * 3 + (256,) * 3 + (128,) * 3 + (64,) * 2 + (32,)
PAPER_DROPOUT_AFTER = (4, 7, 10, 13)  # 1-based positions of the dense layers followed by dropout
PAPER_DROPOUT_RATES = (0.2, 0.1, 0.3, 0.2)  # TF1 keep-probabilities 0.8, 0.9, 0.7, 0.8


@dataclasses.dataclass(frozen=True)
class ElemNetConfig:
  """Architecture of ElemNet and of its residual variant; the default is the published network.

  Dense layers are named ``dense_0`` .. ``dense_{n}`` in order, the last one being the linear
  output: hidden layer i is the freezable group ``dense_{i-1}``.
  """

  widths: tuple[int, ...] = PAPER_WIDTHS
  dropout_after: tuple[int, ...] = PAPER_DROPOUT_AFTER
  dropout_rates: tuple[float, ...] = PAPER_DROPOUT_RATES
  use_dropout: bool = True
  activation: str = 'relu'
  name: str = 'elemnet'  # the family: elemnet or residual (they share these fields)
  outputs: int = 1  # one per target (set from dataset.target, not a setting of its own)
  head: str = 'point'  # the output layer: point | mean_variance | hurdle (`elemnet_jax.models.heads`)

  def __post_init__(self):
    object.__setattr__(self, 'widths', tuple(int(w) for w in self.widths))
    object.__setattr__(self, 'dropout_after', tuple(int(p) for p in self.dropout_after))
    object.__setattr__(self, 'dropout_rates', tuple(float(r) for r in self.dropout_rates))
    if not self.widths or min(self.widths) < 1:
      raise ValueError(f'widths {self.widths} must be one or more positive layer widths')
    if len(self.dropout_after) != len(self.dropout_rates):
      raise ValueError('dropout_after and dropout_rates must have the same length')
    if any(not 0 <= r < 1 for r in self.dropout_rates):
      raise ValueError(f'dropout rates {self.dropout_rates} must lie in [0, 1)')
    if any(not 1 <= p <= len(self.widths) for p in self.dropout_after):
      raise ValueError(f'dropout positions {self.dropout_after} must lie in 1..{len(self.widths)}')
    check_activation(self.activation)
    check_outputs(self.outputs)
    heads.check(self.head)
    heads.check_width(self.head, self.outputs)
    if self.name not in ('elemnet', 'residual'):
      raise ValueError(f"model name {self.name!r} is not one of ['elemnet', 'residual'] (the families of these fields)")

  # The model interface (see `elemnet_jax.models`).
  input_kind = 'features'

  def groups(self) -> tuple[str, ...]:
    return tuple(f'dense_{i}' for i in range(len(self.widths)))

  def output_group(self) -> str:
    return f'dense_{len(self.widths)}'

  def hidden_sizes(self) -> tuple[int, ...]:
    return self.widths

  def data_tables(self) -> dict[tuple[str, ...], str]:
    return {}

  def train_flops_per_sample(self, features: int) -> int:
    """2 x multiply-adds of the dense layers, forward, for the weights' gradients and for the activations'
    gradients (none for the input layer's: the features need none)."""
    dims = (features,) + self.widths + (self.outputs,)
    macs = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    if self.name == 'residual':  # the shortcuts projected where the width changes
      macs += sum(a * b for a, b in zip(dims[:-2], dims[1:-1]) if a != b)
    first = features * self.widths[0] * (2 if self.name == 'residual' and features != self.widths[0] else 1)
    return 2 * (3 * macs - first)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def mlp_config(widths: tuple[int, ...], activation: str = 'relu') -> ElemNetConfig:
  """A plain MLP of `widths` without dropout (e.g. a small network on frozen activations)."""
  return ElemNetConfig(
    widths=tuple(widths), dropout_after=(), dropout_rates=(), use_dropout=False, activation=activation
  )


def head_network(widths, activation: str = 'relu') -> ElemNetConfig:
  """The MLP of a study's `head_widths` (the 'head' method's network on frozen activations); one-line UserError
  unless they are positive integers."""
  if not (widths and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
    raise UserError(f'--config.study.head_widths={tuple(widths)}: give positive integer layer widths')
  return mlp_config(tuple(widths), activation)


class ElemNet(nn.Module):
  """ElemNet; dropout after a frozen dense layer (1-based positions in `frozen_layers`) is off."""

  config: ElemNetConfig
  frozen_layers: tuple[int, ...] = ()

  @nn.compact
  def __call__(
    self, x_BxF: jax.Array, *, dropout: bool = False, hidden_layer: int | None = None, one_mask: bool = False
  ) -> jax.Array:
    """Predictions [B] ([B, outputs] for several targets); or, with `hidden_layer=j`, the activations after
    dense layer j (1-based).

    Dropout is applied only when `dropout` is true and the config uses it; with `one_mask`, every row
    gets the same masks (one thinned network), so a row's output does not depend on its position.
    """
    config = self.config
    check_hidden_layer(hidden_layer, config.widths)
    activation = ACTIVATIONS[config.activation]
    rates = dict(zip(config.dropout_after, config.dropout_rates))
    x = x_BxF
    for i, width in enumerate(config.widths):
      position = i + 1
      x = activation(nn.Dense(width, name=f'dense_{i}')(x))
      if hidden_layer == position:
        return x
      if config.use_dropout and position in rates and position not in self.frozen_layers:
        x = dropout_layer(rates[position], active=dropout, one_mask=one_mask)(x)
    return heads.output_layer(config.head, x, f'dense_{len(config.widths)}', config.outputs)
