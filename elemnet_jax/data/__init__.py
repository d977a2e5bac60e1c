"""From a raw table to checked, grouped, split arrays ready for training."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
import re

import numpy as np
from absl import logging

from elemnet_jax import featurizers, workdir
from elemnet_jax.configs.schema import TARGET_SCALINGS
from elemnet_jax.data.datasets import DatasetSpec
from elemnet_jax.data.readers import RawTable
from elemnet_jax.errors import UserError, format_rows, listing

SPLITS = ('train', 'val', 'test')
_SINGLE_ELEMENT = re.compile(r'\s*[A-Z][a-z]?\s*[\d.]*\s*')


@dataclasses.dataclass
class Examples:
  """Unique inputs with their features and (mean) targets; `split` is set when known."""

  inputs: list[str]
  keys: list[str]
  x: np.ndarray  # [n, width] float32
  y: np.ndarray  # [n] float32; [n, T] with several targets (NaN where a target is missing)
  split: np.ndarray | None = None  # [n] of 'train' | 'val' | 'test'

  def __len__(self) -> int:
    return len(self.inputs)

  def take(self, index: np.ndarray) -> Examples:
    index = np.asarray(index)
    return Examples(
      [self.inputs[i] for i in index],
      [self.keys[i] for i in index],
      self.x[index],
      self.y[index],
      None if self.split is None else self.split[index],
    )


# A decimal number as data files write it: ASCII digits, an optional sign, point and exponent; no '_' or spaces.
_NUMBER = re.compile(r'[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?', re.ASCII)
_NOT_FINITE = re.compile(r'[+-]?(?:nan|inf|infinity)', re.IGNORECASE)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_target(text: str) -> tuple[float, str]:
  """(value, '') for a decimal number finite in float32; (nan, why not) otherwise."""
  if not text:
    return math.nan, 'target is missing'
  if _NOT_FINITE.fullmatch(text):
    return math.nan, f'target is {text}'
  if not _NUMBER.fullmatch(text):
    return math.nan, 'target is not a number'
  value = float(text)
  if abs(value) > FLOAT32_MAX:  # finite in float64, inf in the float32 the model trains in
    return math.nan, f'target is outside the float32 range (|y| <= {FLOAT32_MAX:.4g})'
  return value, ''


def _parse_targets(table: RawTable) -> tuple[np.ndarray, list[tuple[int, str]]]:
  """Values [N] (several targets: [N, T], NaN where a cell is empty) and the invalid rows with why."""
  if table.targets and isinstance(table.targets[0], tuple):
    return _parse_several(table.targets)
  values = np.full(len(table.targets), np.nan, np.float64)
  invalid = []
  for i, text in enumerate(table.targets):
    values[i], reason = parse_target(text)
    if reason:
      invalid.append((i, reason))
  return values, invalid


def _parse_several(targets: list[tuple[str, ...]]) -> tuple[np.ndarray, list[tuple[int, str]]]:
  """Several targets per row: an empty cell is a missing value (masked); a row with none, or a bad cell, is invalid."""
  values = np.full((len(targets), len(targets[0])), np.nan, np.float64)
  invalid = []
  for i, cells in enumerate(targets):
    reasons = []
    for j, text in enumerate(cells):
      if text:
        values[i, j], reason = parse_target(text)
        reasons += [f'target {j + 1} {reason.removeprefix("target ")}'] if reason else []
    if not any(cells):
      reasons.append('every target is missing')
    if reasons:
      invalid.append((i, '; '.join(reasons)))
  return values, invalid


def _cells(target: str | tuple[str, ...]) -> str:
  """A row's target as its file shows it (several: the cells joined by commas)."""
  return ','.join(target) if isinstance(target, tuple) else target


def _group_mean(values: np.ndarray) -> float | np.ndarray:
  """The mean target of a group's rows; per column, of the values present, with several targets."""
  if values.ndim == 1:
    return values.mean()
  present = np.isfinite(values)
  sums = np.where(present, values, 0.0).sum(axis=0)
  return np.where(present.any(axis=0), sums / np.maximum(present.sum(axis=0), 1), np.nan)


def prepare(
  table: RawTable, spec: DatasetSpec, featurizer, skip_invalid: bool = False, notes: dict | None = None
) -> Examples:
  """Validates, featurizes, filters and groups a table; counts of every drop go into `notes`.

  Bad inputs or targets stop with one message listing up to ten rows, unless `skip_invalid`.
  Repeated inputs (same grouping key, e.g. the same normalised composition) become one example
  with the mean target; with a predefined split they are grouped within each split.
  """
  notes = {} if notes is None else notes
  if featurizer.input_kind != spec.input_kind:
    raise UserError(
      f'dataset {spec.name} holds {spec.input_kind} inputs but featurizer '
      f'{featurizer.name!r} reads {featurizer.input_kind} inputs'
    )
  if spec.drop_single_elements:  # e.g. 'Fe', 'O2': elements in their standard state
    single = {i for i, text in enumerate(table.inputs) if _SINGLE_ELEMENT.fullmatch(text)}
    notes['dropped_single_elements'] = len(single)
    logging.info('%s: dropped %d single-element rows', spec.name, len(single))
    kept = [i for i in range(len(table.inputs)) if i not in single]
    table = RawTable(
      table.path,
      *[[column[i] for i in kept] for column in (table.inputs, table.targets, table.rows)],
      None if table.split is None else [table.split[i] for i in kept],
    )
  targets, bad_targets = _parse_targets(table)
  x, keys, bad_inputs = featurizer.featurize(table.inputs)
  problems = sorted({i: reason for i, reason in bad_targets + bad_inputs}.items())
  if problems:
    bad_input_rows = {i for i, _ in bad_inputs}
    listed = [
      (table.rows[i], table.inputs[i] if i in bad_input_rows else _cells(table.targets[i]), reason)
      for i, reason in problems
    ]
    if not skip_invalid:
      raise UserError(format_rows(listed, 'input', table.path))
    logging.warning('%s', format_rows(listed, 'input', table.path, hint='skipped'))
  notes['rows_read'] = len(table.inputs)
  notes['invalid_skipped'] = len(problems)
  keep = np.ones(len(table.inputs), bool)
  keep[[i for i, _ in problems]] = False
  blank = keep & featurizers.blank_rows(featurizer, x)  # e.g. methane and water under E-state: indistinguishable
  notes['all_zero_features'] = int(blank.sum())
  if blank.any():
    logging.warning(
      '%s: %d rows have features that are all zero, so the model cannot tell them apart (%s)',
      table.path,
      blank.sum(),
      listing([f'row {table.rows[i]} ({table.inputs[i]!r})' for i in np.flatnonzero(blank)], 5),
    )
  if spec.max_abs_target is not None:
    beyond = keep & (np.abs(np.nan_to_num(targets)) > spec.max_abs_target).reshape(len(keep), -1).any(axis=1)
    notes['dropped_abs_target_above'] = {'limit': spec.max_abs_target, 'count': int(beyond.sum())}
    logging.info('%s: dropped %d rows with |target| > %g', spec.name, beyond.sum(), spec.max_abs_target)
    keep &= ~beyond
  index = np.flatnonzero(keep)
  split = None if table.split is None else np.asarray(table.split)
  group_of: dict[tuple[str, str], int] = {}
  members: list[list[int]] = []
  for i in index:
    group = (split[i] if split is not None else '', keys[i])
    if group not in group_of:
      group_of[group] = len(members)
      members.append([])
    members[group_of[group]].append(i)
  first = np.array([m[0] for m in members], dtype=np.int64)
  y = np.array([targets[m[0]] if len(m) == 1 else _group_mean(targets[m]) for m in members], np.float32)
  notes['examples'] = len(members)
  notes['grouped_repeats'] = int(sum(len(m) > 1 for m in members))
  if not members:
    raise UserError(f'{table.path}: no usable rows left after filtering ({notes})')
  return Examples(
    [table.inputs[i] for i in first], [keys[i] for i in first], x[first], y, None if split is None else split[first]
  )


def assign_splits(examples: Examples, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
  """Seeded train/val/test labels by unique composition (rows are already unique)."""
  if examples.split is not None:
    return examples.split
  n = len(examples)
  order = np.random.default_rng(seed).permutation(n)
  n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
  labels = np.empty(n, dtype='<U5')
  labels[order[:n_test]] = 'test'
  labels[order[n_test : n_test + n_val]] = 'val'
  labels[order[n_test + n_val :]] = 'train'
  return labels


def split_examples(
  examples: Examples, labels: np.ndarray, minimum: int = 1, dataset: str = 'dataset'
) -> dict[str, Examples]:
  parts = {name: examples.take(np.flatnonzero(labels == name)) for name in SPLITS}
  for name, part in parts.items():
    if len(part) < minimum:
      raise UserError(
        f'{dataset}: the {name} split has {len(part)} examples (need at least {minimum}); '
        'use a larger dataset or other split fractions'
      )
  return parts


def set_apart(parts: dict[str, Examples], fraction: float, seed: int, name: str = 'calibration') -> dict:
  """`parts` with a seeded random `fraction` of the training examples moved to a part of their own, `name`
  (at least one; the training part keeps at least one)."""
  train = parts['train']
  count = min(max(1, round(fraction * len(train))), len(train) - 1)
  if count < 1:
    raise UserError(f'{name}: {len(train)} training example(s) leave none to set apart; use a larger dataset')
  order = np.random.default_rng(seed).permutation(len(train))
  return {**parts, 'train': train.take(np.sort(order[count:])), name: train.take(np.sort(order[:count]))}


def fingerprint(parts: dict[str, Examples]) -> str:
  """SHA-256 of what a run trains and is scored on: each split's keys, features and targets, in order."""
  digest = hashlib.sha256()
  for name, part in sorted(parts.items()):
    digest.update(f'{name}:{len(part)}:{part.x.shape}\n'.encode())
    digest.update('\n'.join(part.keys).encode())
    digest.update(np.ascontiguousarray(part.x, np.float32).tobytes())
    digest.update(np.ascontiguousarray(part.y, np.float32).tobytes())
  return digest.hexdigest()


def write_splits(path: str | os.PathLike, parts: dict[str, Examples], names: list[str] | None = None) -> None:
  """Writes input, key, target (several: a column per target `names`, empty where missing) and split of every
  example, so a run can be reproduced."""
  with workdir.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    writer.writerow(['input', 'key'] + (list(names) if names else ['target']) + ['split'])
    for name, part in parts.items():
      for text, key, target in zip(part.inputs, part.keys, part.y):
        values = [repr(float(v)) if np.isfinite(v) else '' for v in np.atleast_1d(target)]
        writer.writerow([text, key, *values, name])


def _finite(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scaling_problem(meta: dict) -> str:
  """What is wrong with the feature and target scaling a model's meta.json holds ('' if nothing)."""
  features, target = meta.get('feature_scaling'), meta.get('target_scaling')
  if not isinstance(features, dict) or not all(isinstance(features.get(k), list) for k in ('keep', 'mean', 'scale')):
    return 'feature_scaling needs lists keep, mean and scale'
  keep, mean, scale = features['keep'], features['mean'], features['scale']
  width = (meta.get('featurizer') or {}).get('width')
  if not (len(keep) == len(mean) == len(scale)) or not keep:
    return 'feature_scaling: keep, mean and scale differ in length'
  if not all(isinstance(j, int) and 0 <= j < (width if isinstance(width, int) else j + 1) for j in keep):
    return f'feature_scaling.keep: column numbers must lie in 0..{width - 1 if isinstance(width, int) else "width"}'
  if not all(map(_finite, mean)) or not all(_finite(v) and v != 0 for v in scale):
    return 'feature_scaling: mean must be finite numbers, scale finite and non-zero'
  values = [target.get(k) for k in ('shift', 'scale')] if isinstance(target, dict) else [None]
  values = [v if isinstance(v, list) and v else [v] for v in values]  # several targets: a list of each
  if not all(_finite(v) for vs in values for v in vs) or len({len(vs) for vs in values}) != 1:
    return 'target_scaling needs finite numbers shift and scale (lists of one length for several targets)'
  if 0 in values[1] or set(target) - {'shift', 'scale'}:
    return 'target_scaling: scale must be non-zero, and shift and scale its only fields'
  return ''


@dataclasses.dataclass(frozen=True)
class FeatureScaling:
  """Columns kept and their standardisation, fitted on the training split and saved with a model."""

  keep: tuple[int, ...]
  mean: tuple[float, ...]
  scale: tuple[float, ...]

  @classmethod
  def identity(cls, width: int) -> FeatureScaling:
    return cls(tuple(range(width)), (0.0,) * width, (1.0,) * width)

  @classmethod
  def fit(cls, x_train: np.ndarray, drop_constant: bool, standardize: bool) -> FeatureScaling:
    width = x_train.shape[1]
    keep = np.arange(width)
    if drop_constant:
      keep = np.flatnonzero(x_train.max(axis=0) > x_train.min(axis=0))
    mean = x_train[:, keep].mean(axis=0) if standardize else np.zeros(len(keep))
    scale = x_train[:, keep].std(axis=0) if standardize else np.ones(len(keep))
    scale = np.where(scale > 0, scale, 1.0)
    return cls(tuple(map(int, keep)), tuple(map(float, mean)), tuple(map(float, scale)))

  @property
  def width(self) -> int:
    return len(self.keep)

  def __call__(self, x: np.ndarray) -> np.ndarray:
    return ((x[:, list(self.keep)] - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> FeatureScaling:
    return cls(tuple(values['keep']), tuple(values['mean']), tuple(values['scale']))


@dataclasses.dataclass(frozen=True)
class TargetScaling:
  """Affine target scaling; the model learns (y - shift) / scale. Travels with the checkpoint.

  Several targets [N, T] are scaled column by column: `shift` and `scale` are then tuples of T.
  """

  shift: float | tuple[float, ...] = 0.0
  scale: float | tuple[float, ...] = 1.0

  def __post_init__(self):
    for name in ('shift', 'scale'):  # meta.json holds a list per target
      if isinstance(getattr(self, name), list | tuple | np.ndarray):
        object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

  @classmethod
  def fit(cls, y_train: np.ndarray, kind: str) -> TargetScaling:
    """Fitted to the training targets [N], or column by column to [N, T] (of the values present)."""
    if kind not in TARGET_SCALINGS:
      raise UserError(f'unknown target scaling {kind!r}; use one of {", ".join(TARGET_SCALINGS)}')
    y_train = np.asarray(y_train, np.float64)
    if y_train.ndim == 2:
      columns = [cls.fit(column[np.isfinite(column)], kind) for column in y_train.T]
      return cls(tuple(c.shift for c in columns), tuple(c.scale for c in columns))
    if kind == 'none' or not y_train.size:
      return cls()
    return cls(float(y_train.mean()), float(y_train.std() or 1.0))

  def apply(self, y: np.ndarray) -> np.ndarray:
    """Targets in the units the model learns."""
    return ((y - np.asarray(self.shift)) / np.asarray(self.scale)).astype(np.float32)

  def invert(self, scaled: np.ndarray) -> np.ndarray:
    """Model outputs in target units."""
    return scaled * np.asarray(self.scale) + np.asarray(self.shift)

  def to_dict(self) -> dict:
    return {name: list(v) if isinstance(v, tuple) else v for name, v in dataclasses.asdict(self).items()}
