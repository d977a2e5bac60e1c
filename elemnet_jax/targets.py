"""Several targets at once: `dataset.target=A,B,C` trains one network with one output per target.

Each row's targets are read from their columns (an empty cell is a missing value); the network's
output layer has one unit per target; missing values weigh nothing in the loss (`training.train.
target_weights`), in early stopping's validation score (`training.losses.validation_error`) and in
the metrics. `train.target_scaling=standard` standardises each target on its own training values.
Scores, the baseline guard and predictions are given per target; metrics.json adds their mean (R^2
and the MAE in units of each target's training std, which can be averaged across units).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from absl import logging

from elemnet_jax import tasks
from elemnet_jax.metrics import regression_metrics
from elemnet_jax.models import ModelConfig
from elemnet_jax.training import guard


def several(dataset) -> bool:
  """Does a dataset section (`DatasetConfig`) name several target columns?"""
  return len(dataset.target_names) > 1


def warn_unscaled(config) -> None:
  """Several targets learned in their own units add errors of different units (the schema refuses a classifier)."""
  if several(config.dataset) and config.train.target_scaling == 'none':
    logging.warning(
      'several targets with --config.train.target_scaling=none: the loss adds raw errors of different units; '
      '--config.train.target_scaling=standard scales each target on its own'
    )


def with_outputs(model_config: ModelConfig, outputs: int) -> ModelConfig:
  """`model_config` with one output per target."""
  return dataclasses.replace(model_config, outputs=outputs)


def source_outputs(source_meta: dict | None) -> int:
  return int(((source_meta or {}).get('model') or {}).get('outputs', 1))


def new_outputs(source_meta: dict | None, dataset) -> bool:
  """Whether a fine-tune predicts other targets than its source's outputs: another number of them, or, for
  several, other columns. Its output layer is then drawn afresh and its targets standardised anew."""
  if source_meta is None:
    return False
  names = dataset.target_names
  if source_outputs(source_meta) != len(names):
    return True
  return len(names) > 1 and (source_meta.get('target') or {}).get('names') != list(names)


def log_scale(scaling) -> float:
  """The factor from training units to target units of the training log: 1 (training units) for several targets."""
  return scaling.scale if isinstance(scaling.scale, float | int) else 1.0


def _present(y_N: np.ndarray, *arrays):
  keep = np.isfinite(y_N)
  return (y_N[keep],) + tuple(a[..., keep] for a in arrays)


def score_run(task: str, names, parts: dict, val_KxNxT, test_KxNxT, calibration_set=None) -> tuple[dict, dict]:
  """(metrics.json's scores, meta.json's calibration: none) of a run of several targets `names`
  (None: one target, scored by `tasks.score_run`).

  Per split: each target's MAE, RMSE, R^2, n over its values present, with the baseline guard's
  training median MAE and the predictions' std; 'mean' holds the targets' mean R^2 and MAE / std
  (the std of the target's training values). The guard's verdict: learned when some target did (a source
  that learned nothing for every target is refused for transfer); `problem` names those that did not.
  """
  if not names:
    return tasks.score_run(task, parts, val_KxNxT, test_KxNxT, calibration_set=calibration_set)
  y_train = np.asarray(parts['train'].y, np.float64)
  std = np.array([np.std(column[np.isfinite(column)]) or 1.0 for column in y_train.T])
  metrics: dict = {'targets': list(names)}
  verdicts, learned = {}, []
  for split, predictions in (('val', val_KxNxT), ('test', test_KxNxT)):
    y, scores = np.asarray(parts[split].y, np.float64), {}
    for t, name in enumerate(names):
      truth, mean, members = _present(y[:, t], predictions.mean(axis=0)[:, t], predictions[..., t])
      train = y_train[:, t][np.isfinite(y_train[:, t])]
      scores[name] = regression_metrics(truth, mean) if truth.size else {'n': 0}
      if not truth.size:
        continue
      if split == 'test':
        scores[name]['members'] = [regression_metrics(truth, p) for p in members]
      judgement = guard.judge(train, truth, mean)
      scores[name].update(baseline_mae=judgement.baseline_mae, prediction_std=judgement.prediction_std)
      if split == 'val':
        verdicts[name] = guard.verdict(judgement, name)
        learned.append(not judgement.problem())
    given = [t for t, name in enumerate(names) if scores[name]['n']]
    scores['mean'] = {
      'r2': float(np.mean([scores[names[t]]['r2'] for t in given])),
      'mae_per_std': float(np.mean([scores[names[t]]['mae'] / std[t] for t in given])),
      'n': int(sum(scores[names[t]]['n'] for t in given)),
    }
    metrics[split] = scores
  failed = [name for name, ok in zip(verdicts, learned) if not ok]
  metrics['guard'] = {
    'learned': len(failed) < len(names),
    'problem': f'learned nothing for {", ".join(failed)}' if failed else '',
    'training_median': {name: float(np.nanmedian(y_train[:, t])) for t, name in enumerate(names)},
    'verdict': '; '.join(verdicts.values()),
    'targets': verdicts,
  }
  return metrics, {}


def describe(scores: dict, names: list[str] | None) -> str:
  """One line of a split's scores per target and their mean (one target: `tasks.describe`)."""
  if not names:
    return tasks.describe(scores)
  each = [
    f'{name}: MAE {scores[name]["mae"]:.4g} R2 {scores[name]["r2"]:.3f} (n={scores[name]["n"]})'
    for name in names
    if scores[name]['n']
  ]
  mean = scores['mean']
  return '; '.join(each) + f'; mean R2 {mean["r2"]:.3f}, mean MAE/std {mean["mae_per_std"]:.4f}'


def monitor(y_train_NxT, y_val_NxT, epochs: int, name: str, names: list[str] | None, learned=None):
  """`check(epoch, step, val predictions [K, N, T])` for `fit`: stops training once every target's predictions
  collapsed as `guard.monitor` judges one target's (a run where some target still learns goes on).

  One target (`names` None): `guard.monitor` itself. `learned` [K]: a resumed run's members that learned
  before it stopped (`guard.learned_before`, judged on the mean over targets), for every target.
  """
  if not names:
    return guard.monitor(y_train_NxT, y_val_NxT, epochs, name, learned=learned)
  y_train, y_val = np.asarray(y_train_NxT), np.asarray(y_val_NxT)
  options = dataclasses.replace(guard.GuardOptions(), epochs=epochs)
  columns = [(np.isfinite(y_val[:, t]), y_train[:, t][np.isfinite(y_train[:, t])]) for t in range(len(names))]
  learned_TxK = {}  # per target and member: has any epoch so far learned

  def check(epoch: int, step: int, predictions_KxNxT: np.ndarray) -> None:
    judged = [
      guard.collapsed(
        options,
        epoch,
        step,
        train,
        y_val[keep, t],
        predictions_KxNxT[:, keep, t],
        learned_TxK.setdefault(
          t, np.zeros(len(predictions_KxNxT), bool) if learned is None else np.array(learned, bool)
        ),
      )
      for t, (keep, train) in enumerate(columns)
    ]
    if all(judgement is not None for judgement in judged):
      described = '; '.join(f'{n}: {j.problem()}, {j.describe("val")}' for n, j in zip(names, judged))
      message = (
        f'{name}: training stopped at epoch {epoch} (step {step}): the network learned nothing for any target '
        f'({described}, in training units); lower the learning rate or change the loss '
        '(--config.train.guard_epochs=0 trains on regardless)'
      )
      logging.error('%s', message)
      raise guard.TrainingCollapsed(message)

  return check


def prediction_header(names: list[str], with_targets: bool, members: int) -> list[str]:
  """predictions_test.csv's columns after 'input': per target its value, prediction and (members > 1) std."""
  header = []
  for name in names:
    header += ([name] if with_targets else []) + [f'{name} prediction'] + ([f'{name} std'] if members > 1 else [])
  return header


def prediction_cells(predictions_KxT: np.ndarray, targets_T=None) -> list[str]:
  """One row's cells under `prediction_header` (an empty target cell where it is missing)."""
  cells = []
  for t in range(predictions_KxT.shape[-1]):
    if targets_T is not None:
      cells.append(f'{targets_T[t]:.6g}' if np.isfinite(targets_T[t]) else '')
    cells.append(f'{predictions_KxT[:, t].mean():.6g}')
    if predictions_KxT.shape[0] > 1:
      cells.append(f'{predictions_KxT[:, t].std():.6g}')
  return cells
