"""Training ElemNet with the paper's hyperparameters: MAE loss, Adam 1e-4, batch 32, early stopping patience 200.

  elemnet-jax train --config=default --workdir=workdirs/oqmd_paper

Dropout is off (`model.use_dropout=False`): with dropout in training and deterministic evaluation,
the evaluated network is not the one trained (docs/results.md). The TF1 behaviour, dropout also at
evaluation: --config.model.use_dropout=True --config.train.eval_dropout_passes=8.

Another model family: `--config=default:transformer` (or `:residual`); `config.model` then holds
that family's fields at their defaults (`elemnet_jax.models`). Every field, its default and what it
does: `elemnet_jax.configs.schema`.
"""

import ml_collections

from elemnet_jax.configs import schema


def get_config(model: str = 'elemnet') -> ml_collections.ConfigDict:
  return as_config_dict(schema.RunConfig(model=schema.default_model(model)))


def model_section(family: str) -> ml_collections.ConfigDict:
  """The `model` section of family `family`: the paper's ElemNet without dropout, or the family's defaults."""
  return as_config_dict(schema.default_model(family))


def as_config_dict(typed) -> ml_collections.ConfigDict:
  """A typed config or section (`configs.schema`) as the ConfigDict a config file returns: the defaults written once."""
  return ml_collections.ConfigDict(schema.plain(typed))
