"""A composition transformer (CrabNet-like): attention over the elements of a composition.

Each element present is a token: its element vector (published vectors such as mat2vec, held fixed, or
learned) projected to `d_model`, plus an encoding of its fraction (sines and cosines of the fraction
and of its logarithm). Post-norm self-attention layers mix the tokens; the tokens are pooled
(weighted by fraction, or a plain mean) and a small MLP head gives the property.

The network reads the same input as ElemNet, the 86 raw element fractions, and picks its tokens
itself (`jax.lax.top_k`): at most `max_elements` elements per composition (checked at the edge).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from elemnet_jax.models import heads
from elemnet_jax.models.layers import ACTIVATIONS, check_activation, check_hidden_layer, check_outputs, dropout_layer

POOLINGS = ('fraction', 'mean')
_SMALLEST_FRACTION = 1e-6  # the log encoding's floor; padding tokens (fraction 0) are masked anyway


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Hyperparameters of the composition transformer."""

  d_model: int = 128
  heads: int = 4
  layers: int = 3
  ffn_width: int = 256
  head_widths: tuple[int, ...] = (256, 128)
  max_elements: int = 8  # tokens per composition
  element_vectors: str = 'mat2vec'  # a registered set of element vectors (held fixed), or 'learned'
  vector_width: int = 200  # width of the element vectors (mat2vec: 200)
  fraction_frequencies: int = 16  # sine/cosine pairs for the fraction and for its logarithm
  dropout: float = 0.0
  activation: str = 'gelu'
  pooling: str = 'fraction'  # fraction-weighted mean of the tokens, or their plain mean
  name: str = 'transformer'
  outputs: int = 1  # one per target (set from dataset.target, not a setting of its own)
  head: str = 'point'  # the output layer: point | mean_variance | hurdle (`elemnet_jax.models.heads`)

  def __post_init__(self):
    object.__setattr__(self, 'head_widths', tuple(int(w) for w in self.head_widths))
    positive = ('d_model', 'heads', 'layers', 'ffn_width', 'max_elements', 'vector_width', 'fraction_frequencies')
    for field in positive:
      if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
        raise ValueError(f'{field}={getattr(self, field)!r} must be a positive integer')
    if self.d_model % self.heads:
      raise ValueError(f'd_model={self.d_model} must be a multiple of heads={self.heads}')
    if any(w < 1 for w in self.head_widths):
      raise ValueError(f'head_widths {self.head_widths} must be positive layer widths')
    if not 0 <= self.dropout < 1:
      raise ValueError(f'dropout {self.dropout} must lie in [0, 1)')
    if self.pooling not in POOLINGS:
      raise ValueError(f'pooling {self.pooling!r} is not one of {POOLINGS}')
    check_activation(self.activation)
    check_outputs(self.outputs)
    heads.check(self.head)
    heads.check_width(self.head, self.outputs)

  # The model interface (see `elemnet_jax.models`).
  input_kind = 'composition'

  def groups(self) -> tuple[str, ...]:
    return ('embed',) + tuple(f'layer_{i}' for i in range(self.layers)) + self._head_names()

  def _head_names(self) -> tuple[str, ...]:
    return tuple(f'head_{i}' for i in range(len(self.head_widths)))

  def output_group(self) -> str:
    return 'output'

  def hidden_sizes(self) -> tuple[int, ...]:
    """1: the pooled tokens; 2..: the head's hidden layers."""
    return (self.d_model,) + self.head_widths

  def data_tables(self) -> dict[tuple[str, ...], str]:
    return {} if self.element_vectors == 'learned' else {('embed', 'element_vectors'): self.element_vectors}

  def train_flops_per_sample(self, features: int) -> int:
    """2 x multiply-adds, forward, for the weights' and for the activations' gradients (none for the
    embedding's inputs: element vectors and fraction encodings need none); the tokens set the cost."""
    del features
    t, d = self.max_elements, self.d_model
    embed = t * (self.vector_width + 4 * self.fraction_frequencies) * d
    macs = embed + self.layers * (4 * t * d * d + 2 * t * t * d + 2 * t * d * self.ffn_width)
    dims = (d,) + self.head_widths + (self.outputs,)
    macs += sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return 2 * (3 * macs - embed)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def fraction_encoding(fraction_BxT: jax.Array, frequencies: int) -> jax.Array:
  """Sines and cosines of the fraction and of its logarithm (scaled to [0, 1]) at octave frequencies, [B, T, 4K]."""
  log_fraction = 1.0 - jnp.log(jnp.maximum(fraction_BxT, _SMALLEST_FRACTION)) / jnp.log(_SMALLEST_FRACTION)
  angles = jnp.stack([fraction_BxT, log_fraction], axis=-1)[..., None] * (jnp.pi * 2.0 ** jnp.arange(frequencies))
  angles = angles.reshape(fraction_BxT.shape + (2 * frequencies,))
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class _Embed(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, element_BxT, fraction_BxT, elements: int):
    config = self.config
    table = self.param('element_vectors', nn.initializers.normal(1.0), (elements, config.vector_width))
    if config.element_vectors != 'learned':  # published vectors are features, not weights
      table = jax.lax.stop_gradient(table)
    vectors = nn.Dense(config.d_model, name='project')(table[element_BxT])
    encoded = nn.Dense(config.d_model, name='fraction')(fraction_encoding(fraction_BxT, config.fraction_frequencies))
    return vectors + encoded


class _EncoderLayer(nn.Module):
  """Post-norm: x = LN(x + attention(x)); x = LN(x + FFN(x)); padding tokens are never attended to."""

  config: TransformerConfig
  dropout_rate: float

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxT, *, dropout: bool, one_mask: bool):
    config = self.config
    attention = nn.MultiHeadDotProductAttention(
      config.heads,
      dropout_rate=self.dropout_rate,
      deterministic=not dropout,
      broadcast_dropout=one_mask,  # one mask for every row only when asked, as the other dropouts
      name='attention',
    )
    attended = attention(x_BxTxD, x_BxTxD, mask=nn.make_attention_mask(mask_BxT, mask_BxT))
    x = nn.LayerNorm(name='norm_attention')(x_BxTxD + self._drop(attended, dropout, one_mask))
    h = ACTIVATIONS[config.activation](nn.Dense(config.ffn_width, name='ffn_in')(x))
    h = nn.Dense(config.d_model, name='ffn_out')(h)
    return nn.LayerNorm(name='norm_ffn')(x + self._drop(h, dropout, one_mask))

  def _drop(self, x, active: bool, one_mask: bool):
    return dropout_layer(self.dropout_rate, active=active, one_mask=one_mask)(x) if self.dropout_rate else x


class CompositionTransformer(nn.Module):
  """The composition transformer; dropout in a frozen group (1-based positions in `frozen_layers`) is off."""

  config: TransformerConfig
  frozen_layers: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x_BxF, *, dropout: bool = False, hidden_layer: int | None = None, one_mask: bool = False):
    """Predictions [B]; or, with `hidden_layer=j`, representation j of `TransformerConfig.hidden_sizes`."""
    config = self.config
    check_hidden_layer(hidden_layer, config.hidden_sizes())
    fraction_BxT, element_BxT = jax.lax.top_k(x_BxF, config.max_elements)
    mask_BxT = fraction_BxT > 0
    x = _Embed(config, name='embed')(element_BxT, fraction_BxT, x_BxF.shape[-1])
    for i in range(config.layers):
      rate = 0.0 if i + 2 in self.frozen_layers else config.dropout
      x = _EncoderLayer(config, rate, name=f'layer_{i}')(x, mask_BxT, dropout=dropout, one_mask=one_mask)
    weight_BxT = jnp.where(mask_BxT, fraction_BxT if config.pooling == 'fraction' else 1.0, 0.0)
    weight_BxT = weight_BxT / jnp.maximum(weight_BxT.sum(axis=-1, keepdims=True), _SMALLEST_FRACTION)
    x = jnp.einsum('bt,btd->bd', weight_BxT, x)
    if hidden_layer == 1:
      return x
    activation = ACTIVATIONS[config.activation]
    for i, width in enumerate(config.head_widths):
      x = activation(nn.Dense(width, name=f'head_{i}')(x))
      if hidden_layer == i + 2:
        return x
      position = config.layers + 2 + i
      if config.dropout and position not in self.frozen_layers:
        x = dropout_layer(config.dropout, active=dropout, one_mask=one_mask)(x)
    return heads.output_layer(config.head, x, 'output', config.outputs)
