"""Calibrating an ensemble's spread on the validation split: z-scaling and split-conformal intervals.

The members' population std is the raw spread. z-scaling fits one factor `s` such that the validation
residuals divided by `s * std` have unit root mean square: `s * std` is the calibrated std, and a
Gaussian interval of coverage c is mean +- z_c * s * std. Split-conformal intervals take the score
|residual| / std on validation; the interval of coverage c is mean +- q_c * std, q_c the
ceil((n + 1) c)-th smallest of the n scores (the finite-sample correction: coverage at least c for a
new input drawn like the validation rows).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

COVERAGES = (0.68, 0.9)  # the intervals a run and a study report
MAX_SCORES = 1001  # order statistics kept in meta.json; more validation rows are thinned to these ranks
_FLOOR = 1e-12  # a std below this (members that agree exactly) counts as this


def gaussian_quantile(coverage: float) -> float:
  """z with P(|Z| <= z) = coverage for a standard normal Z (bisection on erf)."""
  low, high = 0.0, 40.0
  for _ in range(200):
    middle = (low + high) / 2
    low, high = (middle, high) if math.erf(middle / math.sqrt(2)) < coverage else (low, middle)
  return (low + high) / 2


def check_coverage(coverage: float, flag: str = '--coverage') -> float:
  """`coverage` as a float in (0, 1); a ValueError with one line otherwise."""
  try:
    value = float(coverage)
  except (TypeError, ValueError):
    raise ValueError(f'{flag}={coverage}: give a share between 0 and 1, e.g. 0.9') from None
  if not 0 < value < 1:
    raise ValueError(f'{flag}={coverage}: give a share between 0 and 1, e.g. 0.9')
  return value


@dataclasses.dataclass(frozen=True)
class Calibration:
  """The validation statistics that turn a spread into a calibrated std and intervals."""

  z_scale: float  # s
  n: int  # validation rows the scores come from
  ranks: tuple[int, ...]  # 1-based ranks of the kept order statistics (all of 1..n when n <= MAX_SCORES)
  scores: tuple[float, ...]  # |residual| / std at those ranks, ascending

  @classmethod
  def fit(cls, target: np.ndarray, predictions_KxN: np.ndarray, std: np.ndarray | None = None) -> Calibration:
    """From the members' validation predictions [K, N] (K >= 2) and the targets [N].

    `std` [N]: the model's own std (a mean-variance head's) instead of the members' spread; then K >= 1.
    """
    predictions = np.asarray(predictions_KxN, np.float64)
    if std is None and (predictions.ndim != 2 or predictions.shape[0] < 2):
      raise ValueError('calibration needs the predictions of at least 2 members: a single member has no spread')
    std = np.maximum(predictions.std(axis=0) if std is None else np.asarray(std, np.float64), _FLOOR)
    score = np.abs(predictions.mean(axis=0) - np.asarray(target, np.float64)) / std
    n = score.size
    if n == 0:
      raise ValueError('calibration needs at least one validation row')
    ranks = np.unique(np.round(np.linspace(1, n, min(n, MAX_SCORES))).astype(int))
    ordered = np.sort(score)[ranks - 1]
    z_scale = float(np.sqrt(np.mean(np.square(score))))
    return cls(z_scale, int(n), tuple(int(r) for r in ranks), tuple(float(f'{s:.6g}') for s in ordered))

  def conformal_factor(self, coverage: float) -> float:
    """q_c: the ceil((n + 1) c)-th smallest score (inf when n is too small for that coverage)."""
    rank = math.ceil((self.n + 1) * coverage)
    if rank > self.n:
      return math.inf
    return float(np.interp(rank, self.ranks, self.scores))

  def factor(self, coverage: float, method: str = 'conformal') -> float:
    """The half-width of the interval of `coverage`, in raw std: conformal q_c, or z_c * s for 'z'."""
    if method == 'z':
      return gaussian_quantile(coverage) * self.z_scale
    if method == 'conformal':
      return self.conformal_factor(coverage)
    raise ValueError(f'unknown calibration method {method!r}; use z or conformal')

  def interval(self, mean: np.ndarray, std: np.ndarray, coverage: float, method: str = 'conformal'):
    """(lower, upper) of the interval of `coverage` around `mean`."""
    half = self.factor(coverage, method) * np.maximum(np.asarray(std, np.float64), _FLOOR)
    return mean - half, mean + half

  def to_dict(self) -> dict:
    return {'z_scale': self.z_scale, 'n': self.n, 'ranks': list(self.ranks), 'scores': list(self.scores)}

  @classmethod
  def from_dict(cls, values: dict) -> Calibration:
    """From meta.json's `calibration`; a ValueError when it is malformed."""
    try:
      z_scale, n = float(values['z_scale']), int(values['n'])
      ranks, scores = tuple(int(r) for r in values['ranks']), tuple(float(s) for s in values['scores'])
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(f'calibration is malformed ({error!r})') from None
    if not (math.isfinite(z_scale) and n >= 1 and ranks and len(ranks) == len(scores)):
      raise ValueError('calibration is malformed (needs a finite z_scale, n >= 1 and one score per rank)')
    return cls(z_scale, n, ranks, scores)


def coverage_report(
  calibration: Calibration, target: np.ndarray, predictions_KxN: np.ndarray, coverages=COVERAGES, std=None
) -> dict:
  """Per method and coverage: the share of `target` inside the interval and its mean width (sharpness).

  `std` [N]: the model's own std instead of the members' spread.
  """
  predictions = np.asarray(predictions_KxN, np.float64)
  mean, std = predictions.mean(axis=0), predictions.std(axis=0) if std is None else np.asarray(std, np.float64)
  target = np.asarray(target, np.float64)
  report: dict = {}
  for method in ('z', 'conformal'):
    for coverage in coverages:
      lower, upper = calibration.interval(mean, std, coverage, method)
      report[f'{method}_{round(coverage * 100)}'] = {
        'coverage': round(float(np.mean((target >= lower) & (target <= upper))), 4),
        'width': round(float(np.mean(upper - lower)), 6),
      }
  return report


def summary(calibration: Calibration, report: dict) -> dict:
  """What metrics.json records: the z factor, the validation rows, and the test report."""
  return {'z_scale': round(calibration.z_scale, 6), 'val_rows': calibration.n, 'test': report}


def of_run(val_y, val_KxN, test_y, test_KxN, stds: tuple | None = None) -> tuple[dict, dict]:
  """(meta.json's entry, metrics.json's entry) of a run's calibration; both empty with one member.

  The validation predictions are the early-stopped members' (also when they are retrained on the
  validation rows afterwards). `stds`: (validation std [N], test std [N]) of a model with its own std,
  calibrated instead of the members' spread (also for one member).
  """
  val_std, test_std = stds or (None, None)
  if val_std is None and np.asarray(val_KxN).shape[0] < 2:
    return {}, {}
  fitted = Calibration.fit(val_y, val_KxN, val_std)
  report = coverage_report(fitted, test_y, test_KxN, std=test_std)
  return {'calibration': fitted.to_dict()}, {'calibration': summary(fitted, report)}


def study_entry(val_y, val_KxN, test_y: np.ndarray, test_KxN: np.ndarray) -> dict:
  """A study row's `calibrated`: the test report of intervals calibrated on the shared validation rows.

  Empty without a shared validation set (`val_KxN` None) or with one member.
  """
  if val_KxN is None or np.asarray(val_KxN).shape[0] < 2:
    return {}
  return {'calibrated': coverage_report(Calibration.fit(val_y, val_KxN), test_y, test_KxN)}
