"""Model families: networks from a composition's (or molecule's) features to one property.

Every family is a Flax module `Module(config, frozen_layers=())` whose call is
`module(x_BxF, *, dropout=False, hidden_layer=None, one_mask=False)`: predictions [B] (or [B, T] when
its config's `outputs` is T > 1, one per target; raw outputs [B, 2] for a head other than `point`), or
with `hidden_layer=j` hidden representation j, [B, hidden_sizes()[j - 1]]. Its config, a frozen
dataclass with a `name` field and the family's own hyperparameters, answers what the rest of the
library asks, and nothing else looks behind it:

- `input_kind`: 'features' (any flat feature vector) or 'composition' (the 86 raw element
  fractions of the composition featurizer, unscaled, e.g. for a model that makes element tokens);
- `groups()`: the freezable parameter groups in order (top-level names under ``params``), so
  `freeze_layers=k` freezes the first k; `output_group()`: the output layer's group, which always trains;
  `frozen_layers` are 1-based positions in `groups()` (their dropout is off);
- `hidden_sizes()`: the sizes of the representations `hidden_layer=1..R` returns (the
  fingerprint and the frozen featurizer read them);
- `data_tables()`: parameter paths whose starting values are published tables (element vectors),
  filled in at the edge when a model is first built;
- `train_flops_per_sample(features)`: matmul FLOPs of one training sample (the benchmark);
- `to_dict()`: the fields, as saved in a model's meta.json;
- `head`: the output layer (`elemnet_jax.models.heads`): the family's last layer is
  `heads.output_layer(config.head, x, name, config.outputs)`.

A family is added by one module and one line in `FAMILIES`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from elemnet_jax.models.elemnet import ElemNet, ElemNetConfig
from elemnet_jax.models.residual import ResidualElemNet
from elemnet_jax.models.transformer import CompositionTransformer, TransformerConfig

# name -> (config dataclass, Flax module).
FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
  'elemnet': (ElemNetConfig, ElemNet),
  'residual': (ElemNetConfig, ResidualElemNet),
  'transformer': (TransformerConfig, CompositionTransformer),
}

ModelConfig = Any  # one of the families' config dataclasses


def config_from_dict(values: dict) -> ModelConfig:
  """The config of the family `values['name']` names ('elemnet' when absent) from its fields.

  Raises ValueError naming an unknown family or fields the family does not have.
  """
  values = dict(values)
  name = values.setdefault('name', 'elemnet')
  if name not in FAMILIES:
    raise ValueError(f'model name {name!r} is not one of {sorted(FAMILIES)}')
  config_class = FAMILIES[name][0]
  known = {field for field in config_class.__dataclass_fields__}
  if 'head' not in known and values.get('head') in ('', 'point'):  # a family without heads has the point head
    values.pop('head')
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f'the {name} family has no field {", ".join(unknown)} (its fields: {", ".join(sorted(known))})')
  return config_class(**values)


def build_model(config: ModelConfig, frozen_layers: tuple[int, ...] = ()) -> nn.Module:
  """The network of `config`'s family."""
  return FAMILIES[config.name][1](config, frozen_layers=tuple(frozen_layers))


def count_params(params) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def with_tables(params: Any, tables: dict[tuple[str, ...], Any]) -> Any:
  """`params` with each table placed at its path under 'params', cast to the leaf's dtype; shapes must match."""
  if not tables:
    return params
  params = {**params, 'params': dict(params['params'])}
  for path, table in tables.items():
    node = params['params']
    for key in path[:-1]:
      node[key] = dict(node[key])
      node = node[key]
    leaf = node[path[-1]]
    if tuple(leaf.shape) != tuple(table.shape):
      raise ValueError(f'the {"/".join(path)} table is {tuple(table.shape)}, the model expects {tuple(leaf.shape)}')
    node[path[-1]] = jax.numpy.asarray(table, leaf.dtype)
  return params
