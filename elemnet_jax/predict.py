"""Predictions of finished runs for raw inputs (formulas or SMILES): every input row kept, in order."""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from elemnet_jax import data, featurizers, scoring, tasks, transfer, workdir
from elemnet_jax import targets as several
from elemnet_jax.calibration import Calibration, check_coverage
from elemnet_jax.data import readers
from elemnet_jax.errors import UserError, format_rows, listing
from elemnet_jax.models import heads
from elemnet_jax.training import checkpoint, train


def evaluate_outputs(model, params: Any, x: np.ndarray, target_scaling, dropout_passes: int = 0) -> heads.Outputs:
  """Every member's outputs in target units as the model's head gives them: [K, N] each ([K, N, T] predictions
  of a point head with several targets)."""
  predict = train.make_predict(model, dropout_passes=dropout_passes)
  scaled = train.predict_in_batches(predict, params, x)
  head = getattr(model.config, 'head', 'point')
  if head == 'point':
    return heads.Outputs(head, target_scaling.invert(scaled))
  return heads.decode(head, scaled, target_scaling.shift, target_scaling.scale)


def evaluate(model, params: Any, x: np.ndarray, target_scaling, dropout_passes: int = 0, rule: str = '') -> np.ndarray:
  """Predictions of every member in target units, [K, N] ([K, N, T] with several targets; a hurdle head's by `rule`)."""
  return evaluate_outputs(model, params, x, target_scaling, dropout_passes).prediction(rule)


def property_label(meta: dict, what: str = '') -> str:
  """A column header for a model's predictions: 'formation enthalpy (eV/atom)', 'E_gap std (eV)', 'P(metal=1)'."""
  if tasks.is_classifier(meta):
    return tasks.probability_label(meta) + (f' {what}' if what else '')
  target = meta.get('target') or {}
  name = target.get('quantity') or (meta.get('dataset') or {}).get('target') or 'prediction'
  unit = target.get('unit')
  return f'{name}{" " + what if what else ""}' + (f' ({unit})' if unit else '')


def write_predictions(
  path: Path, inputs: list[str], predictions_KxN: np.ndarray, targets=None, names=None, std=None
) -> None:
  """CSV of input, (target), prediction (member mean) and, with several members or the model's own `std` [N], std.

  Several targets (predictions [K, N, T], their `names`): those columns for each target in turn.
  """
  with workdir.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    members = predictions_KxN.shape[0]
    if predictions_KxN.ndim == 3:
      writer.writerow(['input'] + several.prediction_header(names, targets is not None, members))
      for i, text in enumerate(inputs):
        writer.writerow(
          [text] + several.prediction_cells(predictions_KxN[:, i], None if targets is None else targets[i])
        )
      return
    spread = std is not None or members > 1
    writer.writerow(
      ['input'] + (['target'] if targets is not None else []) + ['prediction'] + (['std'] if spread else [])
    )
    for i, text in enumerate(inputs):
      row = [text] + ([f'{targets[i]:.6g}'] if targets is not None else [])
      row.append(f'{predictions_KxN[:, i].mean():.6g}')
      if spread:
        row.append(f'{predictions_KxN[:, i].std() if std is None else std[i]:.6g}')
      writer.writerow(row)


@dataclasses.dataclass
class Predictions:
  """One entry per input, in order: member mean and std (NaN where invalid), the reason it is invalid, a warning."""

  inputs: list[str]
  mean: np.ndarray  # [N] ([N, T] for several targets)
  std: np.ndarray  # [N] ([N, T])
  members: int
  errors: list[str]  # '' for a valid input
  warnings: list[str]  # '' unless the input lies outside the training data (e.g. an element never seen)
  meta: dict
  calibration: Calibration | None = None  # one model's, fitted on its validation split; None without one
  models: str = ''  # the runs that predicted, comma-separated
  own_std: bool = False  # std is the model's own (a mean-variance head's mixture), not the members' spread

  @property
  def calibrated_std(self) -> np.ndarray:
    """The z-scaled std (NaN without a calibration)."""
    return self.std * (self.calibration.z_scale if self.calibration else np.nan)

  def interval(self, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the split-conformal interval of `coverage` (a share in (0, 1)) around each mean."""
    if self.calibration is None and self.mean.ndim == 2:
      raise UserError(f'--coverage: {self.models or "the model"} predicts several targets, which have no calibration')
    if self.calibration is None:
      raise UserError(f'--coverage: {self.models or "the model"} has no calibration ({NO_CALIBRATION})')
    return self.calibration.interval(self.mean, self.std, check_coverage(coverage))


NO_CALIBRATION = (
  'intervals need one run trained with train.ensemble >= 2 or model.head=mean_variance, which records its '
  'calibration on validation; a single member of another head has no spread'
)


def calibration_of(name: str, meta: dict) -> Calibration | None:
  """The calibration saved with a model (meta.json), or None; a one-line error when it is malformed."""
  if 'calibration' not in meta:
    return None
  try:
    return Calibration.from_dict(meta['calibration'])
  except ValueError as error:
    raise UserError(f'{name}/model/meta.json: corrupted model metadata ({error})') from None


def _load_models(workdirs: list[str]) -> list[tuple[Any, Any, dict]]:
  workdirs = transfer.source_workdirs(','.join(workdirs), '--models')  # none, or one named twice: refused
  loaded = [checkpoint.load_trained(name) for name in workdirs]
  description = loaded[0][2]['featurizer']
  for name, (_, _, meta) in zip(workdirs[1:], loaded[1:]):
    if meta['featurizer'] != description:
      raise UserError(f'{name}: uses another featurizer than {workdirs[0]}; predict with one kind')
    if tasks.is_classifier(meta) != tasks.is_classifier(loaded[0][2]):
      raise UserError(f'{name}: a classifier and a regression model cannot predict together ({workdirs[0]})')
    if (meta.get('target') or {}).get('names') != (loaded[0][2].get('target') or {}).get('names'):
      raise UserError(f'{name}: predicts other targets than {workdirs[0]}; predict with models of the same targets')
    own_std = [m['model'].get('head') == 'mean_variance' for m in (meta, loaded[0][2])]
    if own_std[0] != own_std[1]:
      raise UserError(f'{name}: a mean-variance model and one without its own std cannot predict together')
  return loaded


def _featurizer_of(name: str, description: dict):
  """The featurizer a saved model reads with; refused when this code builds its features otherwise."""
  try:
    featurizer = featurizers.build(description)
  except (ValueError, TypeError) as error:
    raise UserError(f'{name}: {error}') from None
  # A property the code counts as defining the features must be as saved; an option that never
  # changes them (estate's workers) need not.
  built = featurizer.description()
  differing = sorted(key for key in built if built[key] != description.get(key))
  if differing:
    raise UserError(
      f'{name}: the model reads features from {transfer.describe(description)}, but this code builds '
      f'them otherwise (different {", ".join(differing)}); predict with the version it was trained with'
    )
  return featurizer


def _domain_warnings(featurizer, x: np.ndarray, metas: list[dict]) -> list[str]:
  """Per input: the feature columns it uses that no model saw in its training data ('' if none)."""
  seen = [set(meta['seen_columns']) for meta in metas if 'seen_columns' in meta]
  if not seen:
    return [''] * len(x)
  known = set.intersection(*seen)
  names = getattr(featurizer, 'column_names', lambda: [f'column {i}' for i in range(x.shape[1])])()
  warnings = []
  for row in x:
    unseen = [names[j] for j in np.flatnonzero(row) if j not in known]
    warnings.append(f'outside the training data: {", ".join(unseen)} never seen in training' if unseen else '')
  return warnings


BLANK_WARNING = 'all features are zero: the model predicts the same for every such input'


def load_models(workdirs: list[str]) -> list[tuple[Any, Any, dict]]:
  """(model, parameters [K, ...], meta) of each finished run, read once; they must share a featurizer."""
  return _load_models(workdirs)


def predict_inputs(workdirs: list[str], inputs: list[str], loaded: list | None = None) -> Predictions:
  """Every member of every model on `inputs`; featurized once (every model must use the same featurizer).

  `loaded`: the runs as `load_models` gave them, so that repeated calls read no checkpoint again.
  """
  loaded = loaded or _load_models(workdirs)
  featurizer = _featurizer_of(workdirs[0], loaded[0][2]['featurizer'])
  x, _, invalid = featurizer.featurize(inputs)
  errors = [''] * len(inputs)
  for i, reason in invalid:
    errors[i] = reason
  kept = np.array([i for i, error in enumerate(errors) if not error], np.int64)
  names = (loaded[0][2].get('target') or {}).get('names')  # several targets: a column of each
  shape = (len(inputs), len(names)) if names else (len(inputs),)
  mean, std = np.full(shape, np.nan), np.full(shape, np.nan)
  members = sum(meta['members'] for _, _, meta in loaded)
  if len(kept):
    outputs = [
      evaluate_outputs(
        model,
        params,
        data.FeatureScaling.from_dict(meta['feature_scaling'])(x[kept]),
        data.TargetScaling(**meta['target_scaling']),
        meta.get('eval_dropout_passes', 0),
      )
      for model, params, meta in loaded
    ]
    # a classifier's probabilities; a hurdle's prediction by the rule its validation chose
    predictions = np.concatenate(
      [tasks.output(meta, out.prediction(meta.get('hurdle_rule', ''))) for out, (_, _, meta) in zip(outputs, loaded)]
    )
    mean[kept], std[kept] = predictions.mean(axis=0), predictions.std(axis=0)
    if outputs[0].own_std:  # the mixture of the members' Gaussians
      mean[kept], std[kept] = heads.mixture(predictions, np.concatenate([out.std for out in outputs]))
  warnings = _domain_warnings(featurizer, x, [meta for _, _, meta in loaded])
  valid = [text if not error else '' for text, error in zip(inputs, errors)]
  unseen = getattr(featurizer, 'unseen_atoms', lambda texts: [''] * len(texts))(valid)  # E-state: untyped atoms
  warnings = [
    '; '.join(filter(None, [warning, BLANK_WARNING if blank else '', atoms]))
    for warning, blank, atoms in zip(warnings, featurizers.blank_rows(featurizer, x), unseen)
  ]
  warnings = [warning if not error else '' for warning, error in zip(warnings, errors)]
  calibrated = calibration_of(workdirs[0], loaded[0][2]) if len(loaded) == 1 else None  # a joined ensemble: none
  names = ','.join(map(str, workdirs))
  own_std = loaded[0][2]['model'].get('head') == 'mean_variance'
  return Predictions(list(inputs), mean, std, members, errors, warnings, loaded[0][2], calibrated, names, own_std)


def read_inputs(input_csv: str | None, column: str, inputs: list[str] | None):
  """(inputs, 1-based row numbers, header and cells of the input CSV or None, where they came from)."""
  if (input_csv is None) == (inputs is None):
    raise UserError('give exactly one of --input=CSV or --formulas=A,B,...')
  if input_csv is None:
    return list(inputs), list(range(1, len(inputs) + 1)), None, 'command line'
  if not Path(input_csv).exists():
    raise UserError(f'{input_csv}: no such file')
  table = readers.read_csv(Path(input_csv), column, column, keep_cells=True)
  return table.inputs, table.rows, (table.header, table.cells), input_csv


def predict_file(
  models: list[str],
  *,
  input_csv: str | None = None,
  column: str = 'formula',
  inputs: list[str] | None = None,
  output: str | None = None,
  fail_on_invalid: bool = False,
  overwrite: bool = False,
  coverage: float | None = None,
  target: str | None = None,
) -> Predictions:
  """Predicts every input row and writes a CSV (to `output`, else standard output).

  With `target` (a column of `input_csv` holding known values) it also logs how the predictions score
  against that column (`elemnet_jax.scoring`).

  Columns: the input CSV's own (or `input`), then the prediction and std with the property and its
  unit in their headers, the calibrated std where the model has a calibration, the lower and upper
  ends of the `coverage` interval when asked, then `error` (why an input has no prediction) and `warning`.
  """
  if coverage is not None:
    try:
      coverage = check_coverage(coverage)
    except ValueError as error:
      raise UserError(str(error)) from None
  output = None if output == '-' else output  # standard output
  if output and workdir.replaces(output) and not overwrite:
    raise UserError(f'{output}: already exists; pass --overwrite to replace it')
  texts, rows, table, where = read_inputs(input_csv, column, inputs)
  if not texts:
    raise UserError(f'{where}: no inputs to predict')
  if target is not None and table is None:
    raise UserError(f'--target={target}: give the known values as a column of an --input CSV')
  known_texts = None if target is None else scoring.column_cells(*table, target, where)
  result = predict_inputs(models, texts)
  if known_texts is not None:  # scored before anything is written: a bad cell leaves no output behind
    known = scoring.known_values(known_texts, rows, result.meta, target, where)
    scores = scoring.score(result.meta, result.mean, known, result.errors)
  invalid = [(rows[i], texts[i], error) for i, error in enumerate(result.errors) if error]
  if invalid and fail_on_invalid:
    raise UserError(format_rows(invalid, 'input', where, 'fix them, or drop --fail_on_invalid to list their errors'))
  header, cells = table if table else (['input'], [[text] for text in texts])
  if result.mean.ndim == 2:  # several targets
    header, lines = _several_rows(result, header, cells, coverage)
  else:
    header, lines = _one_target_rows(result, header, cells, coverage)
  if invalid:
    logging.warning('%d of %d inputs have no prediction (see the error column)', len(invalid), len(texts))
  outside = [f'{texts[i]}' for i, warning in enumerate(result.warnings) if warning]
  if outside:
    logging.warning(
      '%d inputs lie outside the training data (see the warning column): %s',
      len(outside),
      listing(outside, 5),
    )
  if output:
    with workdir.open_for_writing(output) as stream:
      csv.writer(stream).writerows([header] + lines)
    logging.info('wrote %d predictions to %s', len(texts), output)
  else:
    csv.writer(sys.stdout, lineterminator='\n').writerows([header] + lines)
  if known_texts is not None:
    logging.info('%s: %s', result.models, scoring.describe(scores, target, result.members))
  return result


def _one_target_rows(result: Predictions, header: list[str], cells: list[list[str]], coverage) -> tuple[list, list]:
  """(header, rows): the prediction and std, the calibrated std and the interval's ends where asked."""
  columns, names = _spread_columns(result, coverage)
  header = header + [property_label(result.meta), property_label(result.meta, 'std')] + names + ['error', 'warning']
  lines = [
    cell
    + ['' if error else f'{m:.6g}', '' if error or (result.members < 2 and not result.own_std) else f'{s:.6g}']
    + ['' if error else f'{v:.6g}' for v in extra]
    + [error, warning]
    for cell, m, s, extra, error, warning in zip(
      cells, result.mean, result.std, columns, result.errors, result.warnings
    )
  ]
  return header, lines


def _several_rows(result: Predictions, header: list[str], cells: list[list[str]], coverage) -> tuple[list, list]:
  """Several targets: (header, rows) with each target's prediction and std, headed by its name and unit."""
  if coverage is not None:
    result.interval(coverage)  # refused in one line: no calibration
  target = result.meta.get('target') or {}
  unit = f' ({target["unit"]})' if target.get('unit') else ''
  header = header + [label for name in target['names'] for label in (f'{name}{unit}', f'{name} std{unit}')]
  rows = []
  for cell, mean, std, error, warning in zip(cells, result.mean, result.std, result.errors, result.warnings):
    values = []
    for m, s in zip(mean, std):
      values += ['' if error else f'{m:.6g}', '' if error or result.members < 2 else f'{s:.6g}']
    rows.append(cell + values + [error, warning])
  return header + ['error', 'warning'], rows


def _spread_columns(result: Predictions, coverage: float | None) -> tuple[np.ndarray, list[str]]:
  """Per input the calibrated std (where calibrated) and the interval's ends (when asked), and their headers."""
  columns, names = [], []
  if result.calibration is not None:
    columns.append(result.calibrated_std)
    names.append(property_label(result.meta, 'calibrated std'))
  if coverage is not None:
    columns += list(result.interval(coverage))
    names += [property_label(result.meta, f'lower {coverage:g}'), property_label(result.meta, f'upper {coverage:g}')]
  return np.stack(columns, axis=1) if columns else np.zeros((len(result.mean), 0)), names


def fingerprint(models: list[str], inputs: list[str], layer: int = 0, member: int = 0) -> tuple[np.ndarray, list[str]]:
  """Activations after hidden layer `layer` (1-based; 0: the last) of one member, [N, width]; NaN rows where invalid.

  Returns the features and the reason each input is invalid ('' where valid).
  """
  if len(models) != 1:
    raise UserError(f'--models={",".join(models)}: name one finished run; its activations are exported')
  model, params, meta = _load_models(models)[0]
  sizes = model.config.hidden_sizes()
  hidden = layer or len(sizes)
  if not 1 <= hidden <= len(sizes):
    raise UserError(f'--layer={layer}: the hidden layers of {models[0]} are 1..{len(sizes)}')
  if not 0 <= member < meta['members']:
    raise UserError(f'--member={member}: {models[0]} has members 0..{meta["members"] - 1}')
  featurizer = _featurizer_of(models[0], meta['featurizer'])
  x, _, invalid = featurizer.featurize(inputs)
  errors = [''] * len(inputs)
  for i, reason in invalid:
    errors[i] = reason
  kept = np.array([i for i, error in enumerate(errors) if not error], np.int64)
  features = np.full((len(inputs), sizes[hidden - 1]), np.nan, np.float32)
  if len(kept):
    one = jax.tree.map(lambda a: a[member : member + 1], params)  # keeps a member axis of one
    scaled = data.FeatureScaling.from_dict(meta['feature_scaling'])(x[kept])
    features[kept] = train.predict_in_batches(train.make_predict(model, hidden_layer=hidden), one, scaled)[0]
  return features, errors


def write_fingerprint(path: str | os.PathLike, inputs: list[str], features: np.ndarray, errors: list[str]) -> None:
  """`.npy`: the [N, width] array (NaN rows where invalid); else a CSV of input, h1..hW, error."""
  path = Path(path)
  if path.suffix == '.npy':
    with workdir.open_for_writing(path, 'wb') as stream:
      np.save(stream, features)
    return
  with workdir.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    writer.writerow(['input'] + [f'h{j + 1}' for j in range(features.shape[1])] + ['error'])
    for text, row, error in zip(inputs, features, errors):
      writer.writerow([text] + ([''] * len(row) if error else [f'{v:.6g}' for v in row]) + [error])
