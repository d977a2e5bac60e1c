"""The benchmark's data: synthetic compositions and targets, the same for every framework it is compared with."""

from __future__ import annotations

import jax
import numpy as np


def synthetic_arrays(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Compositions of 2 to 5 random elements (fractions summing to 1), standard normal targets; float32."""
  rng = np.random.default_rng(seed)
  x = rng.random((rows, features), dtype=np.float32)
  kept = rng.integers(2, 6, rows)[:, None] > np.argsort(rng.random((rows, features)), axis=1)
  x = np.where(kept, x, 0.0).astype(np.float32)
  x /= x.sum(axis=1, keepdims=True)
  y = rng.standard_normal(rows, dtype=np.float32)
  return x, y


def synthetic_data(rows: int, features: int, seed: int) -> tuple[jax.Array, jax.Array]:
  """`synthetic_arrays` on the device."""
  x, y = synthetic_arrays(rows, features, seed)
  return jax.device_put(x), jax.device_put(y)
