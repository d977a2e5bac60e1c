"""What a model family needs from the data: inputs of the kind it reads, and the published tables it starts from."""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from elemnet_jax.data import FeatureScaling, element_vectors
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, build_model


def check_inputs(model_config: ModelConfig, featurizer: dict, scaling: FeatureScaling, x_NxF: np.ndarray) -> None:
  """A family that reads raw element fractions ('composition') gets exactly those: one line otherwise."""
  if model_config.input_kind != 'composition':
    return
  if featurizer.get('name') != 'composition':
    raise UserError(
      f'--config.model.name={model_config.name!r} reads compositions; the featurizer is {featurizer.get("name")!r} '
      "(use --config.featurizer.name='composition')"
    )
  if scaling != FeatureScaling.identity(featurizer['width']):
    raise UserError(
      f'--config.model.name={model_config.name!r} reads the raw element fractions: set '
      '--config.features.drop_constant=False and --config.features.standardize=False'
    )
  counts = (x_NxF > 0).sum(axis=1)
  limit = getattr(model_config, 'max_elements', x_NxF.shape[1])
  if len(counts) and counts.max() > limit:
    row = int(np.argmax(counts))
    raise UserError(
      f'example {row} has {counts[row]} elements, more than --config.model.max_elements={limit}; raise it to '
      f'{counts.max()} (the most in this data)'
    )


def load_tables(model_config: ModelConfig, featurizer, data_dir: str | None) -> dict[tuple, np.ndarray]:
  """The published tables (element vectors) a fresh model of `model_config` starts from, rows in the order of
  `featurizer`'s columns.

  Empty cells of a table (NaN) start as 0.
  """
  tables, wanted = {}, model_config.data_tables()
  if not wanted:
    return tables
  column_names = featurizer.column_names()
  model = build_model(model_config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, len(column_names)), np.float32)))
  for path, name in wanted.items():
    _, table = element_vectors.load(name, data_dir=data_dir or None, elements=column_names)
    if np.isnan(table).any():
      logging.info('%s element vectors: %d empty cells start as 0', name, int(np.isnan(table).sum()))
    expected = shapes['params']
    for key in path:
      expected = expected[key]
    if tuple(expected.shape) != table.shape:
      raise UserError(
        f'{name} element vectors are {table.shape[1]} wide, the model expects {expected.shape[1]}: set '
        f'--config.model.vector_width={table.shape[1]}'
      )
    tables[path] = np.nan_to_num(table).astype(np.float32)
  return tables
