"""What a run predicts: a number (regression) or the probability of the positive of two classes (classification).

`dataset.task=classification` reads a column of two classes (0/1, or two other values; the second in
sorted order, or `dataset.positive`, is the positive one), trains the network's one output as a logit
with sigmoid cross-entropy (`train.loss` is set to 'bce', the target unscaled), stops early on the
validation log-loss and scores ROC-AUC, accuracy and log-loss. A regression source fine-tuned into a
classifier gets its output layer drawn afresh.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from elemnet_jax import calibration
from elemnet_jax.configs.schema import DatasetConfig
from elemnet_jax.data.readers import RawTable
from elemnet_jax.errors import UserError, listing
from elemnet_jax.metrics import classification_metrics, regression_metrics
from elemnet_jax.models import heads
from elemnet_jax.training import guard


def is_01(text: str) -> bool:
  try:
    return float(text) in (0.0, 1.0)
  except ValueError:
    return False


def encode_labels(table: RawTable, dataset: DatasetConfig, notes: dict) -> RawTable:
  """For classification, `table` with targets '0'/'1' (missing ones kept empty) and the classes in `notes['task']`."""
  if dataset.task == 'regression':
    return table
  texts = [text.strip() for text in table.targets]
  values = sorted(set(texts) - {''})
  positive = dataset.positive
  if all(is_01(text) for text in values):
    classes = ('0', '1')
    encoded = ['' if not text else str(int(float(text))) for text in texts]
  else:
    if len(values) != 2 or (positive and positive not in values):
      shown = listing([repr(v) for v in values], 5)
      wanted = f' including --config.dataset.positive={positive!r}' if positive else ''
      raise UserError(
        f'{table.path}: classification needs a target column of two classes{wanted} '
        f'(0/1 or two values); it holds {len(values)}: {shown}'
      )
    negative = values[0] if values[1] == (positive or values[1]) else values[1]
    classes = (negative, positive or values[1])
    encoded = ['' if not text else str(int(text == classes[1])) for text in texts]
  notes['task'] = {'task': 'classification', 'classes': list(classes)}
  return dataclasses.replace(table, targets=encoded)


def new_head(dataset: DatasetConfig, source_meta: dict | None, model_config=None) -> bool:
  """Whether a fine-tune changes the task (regression -> classification or back) or the head (`model_config`'s
  against the source's): its output layer is then redrawn."""
  if source_meta is None:
    return False
  source_task = (source_meta.get('target') or {}).get('task', 'regression')
  return source_task != dataset.task or (model_config is not None and heads.changed(source_meta['model'], model_config))


def is_classifier(meta: dict) -> bool:
  return (meta.get('target') or {}).get('task') == 'classification'


def output(meta: dict, predictions_KxN: np.ndarray) -> np.ndarray:
  """A model's outputs as reported: probabilities of the positive class for a classifier, else unchanged."""
  if not is_classifier(meta):
    return predictions_KxN
  return 1.0 / (1.0 + np.exp(-np.asarray(predictions_KxN, np.float64)))


def _judge_classifier(metrics: dict, y_train, splits: dict) -> None:
  """metrics['guard'] of a classifier: learned when its validation log-loss beats the training base rate's by 1%."""
  rate = float(np.clip(np.mean(np.asarray(y_train) >= 0.5), 1e-7, 1 - 1e-7))
  problem = ''
  for split, (label, probability) in splits.items():
    baseline = classification_metrics(label, np.full(len(label), rate))['log_loss']
    metrics[split].update(baseline_log_loss=baseline, prediction_std=float(np.std(probability)))
  val = metrics['val']
  if val['prediction_std'] <= 0.01 * max(float(np.std(splits['val'][0])), 1e-12):
    problem = 'constant predictions'
  if val['log_loss'] >= 0.99 * val['baseline_log_loss']:
    problem = ' and '.join(filter(None, [problem, 'no better than the training base rate']))
  described = (
    f'val log-loss {val["log_loss"]:.4g} vs {val["baseline_log_loss"]:.4g} for the training base rate '
    f'({rate:.3g}); ROC-AUC {val["roc_auc"]:.3g}'
  )
  metrics['guard'] = {
    'learned': not problem,
    'problem': problem,
    'training_base_rate': rate,
    'verdict': f'LEARNED NOTHING ({problem}): {described}' if problem else f'learned: {described}',
  }


def head_scaling(scaling, y_train: np.ndarray, head: str, where: str):
  """A run's target scaling as its output `head` needs it: a hurdle's (targets zero or positive, checked) never
  shifts."""
  if head != 'hurdle':
    return scaling
  heads.check_targets('hurdle', y_train, where)
  return dataclasses.replace(scaling, shift=0.0)


def score_outputs(
  task: str, parts: dict, val: heads.Outputs, test: heads.Outputs, calibration_rows: heads.Outputs | None = None
) -> tuple[dict, dict, np.ndarray]:
  """(metrics, meta.json's entries, test predictions [K, N]) of a run's outputs, whatever its head.

  A hurdle's rule is chosen on validation; a mean-variance head's own std (the members' mixture) is calibrated
  instead of the members' spread, on the rows set apart for it (`calibration_rows`, parts['calibration']) when
  there are some, else on validation. metrics['head'] says what the head gave.
  """
  rule, by_rule = heads.choose_rule(val, parts['val'].y)
  val_KxN, test_KxN = val.prediction(rule), test.prediction(rule)
  fitted_on = calibration_rows or val
  stds = (fitted_on.spread(), test.spread()) if val.own_std else None
  calibration_set = (parts['calibration'].y, calibration_rows.prediction(rule)) if calibration_rows else None
  metrics, calibrated = score_run(task, parts, val_KxN, test_KxN, stds, calibration_set)
  if val.head != 'point':
    metrics['head'] = heads.summary(test, parts['test'].y, rule, by_rule)
  return metrics, {**calibrated, **heads.meta(rule)}, test_KxN


def score_run(
  task: str, parts: dict, val_KxN: np.ndarray, test_KxN: np.ndarray, stds=None, calibration_set=None
) -> tuple[dict, dict]:
  """(metrics.json's scores of the members and their mean with the guard's verdict, meta.json's calibration).

  Regression: MAE, RMSE, R^2 against the training median, and the spread calibrated on validation (with 2
  or more members; `stds`, (calibration rows [N], test [N]): a model's own std instead), or on
  `calibration_set` (targets [N], predictions [K, N]) when given. Classification: the members' mean
  probability scored with ROC-AUC, accuracy and log-loss against the training base rate.
  """
  y_train, val, test = parts['train'].y, parts['val'].y, parts['test'].y
  if task == 'classification':
    val_p, test_p = output({'target': {'task': task}}, val_KxN), output({'target': {'task': task}}, test_KxN)
    metrics = {
      'test': classification_metrics(test, test_p.mean(axis=0)),
      'val': classification_metrics(val, val_p.mean(axis=0)),
      'test_members': [classification_metrics(test, p) for p in test_p],
    }
    _judge_classifier(metrics, y_train, {'val': (val, val_p.mean(axis=0)), 'test': (test, test_p.mean(axis=0))})
    return metrics, {}
  metrics = {
    'test': regression_metrics(test, test_KxN.mean(axis=0)),
    'val': regression_metrics(val, val_KxN.mean(axis=0)),
    'test_members': [regression_metrics(test, p) for p in test_KxN],
  }
  guard.record(metrics, y_train, {'val': (val, val_KxN.mean(axis=0)), 'test': (test, test_KxN.mean(axis=0))})
  calibration_y, calibration_KxN = calibration_set or (val, val_KxN)
  calibrated, coverage = calibration.of_run(calibration_y, calibration_KxN, test, test_KxN, stds)  # {}: one member
  if coverage:
    coverage['calibration']['fitted_on'] = 'calibration' if calibration_set else 'val'
  return {**metrics, **coverage}, calibrated


def describe(scores: dict) -> str:
  """One line of a split's scores for the log."""
  if 'roc_auc' in scores:
    keys = ('roc_auc', 'accuracy', 'log_loss')
    return '  '.join(f'{k} {scores[k]:.4f}' for k in keys) + f'  (n={scores["n"]})'
  return '  '.join(f'{k.upper() if k != "r2" else "R2"} {scores[k]:.4f}' for k in ('mae', 'rmse', 'r2')) + (
    f'  (n={scores["n"]})'
  )


def probability_label(meta: dict) -> str:
  """A classifier's column header: 'P(is_metal=1)'."""
  target = meta.get('target') or {}
  name = target.get('name') or (meta.get('dataset') or {}).get('target') or 'class'
  return f'P({name}={target.get("classes", ["0", "1"])[1]})'
