"""Scores predictions against the known values in a column of the input CSV (`predict --target=COLUMN`).

How a model, or several joined as one ensemble, does on rows nobody trained on: a held-out CSV, or
a run's own `predictions_test.csv` (its `target` column).
"""

from __future__ import annotations

import math

import numpy as np

from elemnet_jax import metrics, tasks
from elemnet_jax.errors import UserError, format_rows


def known_values(header: list[str], cells: list[list[str]], rows: list[int], column: str, where: str) -> np.ndarray:
  """The column's numbers (NaN where the cell is blank); a cell that is not a number: one line naming its row."""
  if column not in header:
    raise UserError(f'{where}: no column {column!r} to score against (columns: {", ".join(header)})')
  index = header.index(column)
  values, bad = np.full(len(cells), np.nan), []
  for i, cell in enumerate(cells):
    text = cell[index].strip() if index < len(cell) else ''
    if not text:
      continue
    try:
      value = float(text)
    except ValueError:
      bad.append((rows[i], text, 'not a number'))
      continue
    if not math.isfinite(value):
      bad.append((rows[i], text, 'not a finite number'))
      continue
    values[i] = value
  if bad:
    raise UserError(format_rows(bad, f'--target={column}', where, 'fix them or leave the cells blank'))
  return values


def score(meta: dict, mean: np.ndarray, known: np.ndarray, errors: list[str]) -> dict[str, float]:
  """The task's metrics (MAE, RMSE, R^2; a classifier's ROC-AUC and accuracy) over the rows that have both a
  prediction and a known value, with `unscored` counting the others."""
  if mean.ndim != 1:
    raise UserError('--target scores models of one target; this model predicts several')
  scored = np.array([not error for error in errors]) & np.isfinite(known)
  if not scored.any():
    raise UserError('--target: no row has both a prediction and a known value')
  if tasks.is_classifier(meta):
    result = metrics.classification_metrics(known[scored], mean[scored])
  else:
    result = metrics.regression_metrics(known[scored], mean[scored])
  return {**result, 'unscored': int((~scored).sum())}


def describe(scores: dict[str, float], column: str, members: int) -> str:
  """One line: the metrics, against which column, of how many members."""
  shown = ', '.join(f'{name} {value:.6g}' for name, value in scores.items() if name not in ('n', 'unscored'))
  skipped = f'; {scores["unscored"]} rows without a prediction or a value not scored' if scores['unscored'] else ''
  return f'against {column} ({scores["n"]} rows, {members} member(s)): {shown}{skipped}'
