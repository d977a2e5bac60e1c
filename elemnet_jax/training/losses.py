"""The validation score early stopping minimises, per member, on the host."""

from __future__ import annotations

import numpy as np


def validation_error(loss: str, predictions_KxN: np.ndarray, target) -> np.ndarray:
  """Per member [K]: the mean log-loss of logits against 0/1 labels for 'bce', else the MAE.

  Several targets ([K, N, T] against [N, T] or [K, N, T]): each target's score over the values present
  (NaN is missing), then their mean, in the units the model learns (standardised, as a rule).
  """
  predictions = np.asarray(predictions_KxN, np.float64)
  target = np.asarray(target, np.float64)
  if loss == 'bce':  # log(1 + e^z) - y z, computed stably
    error = np.logaddexp(0.0, predictions) - target * predictions
  else:
    error = np.abs(predictions - target)
  if predictions.ndim == 2:
    return error.mean(axis=-1)
  present = np.broadcast_to(np.isfinite(target), error.shape)
  per_target = np.where(present, error, 0.0).sum(axis=-2) / np.maximum(present.sum(axis=-2), 1)
  return per_target.mean(axis=-1)
