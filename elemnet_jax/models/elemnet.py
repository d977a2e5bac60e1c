"""ElemNet: a deep fully connected network from input features to one property, and a residual variant."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

# Jha et al. 2018: 1024x4D-512x3D-256x3D-128x3D-64x2-32x1-1.
PAPER_WIDTHS = (1024,) * 4 + (512,) * 3 + (256,) * 3 + (128,) * 3 + (64,) * 2 + (32,)
PAPER_DROPOUT_AFTER = (4, 7, 10, 13)  # 1-based positions of the dense layers followed by dropout
PAPER_DROPOUT_RATES = (0.2, 0.1, 0.3, 0.2)  # TF1 keep-probabilities 0.8, 0.9, 0.7, 0.8

ACTIVATIONS = {'relu': nn.relu, 'gelu': nn.gelu, 'silu': nn.silu, 'elu': nn.elu, 'tanh': jnp.tanh}


@dataclasses.dataclass(frozen=True)
class ElemNetConfig:
  """Architecture of ElemNet; the default is the published network.

  Dense layers are named ``dense_0`` .. ``dense_{n}`` in order, the last one being the linear
  output, so a freeze specification can address them by index.
  """

  widths: tuple[int, ...] = PAPER_WIDTHS
  dropout_after: tuple[int, ...] = PAPER_DROPOUT_AFTER
  dropout_rates: tuple[float, ...] = PAPER_DROPOUT_RATES
  use_dropout: bool = True
  activation: str = 'relu'
  name: str = 'elemnet'  # the architecture: a key of ARCHITECTURES

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
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} is not one of {sorted(ACTIVATIONS)}')
    if self.name not in ARCHITECTURES:
      raise ValueError(f'model name {self.name!r} is not one of {sorted(ARCHITECTURES)}')

  @property
  def num_dense(self) -> int:
    """Dense layers including the linear output layer (17 for the paper's network)."""
    return len(self.widths) + 1

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> ElemNetConfig:
    return cls(**values)


class ElemNet(nn.Module):
  """ElemNet; dropout after a frozen dense layer (1-based positions in `frozen_layers`) is off."""

  config: ElemNetConfig
  frozen_layers: tuple[int, ...] = ()

  @nn.compact
  def __call__(
    self, x_BxF: jax.Array, *, dropout: bool = False, hidden_layer: int | None = None, one_mask: bool = False
  ) -> jax.Array:
    """Predictions [B]; or, with `hidden_layer=j`, the activations after dense layer j (1-based).

    Dropout is applied only when `dropout` is true and the config uses it; with `one_mask`, every row
    gets the same masks (one thinned network), so a row's output does not depend on its position.
    """
    config = self.config
    if hidden_layer is not None and not 1 <= hidden_layer <= len(config.widths):
      raise ValueError(f'hidden_layer={hidden_layer}: the hidden layers are 1..{len(config.widths)}')
    activation = ACTIVATIONS[config.activation]
    rates = dict(zip(config.dropout_after, config.dropout_rates))
    x = x_BxF
    for i, width in enumerate(config.widths):
      position = i + 1
      x = activation(nn.Dense(width, name=f'dense_{i}')(x))
      if hidden_layer == position:
        return x
      if config.use_dropout and position in rates and position not in self.frozen_layers:
        x = nn.Dropout(rates[position], broadcast_dims=(0,) if one_mask else (), deterministic=not dropout)(x)
    return nn.Dense(1, name=f'dense_{len(config.widths)}')(x)[..., 0]


class _ResidualBlock(nn.Module):
  """activation(LayerNorm(Dense(x))) + x, the shortcut projected where the width changes (IRNet)."""

  width: int
  activation: str

  @nn.compact
  def __call__(self, x):
    h = ACTIVATIONS[self.activation](nn.LayerNorm(name='norm')(nn.Dense(self.width, name='linear')(x)))
    shortcut = x if x.shape[-1] == self.width else nn.Dense(self.width, use_bias=False, name='shortcut')(x)
    return h + shortcut


class ResidualElemNet(nn.Module):
  """ElemNet's widths with residual connections and layer normalisation in every hidden layer.

  Hidden layer i is the block `dense_{i-1}` (its dense kernel, norm and shortcut), so freezing the
  first k layers, the frozen featurizer and a fresh output layer address it as they do ElemNet.
  """

  config: ElemNetConfig
  frozen_layers: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x_BxF, *, dropout: bool = False, hidden_layer: int | None = None, one_mask: bool = False):
    """As `ElemNet.__call__`."""
    config = self.config
    if hidden_layer is not None and not 1 <= hidden_layer <= len(config.widths):
      raise ValueError(f'hidden_layer={hidden_layer}: the hidden layers are 1..{len(config.widths)}')
    rates = dict(zip(config.dropout_after, config.dropout_rates))
    x = x_BxF
    for i, width in enumerate(config.widths):
      x = _ResidualBlock(width, config.activation, name=f'dense_{i}')(x)
      if hidden_layer == i + 1:
        return x
      if config.use_dropout and i + 1 in rates and i + 1 not in self.frozen_layers:
        x = nn.Dropout(rates[i + 1], broadcast_dims=(0,) if one_mask else (), deterministic=not dropout)(x)
    return nn.Dense(1, name=f'dense_{len(config.widths)}')(x)[..., 0]


# Architectures by `ElemNetConfig.name`: modules built as `Module(config, frozen_layers)`.
ARCHITECTURES: dict[str, type[nn.Module]] = {'elemnet': ElemNet, 'residual': ResidualElemNet}


def build_model(config: ElemNetConfig, frozen_layers: tuple[int, ...] = ()) -> nn.Module:
  """The network `config.name` names."""
  return ARCHITECTURES[config.name](config, frozen_layers=frozen_layers)


def count_params(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))
