"""The validation score early stopping minimises, per member, on the host."""

from __future__ import annotations

import numpy as np


def validation_error(loss: str, predictions_KxN: np.ndarray, target) -> np.ndarray:
  """Per member [K]: the mean log-loss of logits against 0/1 labels for 'bce', else the MAE."""
  predictions = np.asarray(predictions_KxN, np.float64)
  target = np.asarray(target, np.float64)
  if loss == 'bce':  # log(1 + e^z) - y z, computed stably
    return (np.logaddexp(0.0, predictions) - target * predictions).mean(axis=-1)
  return np.abs(predictions - target).mean(axis=-1)
