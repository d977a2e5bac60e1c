"""What a transfer study runs: its methods (`Arm`), folds, nested training-set sizes and depth checks."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from absl import logging

from elemnet_jax import data, transfer
from elemnet_jax.configs.study_schema import StudySection
from elemnet_jax.errors import UserError
from elemnet_jax.metrics import classification_metrics, regression_metrics
from elemnet_jax.models import ModelConfig
from elemnet_jax.models.elemnet import ElemNetConfig, head_network


def scores(task: str, target: np.ndarray, prediction: np.ndarray) -> dict:
  """Test scores of one prediction: ROC-AUC, accuracy, log-loss of probabilities, or MAE, RMSE, R^2."""
  if task == 'classification':
    return classification_metrics(target, prediction)
  return regression_metrics(target, prediction)


def validation_key(task: str) -> str:
  """The name of early stopping's criterion in a result row: the validation log-loss or MAE."""
  return 'val_log_loss' if task == 'classification' else 'val_mae'


@dataclasses.dataclass(frozen=True)
class Arm:
  """One method of the study with its setting: the unit its rows, tables and figures are named by."""

  method: str
  freeze_layers: int | None = None  # finetune: the first k dense layers frozen
  layer: int | None = None  # featurizer and head: the hidden layer whose activations they read

  @property
  def label(self) -> str:
    if self.method == 'finetune':
      return f'fine-tune (freeze {self.freeze_layers})'
    if self.method == 'featurizer':
      return f'frozen featurizer (layer {self.layer}) + ridge'
    if self.method == 'head':
      return f'frozen featurizer (layer {self.layer}) + head network'
    return {'scratch': 'scratch', 'direct': 'pretrained, applied directly'}[self.method]

  @classmethod
  def of(cls, row: dict) -> Arm:
    return cls(row['method'], row.get('freeze_layers'), row.get('layer'))


def network_arms(study: StudySection) -> list[Arm]:
  """The arms that train a network, in the order they run: scratch, fine-tuning depths, head."""
  arms = [Arm('scratch')] if 'scratch' in study.methods else []
  if 'finetune' in study.methods:
    arms += [Arm('finetune', freeze_layers=k) for k in study.freeze_layers]
  if 'head' in study.methods:
    arms.append(Arm('head', layer=study.featurizer_layer))
  return arms


@dataclasses.dataclass
class Fold:
  """One held-out test set and the training/validation data around it (unscaled)."""

  index: int
  train: data.Examples
  val: data.Examples
  test: data.Examples


def make_folds(
  examples, folds: int, split, seed: int, val_fraction: float, dataset: str = 'dataset', min_split_size: int = 1
) -> list[Fold]:
  """k-fold cross-validation (folds >= 2), or the one fixed split given by `split` (folds = 0)."""
  rng = np.random.default_rng(seed)
  n = len(examples)
  if folds == 0:
    labels = data.assign_splits(examples, split, seed)
    parts = data.split_examples(examples, labels, min_split_size, dataset)
    return [Fold(0, parts['train'], parts['val'], parts['test'])]
  if folds < 0 or folds == 1 or folds > n:
    raise UserError(f'study.folds={folds}: use 0 (a fixed split) or 2..{n}')
  order = rng.permutation(n)
  result = []
  for f, test_index in enumerate(np.array_split(order, folds)):
    rest = np.setdiff1d(order, test_index)
    rest = rest[np.random.default_rng(seed + 1 + f).permutation(len(rest))]
    n_val = max(1, round(val_fraction * n))
    if n_val >= len(rest):
      raise UserError(
        f'study.val_fraction={val_fraction}: holds out {n_val} of all {n} examples for validation, '
        f'leaving none of the {len(rest)} non-test rows of a fold to train on'
      )
    result.append(Fold(f, examples.take(rest[n_val:]), examples.take(rest[:n_val]), examples.take(test_index)))
  return result


def validation_rotation(n_train: int, n_val: int, members: int, rng: np.random.Generator):
  """Each member's training and validation rows of a fold's pool: the fold's validation rows, then its training rows.

  Returns index arrays [members, n_train] and [members, n_val] into that pool. Member 0 keeps the
  fold's own split; member k >= 1 holds out the (k-1)-th block of n_val rows of a random order of
  the training rows (wrapping around: blocks overlap only when (members - 1) x n_val exceeds
  n_train) and trains on the rest of the pool in pool order. Together the members learn from
  every non-test row.
  """
  pool = np.arange(n_val + n_train)
  shuffled = n_val + rng.permutation(n_train)
  blocks = shuffled[(np.arange(members - 1)[:, None] * n_val + np.arange(n_val)) % n_train]
  val = np.concatenate([pool[None, :n_val], blocks])
  train = np.stack([np.setdiff1d(pool, held_out) for held_out in val])
  return train, val


def member_rows(pool: np.ndarray, rows_MxN: np.ndarray) -> np.ndarray:
  """Rows of a pool shared by the members ([P, ...]) or each member's own ([M, P, F]); no member axis for one."""
  taken = pool[np.arange(len(rows_MxN))[:, None], rows_MxN] if pool.ndim == 3 else pool[rows_MxN]
  return taken[0] if len(rows_MxN) == 1 else taken


def subset_sizes(n_train: int, fractions) -> list[int]:
  return [max(1, round(f * n_train)) for f in fractions]


def training_order(n_train: int, split_seed: int, fold_index: int) -> np.ndarray:
  """The order in which a fold's training rows enter the nested subsets: size n trains on the first n."""
  return np.random.default_rng(split_seed + 100 + fold_index).permutation(n_train)


def head_config(study: StudySection, model_config: ModelConfig) -> ElemNetConfig:
  """The small network trained on frozen hidden activations: an MLP of the study's head layers, no dropout."""
  return head_network(study.head_widths, activation=getattr(model_config, 'activation', 'relu'))


def standardise_features(features: dict[str, np.ndarray], train_index: np.ndarray) -> dict[str, np.ndarray]:
  """Every part scaled by the mean and std of features['pool'][train_index]; constant (dead) units stay 0."""
  scaling = data.FeatureScaling.fit(features['pool'][train_index], drop_constant=False, standardize=True)
  return {name: scaling(value) for name, value in features.items()}


def check_study_depths(study: StudySection, model_config: ModelConfig) -> None:
  """Raises UserError unless the freeze depths and the featurizer layer exist in the source model."""
  for depth in study.freeze_layers:
    transfer.layer_rules(depth, model_config)
  hidden = len(model_config.hidden_sizes())
  if not 1 <= study.featurizer_layer <= hidden:
    raise UserError(f'--config.study.featurizer_layer={study.featurizer_layer}: the hidden layers are 1..{hidden}')


class Timer:
  """Logs 'run i of N' with an estimate of the time left from the runs done so far."""

  def __init__(self, total: int):
    self.total, self.done, self.seconds, self.tic = total, 0, 0.0, 0.0

  def begin(self, what: str) -> None:
    eta = ''
    if self.done:
      left = self.seconds / self.done * (self.total - self.done)
      eta = f', about {left / 60:.0f} min left' if left >= 60 else f', about {left:.0f} s left'
    logging.info('study: run %d of %d: %s%s', self.done + 1, self.total, what, eta)
    self.tic = time.perf_counter()

  def end(self) -> None:
    self.done += 1
    self.seconds += time.perf_counter() - self.tic


def result_row(
  arm: Arm, fraction: float, size: int, fold: Fold, seed: int | None, prediction, seconds: float, task='regression'
) -> dict:
  """One result row; `seed` None where no single seed made it (the seeds' mean, ridge, the source as is).

  A classifier's `prediction` is the probability of the positive class.
  """
  return {
    'method': arm.method,
    'freeze_layers': arm.freeze_layers,
    'layer': arm.layer,
    'train_fraction': fraction,
    'train_size': int(size),
    'fold': fold.index,
    'seed': seed,
    'ensemble': False,
    **scores(task, fold.test.y, prediction),
    'seconds': round(seconds, 2),
  }
