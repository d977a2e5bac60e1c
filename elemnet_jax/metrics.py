"""Regression metrics."""

from __future__ import annotations

import numpy as np


def regression_metrics(target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
  """MAE, RMSE, R^2 and n of one set of predictions."""
  target = np.asarray(target, np.float64)
  error = np.asarray(prediction, np.float64) - target
  total = np.square(target - target.mean()).sum()
  return {
    'mae': float(np.abs(error).mean()),
    'rmse': float(np.sqrt(np.square(error).mean())),
    'r2': float(1.0 - np.square(error).sum() / total) if total > 0 else float('nan'),
    'n': int(target.size),
  }


def calibration(target: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
  """Fractions of targets within 1 and 2 std of the mean prediction (0.683 and 0.954 if errors are Gaussian)."""
  error = np.abs(np.asarray(mean, np.float64) - np.asarray(target, np.float64))
  return {'within_1std': float(np.mean(error <= std)), 'within_2std': float(np.mean(error <= 2 * std))}
