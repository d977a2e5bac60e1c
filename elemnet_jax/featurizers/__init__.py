"""Featurizers turn input strings (formulas, SMILES) into fixed-width feature rows.

A featurizer is a class with
  ``name``        registry key, stored in checkpoints;
  ``input_kind``  'formula' or 'smiles': which datasets it can read;
  ``width``       number of raw feature columns;
  ``__init__(**options)``, ``description() -> dict`` (JSON; ``build(description)`` rebuilds it);
  ``featurize(inputs) -> (features [n, width] float32, grouping keys [n], [(index, reason)])``.
Invalid inputs are reported, never raised, so a whole file can be checked in one pass.
A fitted column selection and standardisation (see ``elemnet_jax.data.FeatureScaling``) is kept
apart from the featurizer and saved with the checkpoint.
"""

from __future__ import annotations

import numpy as np

from elemnet_jax.featurizers.composition import CompositionFeaturizer

FEATURIZERS: dict[str, type] = {CompositionFeaturizer.name: CompositionFeaturizer}


def register(featurizer_class: type) -> type:
  FEATURIZERS[featurizer_class.name] = featurizer_class
  return featurizer_class


def build(description: dict):
  """The featurizer a description (from `description()` or a config) names, with its options."""
  options = {k: v for k, v in dict(description).items() if k not in ('name', 'width', 'elements')}
  name = description.get('name')
  if name not in FEATURIZERS:
    raise ValueError(f'unknown featurizer {name!r}; known: {sorted(FEATURIZERS)}')
  return FEATURIZERS[name](**options)


def blank_rows(featurizer, x: np.ndarray) -> np.ndarray:
  """[n] bool: rows that carry no information about the input (all features zero, or the featurizer's `blank`)."""
  blank = getattr(featurizer, 'blank', None)
  return np.asarray(blank(x) if blank else ~np.asarray(x).any(axis=1), bool)


from elemnet_jax.featurizers.estate import EStateFeaturizer  # noqa: E402

register(EStateFeaturizer)
