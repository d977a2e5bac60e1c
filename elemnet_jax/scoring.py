"""Scores predictions against the known values in a column of the input CSV (`predict --target=COLUMN`).

How a model, or several joined as one ensemble, does on rows nobody trained on: a held-out CSV, or
a run's own `predictions_test.csv` (its `target` column).
"""

from __future__ import annotations

import numpy as np

from elemnet_jax import data, metrics, tasks
from elemnet_jax.errors import UserError, format_rows


def column_cells(header: list[str], cells: list[list[str]], column: str, where: str) -> list[str]:
  """The column's cells, stripped ('' where a row is short); a column absent or named twice: one line."""
  if header.count(column) != 1:
    found = 'named twice' if column in header else 'absent'
    raise UserError(f'{where}: column {column!r} to score against is {found} (columns: {", ".join(map(repr, header))})')
  index = header.index(column)
  return [row[index].strip() if index < len(row) else '' for row in cells]


def known_values(texts: list[str], rows: list[int], meta: dict, column: str, where: str) -> np.ndarray:
  """The known values as the model's targets (NaN where blank): numbers read as the training data's were, or a
  classifier's two classes as 0 and 1; a cell that is neither: one line naming its row and value."""
  target = meta.get('target') or {}
  if target.get('names'):
    raise UserError(f'--target={column}: scores models of one target; this one predicts {", ".join(target["names"])}')
  values, bad = np.full(len(texts), np.nan), []
  classes = target.get('classes', ['0', '1']) if tasks.is_classifier(meta) else None
  for i, text in enumerate(texts):
    if not text:
      continue
    reason = ''
    if classes is None:
      values[i], reason = data.parse_target(text)
    elif classes == ['0', '1'] and tasks.is_01(text):  # '1', '1.0', as training read them
      values[i] = float(text)
    elif text in classes:
      values[i] = float(text == classes[1])
    else:
      reason = f'not one of the classes {classes[0]!r}, {classes[1]!r}'
    if reason:
      bad.append((rows[i], text[:40], reason))
  if bad:
    raise UserError(format_rows(bad, f'--target={column}', where, 'fix them or leave the cells blank'))
  return values


def score(meta: dict, mean: np.ndarray, known: np.ndarray, errors: list[str]) -> dict[str, float] | None:
  """The task's metrics (MAE, RMSE, R^2; a classifier's ROC-AUC, accuracy and log-loss) over the rows that have
  both a prediction and a known value, `unscored` counting the others; None when no row has both."""
  scored = np.array([not error for error in errors]) & np.isfinite(known)
  if not scored.any():
    return None
  task_metrics = metrics.classification_metrics if tasks.is_classifier(meta) else metrics.regression_metrics
  return {**task_metrics(known[scored], mean[scored]), 'unscored': int((~scored).sum())}


def describe(scores: dict | None, column: str, members: int) -> str:
  """One line for the log: the metrics against `column`, of how many members, and the rows left out."""
  if scores is None:
    return f'against {column}: no row has both a prediction and a known value; nothing scored'
  skipped = f'; {scores["unscored"]} rows not scored (no prediction or no known value)' if scores['unscored'] else ''
  return f'against {column}, {members} member(s): {tasks.describe(scores)}{skipped}'
