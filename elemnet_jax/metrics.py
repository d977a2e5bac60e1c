"""Regression and classification metrics, and the calibration of an ensemble's spread."""

from __future__ import annotations

import math

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


def roc_auc(label: np.ndarray, score: np.ndarray) -> float:
  """ROC-AUC: P(score of a positive > score of a negative), ties counted half; NaN with one class."""
  label, score = np.asarray(label) >= 0.5, np.asarray(score, np.float64)
  positives, negatives = int(label.sum()), int((~label).sum())
  if not positives or not negatives:
    return float('nan')
  order = np.argsort(score, kind='stable')
  ranks = np.empty(score.size)
  ranks[order] = np.arange(1, score.size + 1)
  for value in np.unique(score[order][np.flatnonzero(np.diff(score[order]) == 0)]):  # tied scores share a rank
    tied = score == value
    ranks[tied] = ranks[tied].mean()
  return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def classification_metrics(label: np.ndarray, probability: np.ndarray) -> dict[str, float]:
  """ROC-AUC, accuracy at 0.5, log-loss, the positives' share and n; a label >= 0.5 counts as positive."""
  label = np.asarray(label, np.float64)
  p = np.clip(np.asarray(probability, np.float64), 1e-7, 1 - 1e-7)
  return {
    'roc_auc': roc_auc(label, p),
    'accuracy': float(np.mean((p >= 0.5) == (label >= 0.5))),
    'log_loss': float(-np.mean(label * np.log(p) + (1 - label) * np.log1p(-p))),
    'positive_share': float(np.mean(label >= 0.5)),
    'n': int(label.size),
  }


def calibration(target: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
  """Shares of targets within 1 and 2 std (the members' population std) of the members' mean."""
  error = np.abs(np.asarray(mean, np.float64) - np.asarray(target, np.float64))
  return {'within_1std': float(np.mean(error <= std)), 'within_2std': float(np.mean(error <= 2 * std))}


def expected_coverage(members: int, width: float) -> float:
  """The share `calibration` expects within `width` std if each target were one more draw from the members' Gaussian.

  (target - mean) / (sample std x sqrt(1 + 1/K)) is then Student-t with K - 1 degrees of freedom,
  so the share is P(|t| <= width x sqrt((K - 1) / (K + 1))): 0.45 and 0.71 for K = 3.
  """
  nu, bound = members - 1, width * math.sqrt((members - 1) / (members + 1))
  t = np.linspace(0.0, bound, 20001)
  log_norm = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
  density = np.exp(log_norm - (nu + 1) / 2 * np.log1p(t * t / nu))
  return float(2 * np.sum((density[1:] + density[:-1]) / 2 * np.diff(t)))
