"""Frozen featurizer: hidden activations of a pretrained ElemNet as features for ridge regression."""

from __future__ import annotations

import numpy as np

ALPHAS = tuple(10.0**p for p in range(-4, 5))


def ridge_fit(features: np.ndarray, targets: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
  """Closed-form ridge on centred data: (weights [F], intercept); the intercept is not penalised."""
  features = np.asarray(features, np.float64)
  mean_x, mean_y = features.mean(axis=0), float(np.mean(targets))
  centred = features - mean_x
  gram = centred.T @ centred + alpha * np.eye(features.shape[1])
  weights = np.linalg.solve(gram, centred.T @ (np.asarray(targets, np.float64) - mean_y))
  return weights, mean_y - float(mean_x @ weights)


def ridge_select(
  train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], alphas=ALPHAS
) -> tuple[np.ndarray, float, float]:
  """Fits ridge for each alpha, keeps the one with the lowest validation MAE: (w, b, alpha)."""
  best = None
  for alpha in alphas:
    weights, intercept = ridge_fit(*train, alpha)
    mae = float(np.abs(val[0] @ weights + intercept - val[1]).mean())
    if best is None or mae < best[0]:
      best = (mae, weights, intercept, alpha)
  return best[1], best[2], best[3]
