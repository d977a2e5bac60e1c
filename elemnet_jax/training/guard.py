"""The baseline guard: does a run beat the trivial predictor (the training median), and do its predictions vary?

A network that collapsed (dead ReLUs, every output pulled to the median of a zero-inflated target)
predicts a near-constant value and scores about the median's MAE. `judge` says so for finished
predictions, `monitor` stops training that shows it after a few epochs, and `refusal` keeps a source
that learned nothing from being transferred without consent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from absl import logging

from elemnet_jax.errors import UserError


class TrainingCollapsed(UserError):
  """Training stopped early: its validation predictions are constant or no better than the training median."""


NO_BETTER_AFTER = 4  # varying predictions no better than the median stop a run from this many x guard_epochs


@dataclasses.dataclass(frozen=True)
class GuardOptions:
  epochs: int = 3  # the first epoch whose validation is judged during training (0: never)
  min_steps: int = 200  # and not before this many optimizer steps
  std_fraction: float = 0.01  # predictions whose std is below this share of the targets' std are constant
  margin: float = 0.01  # a MAE above (1 - margin) x the median's is no better than the baseline


@dataclasses.dataclass(frozen=True)
class Judgement:
  """One split's scores against the trivial predictor."""

  mae: float
  baseline_mae: float  # of predicting the training median for every row
  prediction_std: float
  target_std: float
  options: GuardOptions = GuardOptions()

  @property
  def constant(self) -> bool:
    return self.prediction_std <= self.options.std_fraction * self.target_std

  @property
  def no_better(self) -> bool:
    return self.mae >= (1 - self.options.margin) * self.baseline_mae

  def problem(self) -> str:
    """'' for a run that learned, else what is wrong ('constant predictions', 'no better than the median')."""
    found = ['constant predictions'] * self.constant + ['no better than the training median'] * self.no_better
    return ' and '.join(found)

  def describe(self, split: str) -> str:
    """One line: the MAE against the baseline's, the predictions' spread against the targets'."""
    return (
      f'{split} MAE {self.mae:.4g} vs {self.baseline_mae:.4g} for the training median; '
      f"predictions' std {self.prediction_std:.3g} vs the targets' {self.target_std:.3g}"
    )


def judge(y_train, y, prediction, options: GuardOptions = GuardOptions()) -> Judgement:
  """`prediction` [N] of targets `y` [N] against the median of `y_train`, all in one unit."""
  y, prediction = np.asarray(y, np.float64), np.asarray(prediction, np.float64)
  median = float(np.median(np.asarray(y_train, np.float64)))
  return Judgement(
    float(np.mean(np.abs(prediction - y))),
    float(np.mean(np.abs(median - y))),
    float(np.std(prediction)),
    float(np.std(y)),
    options,
  )


def verdict(judgement: Judgement, name: str, split: str = 'val') -> str:
  """The one line a run ends with: what it learned or that it learned nothing."""
  problem, prefix = judgement.problem(), f'{name}: ' if name else ''
  if not problem:
    return f'{prefix}learned: {judgement.describe(split)}'
  return f'{prefix}LEARNED NOTHING ({problem}): {judgement.describe(split)}'


def record(metrics: dict, y_train, splits: dict, options: GuardOptions = GuardOptions()) -> Judgement:
  """Adds `baseline_mae` and `prediction_std` beside each split's scores in `metrics`, and a 'guard' entry.

  `splits`: split name -> (targets [N], mean prediction [N]); the verdict (one line) is validation's.
  """
  judgements = {split: judge(y_train, y, p, options) for split, (y, p) in splits.items()}
  for split, judgement in judgements.items():
    metrics[split].update(baseline_mae=judgement.baseline_mae, prediction_std=judgement.prediction_std)
  val = judgements['val']
  metrics['guard'] = {
    'learned': not val.problem(),
    'problem': val.problem(),
    'training_median': float(np.median(y_train)),
    'verdict': verdict(val, ''),
  }
  return val


def learned_before(y_train, y_val, best_val_K, options: GuardOptions = GuardOptions()) -> np.ndarray:
  """[K]: which members of a resumed run had learned before it stopped (their best validation MAE, in model
  units, at least `margin` below the training median's). Targets [N], or [N, T] with NaN where missing: then
  the mean over targets of each side."""
  y_train, y_val = np.asarray(y_train, np.float64), np.asarray(y_val, np.float64)
  median_T = np.nanmedian(y_train.reshape(len(y_train), -1), axis=0)
  baseline_T = np.nanmean(np.abs(y_val.reshape(len(y_val), -1) - median_T), axis=0)
  return np.asarray(best_val_K, np.float64) < (1 - options.margin) * float(np.mean(baseline_T))


def monitor(
  y_train, y_val, epochs: int, name: str, options: GuardOptions = GuardOptions(), learned: np.ndarray | None = None
) -> Callable[[int, int, np.ndarray], None]:
  """`check(epoch, step, val predictions [K, N])` for `fit`: raises TrainingCollapsed once no member has
  learned (no epoch so far with varying predictions better than the training median) and every member's
  predictions are constant (judged from epoch `epochs` on; 0: never), or it is past epoch
  NO_BETTER_AFTER x `epochs` (a network whose predictions vary may still be finding its way: a small
  network on a zero-inflated target first beat the median at epoch 7; nor is a run stopped whose later
  epochs are worse than its best).

  Targets and predictions in the model's units (the median commutes with an affine target scaling).
  `learned` [K]: a resumed run's members that learned before it stopped (`learned_before`).
  """
  options = dataclasses.replace(options, epochs=epochs)
  learned_K = None if learned is None else np.array(learned, bool)  # per member: has any epoch so far learned

  def check(epoch: int, step: int, predictions_KxN: np.ndarray) -> None:
    nonlocal learned_K
    if learned_K is None:
      learned_K = np.zeros(len(predictions_KxN), bool)
    worst = collapsed(options, epoch, step, y_train, y_val, predictions_KxN, learned_K)
    if worst is not None:
      message = (
        f'{name}: training stopped at epoch {epoch} (step {step}): the network learned nothing '
        f'({worst.problem()}; {worst.describe("val")}, in training units); lower the learning rate, '
        'standardise the target (--config.train.target_scaling=standard) or change the loss '
        '(--config.train.guard_epochs=0 trains on regardless)'
      )
      logging.error('%s', message)
      raise TrainingCollapsed(message)

  return check


def collapsed(
  options: GuardOptions, epoch: int, step: int, y_train, y_val, predictions_KxN, learned_K: np.ndarray
) -> Judgement | None:
  """Member 0's judgement of this epoch when every member collapsed as `monitor` judges, else None.

  `y_val`: [N], or [K, N] each member's own. `learned_K` says which members learned in an earlier
  epoch; this epoch is added to it here.
  """
  if not options.epochs:  # the guard is off: nothing to judge or remember
    return None
  y_train, y_val = np.asarray(y_train).reshape(-1), np.asarray(y_val)
  truth = y_val if y_val.ndim == 2 else np.broadcast_to(y_val, predictions_KxN.shape)
  judgements = [judge(y_train, t, p, options) for t, p in zip(truth, predictions_KxN)]
  learned_K |= [not j.problem() and np.isfinite(j.mae) for j in judgements]  # NaN predictions never learned
  if epoch < options.epochs or step < options.min_steps:
    return None
  if not learned_K.any() and all(j.constant or epoch >= NO_BETTER_AFTER * options.epochs for j in judgements):
    return judgements[0]
  return None


def refusal(metrics: dict, source: str, consent: str) -> str:
  """'' for a source that learned (or whose metrics.json predates the guard), else the one-line refusal."""
  guard = metrics.get('guard')
  if not guard or guard.get('learned', True):
    return ''
  val = metrics.get('val', {})
  scores = (  # several targets: the verdict of each
    f'val MAE {val["mae"]:.4g} vs {val.get("baseline_mae", float("nan")):.4g} for the training median'
    if 'mae' in val
    else guard.get('verdict', '')
  )
  return (
    f'{source}: this source learned nothing ({guard.get("problem")}: {scores}); transferring from it passes '
    f'on a constant. Pretrain it again (see docs/results.md) or pass --config.{consent}=True to use it anyway'
  )
