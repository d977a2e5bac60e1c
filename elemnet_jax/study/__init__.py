"""The transfer study: scratch vs fine-tuning vs frozen featurizer vs the pretrained model as is.

For a source (large, DFT) and a target (small, experimental) dataset, trains on nested subsets of
the target's training data and reports test metrics per method, training-set size, fold and seed.
Seeds of one (method, size, fold) are trained together as one ensemble (`fit`). The plan of runs is
made first; finished runs are recorded in results.json at once, so an interrupted study resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
from absl import logging

from elemnet_jax import data, inputs, machine, ridge, run, targets, tasks, transfer, workdir
from elemnet_jax.calibration import study_entry
from elemnet_jax.configs.schema import FeaturizerConfig
from elemnet_jax.configs.study_schema import StudyConfig
from elemnet_jax.errors import UserError
from elemnet_jax.metrics import calibration, classification_metrics
from elemnet_jax.models import config_from_dict
from elemnet_jax.predict import evaluate
from elemnet_jax.study import choice
from elemnet_jax.study.plan import (
  Arm,
  Fold,
  Timer,
  head_config,
  member_rows,
  network_arms,
  result_row,
  standardise_features,
  subset_sizes,
  training_order,
  validation_key,
  validation_rotation,
)
from elemnet_jax.study.results import Results, _key, _previous_runs
from elemnet_jax.study.sources import Source, leakage_record, load_target, named_sources, pretrain_source, read_source
from elemnet_jax.training import timing, train
from elemnet_jax.training.fit import fit_options
from elemnet_jax.training.retrain import retrain_with_validation

LAYOUT = workdir.Layout(
  kind='study',
  config='study_config.json',
  progress='results.json',
  record='results.json',
  outputs=('results.md', 'learning_curve.png', 'learning_curve.svg', 'parity.png', 'parity.svg', 'log.txt')
  + ('results.json', 'study_config.json'),
)


@dataclasses.dataclass
class FoldData:
  """One fold's arrays: the pool (validation rows, then training rows) and what each member trains and stops on."""

  fold: Fold
  x: dict[str, np.ndarray]  # scaled features per part
  scaling: data.TargetScaling
  pool_x: np.ndarray
  pool_targets: np.ndarray  # in target units
  member_train: np.ndarray  # [members, n_train] pool rows
  member_val: np.ndarray  # [members, n_val] pool rows
  order: np.ndarray  # training rows in the order they enter the nested subsets
  features: dict[str, np.ndarray] | None  # hidden activations of source member 0, or None


class Study:
  """A study being run: its source, target folds, seeds and results."""

  def __init__(self, config: StudyConfig, source: Source, featurizer, folds: list[Fold], results: Results):
    self.config, self.study, self.target = config, config.study, config.target
    self.source, self.featurizer, self.folds, self.results = source, featurizer, folds, results
    self.seeds = [config.seed + k for k in range(config.study.seeds)]
    self.pretrained = transfer.source_members(source.params, len(self.seeds))  # seed k from member k mod K
    self.target_train, self.scratch_train = config.target.train, config.study.scratch_train
    self.arms = network_arms(config.study)
    self.task = config.target.dataset.task
    self.new_head = self.task != 'regression' or targets.source_outputs(source.meta) != 1  # drawn afresh
    self.timer = Timer(self._count_runs())

  def _count_runs(self) -> int:
    done, methods = self.results.done(), self.study.methods
    arms = self.arms + ([Arm('featurizer', layer=self.study.featurizer_layer)] if 'featurizer' in methods else [])
    keys = [_key(arm, f, fold.index) for fold in self.folds for f in self.study.train_fractions for arm in arms]
    keys += [_key(Arm('direct'), 0.0, fold.index) for fold in self.folds if 'direct' in methods]
    return sum(key not in done for key in keys)

  def fold_data(self, fold: Fold) -> FoldData:
    parts = {'train': fold.train, 'val': fold.val, 'test': fold.test}
    features = data.FeatureScaling.from_dict(self.source.meta['feature_scaling'])  # the source model's
    scaling = inputs.fit_target_scaling(
      fold.train.y, 'none', self.target.transfer, self.source.meta, self.target.dataset
    )
    made = inputs.make_inputs(parts, self.featurizer.description(), features, scaling)
    rotated = len(self.seeds) if self.study.rotate_validation else 1
    rotation_rng = np.random.default_rng(self.target.dataset.split_seed + 200 + fold.index)
    member_train, member_val = validation_rotation(len(fold.train), len(fold.val), rotated, rotation_rng)
    features = None
    if 'featurizer' in self.study.methods or 'head' in self.study.methods:
      hidden = train.make_predict(self.source.model, hidden_layer=self.study.featurizer_layer)
      features = {name: train.predict_in_batches(hidden, self.source.params, made.x[name])[0] for name in made.x}
      features['pool'] = np.concatenate([features['val'], features['train']])
    return FoldData(
      fold,
      made.x,
      made.target_scaling,
      np.concatenate([made.x['val'], made.x['train']]),
      np.concatenate([fold.val.y, fold.train.y]),
      member_train,
      member_val,
      training_order(len(fold.train), self.target.dataset.split_seed, fold.index),
      features,
    )

  def run(self) -> None:
    done = self.results.done()
    for fold in self.folds:
      if fold.index == 0:
        self.results.parity['target'] = [float(v) for v in fold.test.y]
      arrays = self.fold_data(fold)
      if 'direct' in self.study.methods and _key(Arm('direct'), 0.0, fold.index) not in done:
        self._timed(Arm('direct'), 0.0, fold, self.run_direct, arrays)
      sizes = subset_sizes(len(fold.train), self.study.train_fractions)
      for fraction, size in zip(self.study.train_fractions, sizes):
        if size < self.study.min_train_size:
          raise UserError(
            f'target training set of {size} examples (fraction {fraction}) is smaller than '
            f'study.min_train_size={self.study.min_train_size}'
          )
        index = np.sort(arrays.order[:size])  # nested subsets: 10% is inside 25%, and so on
        scaling = self._scaling(arrays, index)
        for arm in self.arms:
          if _key(arm, fraction, fold.index) not in done:
            self._timed(arm, fraction, fold, self.run_network, arm, arrays, fraction, index, scaling)
        featurizer_arm = Arm('featurizer', layer=self.study.featurizer_layer)
        if 'featurizer' in self.study.methods and _key(featurizer_arm, fraction, fold.index) not in done:
          self._timed(featurizer_arm, fraction, fold, self.run_ridge, arrays, fraction, index)

  def _timed(self, arm: Arm, fraction: float, fold: Fold, work, *args) -> None:
    self.timer.begin(f'{arm.label}, {fraction:.0%} of fold {fold.index} training rows')
    self.results.record(work(*args))
    self.timer.end()

  def _scaling(self, arrays: FoldData, index: np.ndarray) -> data.TargetScaling:
    """The target units of one size: the fold's, or with target_scaling='refit' this size's own rows' statistics."""
    if self.target.transfer.target_scaling != 'refit':
      return arrays.scaling
    # member 0's rows; rotated members train on other rows of the same pool and share them; retraining
    # adds the validation rows but keeps these statistics, as the head network keeps its feature scaling
    rows = arrays.member_train[:, index][0]
    return inputs.fit_target_scaling(
      arrays.pool_targets[rows], 'none', self.target.transfer, self.source.meta, self.target.dataset
    )

  def run_direct(self, arrays: FoldData) -> list[dict]:
    """The source ensemble applied as is, scored as its own test MAE was."""
    scaling = data.TargetScaling(**self.source.meta['target_scaling'])
    passes = self.source.meta.get('eval_dropout_passes', 0)
    prediction = evaluate(self.source.model, self.source.params, arrays.x['test'], scaling, passes).mean(axis=0)
    return [result_row(Arm('direct'), 0.0, 0, arrays.fold, None, prediction, 0.0)]

  def run_ridge(self, arrays: FoldData, fraction: float, index: np.ndarray) -> list[dict]:
    """Ridge on the frozen source's activations, in target units (ridge with an intercept needs no scaling)."""
    fold, features, tic = arrays.fold, arrays.features, time.perf_counter()
    weights, intercept, alpha = ridge.ridge_select(
      (features['train'][index], fold.train.y[index]), (features['val'], fold.val.y)
    )
    val_prediction = features['val'] @ weights + intercept  # alpha's criterion, before any refit
    size = len(index)
    if self.study.retrain_with_validation:  # the chosen alpha, fitted again with the validation rows
      weights, intercept = ridge.ridge_fit(
        np.concatenate([features['val'], features['train'][index]]),
        np.concatenate([fold.val.y, fold.train.y[index]]),
        alpha,
      )
      size += len(fold.val)
    prediction = features['test'] @ weights + intercept
    logging.info('featurizer ridge alpha %.0e: test MAE %.4f', alpha, np.abs(prediction - fold.test.y).mean())
    arm = Arm('featurizer', layer=self.study.featurizer_layer)
    row = result_row(arm, fraction, size, fold, None, prediction, time.perf_counter() - tic)
    return [{**row, 'val_mae': round(float(np.abs(val_prediction - fold.val.y).mean()), 6)}]  # alpha's criterion

  def _network(self, arm: Arm, arrays: FoldData, train_rows: np.ndarray):
    """(inputs of the pool, of test, network config, training settings, initial params, freeze rules) of one arm."""
    if arm.method == 'head':  # a fresh small network on the frozen source model's activations
      features = arrays.features
      scaled = [standardise_features({'pool': features['pool'], 'test': features['test']}, r) for r in train_rows]
      pool_in, test_in = (np.stack([member[name] for member in scaled]) for name in ('pool', 'test'))
      test_in = test_in[0] if len(test_in) == 1 else test_in  # [N, F], or [members, N, F] each its own
      return pool_in, test_in, head_config(self.study, self.source.model_config), self.scratch_train, None, None
    model_config = targets.with_outputs(self.source.model_config, 1)  # a source of several targets: one output
    if arm.method == 'finetune':
      rules = transfer.layer_rules(arm.freeze_layers, model_config)
      return arrays.pool_x, arrays.x['test'], model_config, self.target_train, self.pretrained, rules
    return arrays.pool_x, arrays.x['test'], model_config, self.scratch_train, None, None

  def _best_rate(self, arm: Arm, arm_config: tuple, n_train: int, scaling, train_data, val_data, name: str):
    """Trains the seeds at each of `study.learning_rates` (or the training config's one rate).

    Returns (rate, start, members, best params, progress, fit options) of the rate with the lowest
    mean validation MAE, and each rate's mean validation MAE (inf where training diverged).
    """
    net_config, train_config, init, rules, width = arm_config
    rates = self.study.learning_rates or (train_config.learning_rate,)
    scores, kept = {}, None
    for rate in rates:
      config = dataclasses.replace(train_config, learning_rate=rate)
      start = functools.partial(
        run.build,
        net_config,
        config,
        width,
        seeds=self.seeds,
        init_params=init,
        rules=rules,
        reinit_head=arm.method == 'finetune' and (self.target.transfer.reinit_head or self.new_head),
      )
      members, options = start(n_train), fit_options(config, scaling.scale, n_train)
      try:
        fitted = run.fit(members, train_data, val_data, options, name=f'{name}/lr={rate:g}', phases=self.results.phases)
        _, best, progress = fitted
      except train.TrainingDiverged as error:
        if len(rates) == 1:
          raise
        logging.warning('%s; the other rates of study.learning_rates go on', error)
        scores[rate] = float('inf')
        continue
      scores[rate] = float(np.mean(progress.best_val))
      if kept is None or scores[rate] < scores[kept[0]]:
        kept = (rate, start, members, best, progress, options)  # only the best so far is held
    if kept is None:
      raise UserError(f'{name}: training diverged at every rate of --config.study.learning_rates={rates}')
    return kept, scores

  def run_network(self, arm: Arm, arrays: FoldData, fraction: float, index, scaling) -> list[dict]:
    """Trains the seeds of one arm together on one training-set size; a row per seed and one for their mean.

    With `study.learning_rates`, the seeds train at each rate and the rate with the lowest mean
    validation MAE is kept; `seconds` counts the training at every rate.
    """
    fold, tic = arrays.fold, time.perf_counter()
    train_rows = arrays.member_train[:, index]  # [members, size] pool rows
    pool_in, test_in, net_config, train_config, init, rules = self._network(arm, arrays, train_rows)
    pool_y = scaling.apply(arrays.pool_targets)
    val_in = member_rows(pool_in, arrays.member_val)
    train_data = (member_rows(pool_in, train_rows), member_rows(pool_y, train_rows))
    val_data = (val_in, member_rows(pool_y, arrays.member_val))
    name = f'{arm.label}/n={len(index)}/fold{fold.index}'
    arm_config = (net_config, train_config, init, rules, pool_in.shape[-1])
    (rate, start, members, best, progress, options), scores = self._best_rate(
      arm, arm_config, len(index), scaling, train_data, val_data, name
    )
    passes = train_config.eval_dropout_passes  # test and validation scored as early stopping scored
    ensemble_val = val_members = None  # with rotated validation rows there is no shared set to score
    if len(arrays.member_val) == 1:  # [K, N], also for the calibration; a classifier's probabilities
      val_members = self._outputs(evaluate(members.model, best, val_in, scaling, passes))
      ensemble_val = self._ensemble_val(fold.val.y, val_members.mean(axis=0))
    trained_rows = train_rows
    if self.study.retrain_with_validation:  # the same start, its validation rows added, the epochs they chose
      trained_rows = np.concatenate([arrays.member_val, train_rows], axis=1)
      data_rows = (member_rows(pool_in, trained_rows), member_rows(pool_y, trained_rows))
      phases = self.results.phases
      best = retrain_with_validation(start, data_rows, progress.best_epoch, options, name=name, phases=phases)
    seconds = (time.perf_counter() - tic) / len(self.seeds)
    predictions = self._outputs(evaluate(members.model, best, test_in, scaling, passes))
    size, task, val_key = trained_rows.shape[1], self.task, validation_key(self.task)
    if fold.index == 0 and fraction == max(self.study.train_fractions) and task == 'regression':  # the parity plot
      self.results.parity['predictions'][arm.label] = [float(v) for v in predictions.mean(axis=0)]
      self.results.parity['val_mae'][arm.label] = float(np.mean(progress.best_val))
    chosen = {'learning_rate': rate}
    if len(scores) > 1:  # what each rate scored on validation, in target units (None: diverged)
      chosen[f'{val_key}_by_rate'] = {
        repr(float(r)): round(v * scaling.scale, 6) if np.isfinite(v) else None for r, v in scores.items()
      }
    rows = [
      {
        **result_row(arm, fraction, size, fold, seed, p, seconds, task),
        val_key: round(val * scaling.scale, 6),  # early stopping's criterion, in target units
        'best_epoch': epoch,  # what early stopping kept (and retraining ran for)
        **chosen,
      }
      for seed, p, val, epoch in zip(self.seeds, predictions, progress.best_val, progress.best_epoch)
    ]
    if len(self.seeds) > 1:
      mean, std = predictions.mean(axis=0), predictions.std(axis=0)
      ensemble = result_row(arm, fraction, size, fold, None, mean, seconds * len(self.seeds), task)
      # How far the seeds' spread can be trusted: raw, and calibrated on the validation rows.
      spread = (
        calibration(fold.test.y, mean, std) | study_entry(fold.val.y, val_members, fold.test.y, predictions)
        if task == 'regression'
        else {}
      )
      rows.append({**ensemble, 'ensemble': True, val_key: ensemble_val, **chosen, **spread})
    return rows

  def _outputs(self, predictions_KxN: np.ndarray) -> np.ndarray:
    """Predictions as scored: a classifier's logits as probabilities of the positive class."""
    return tasks.output({'target': {'task': self.task}}, predictions_KxN)

  def _ensemble_val(self, target: np.ndarray, mean: np.ndarray) -> float:
    """The seeds' mean prediction scored on the shared validation rows: log-loss for a classifier, else MAE."""
    if self.task == 'classification':
      return round(classification_metrics(target, mean)['log_loss'], 6)
    return round(float(np.abs(mean - target).mean()), 6)


def run_study(config: StudyConfig, path: str | Path, overwrite: bool = False) -> list[dict]:
  """Runs (or resumes) the study in `path`; writes results.json, results.md and figures; returns the rows.

  Everything that can be checked is checked before the (long) pretraining starts. With
  `study.choose_source`, one study per source of `study.pretrained` and the source validation prefers.
  """
  if not isinstance(config, StudyConfig):
    raise TypeError(f'a study takes a typed config (elemnet_jax.configs.resolve), not {type(config).__name__}')
  if config.study.choose_source:
    return choice.run_choice(config, path, overwrite, run_study)
  phases, study = timing.Phases(), config.study  # a classifier's networks train with bce (StudyConfig)
  if study.pretrained:
    source_dirs, meta = named_sources(config)
    description = {key: value for key, value in meta['featurizer'].items() if key not in ('width', 'elements')}
    model_config, featurizer_config = config_from_dict(meta['model']), FeaturizerConfig.from_dict(description)
  else:
    if study.exclude_target_from_source:
      config = config.replace({'source.dataset.exclude_from': config.target.dataset.name})
    model_config, featurizer_config = config.source.model, config.source.featurizer
  examples, featurizer, notes, folds = load_target(config, model_config, featurizer_config)
  study_dir = workdir.Workdir(path, LAYOUT, config.to_dict(), overwrite)  # the config as the study records it
  source = read_source(source_dirs) if study.pretrained else pretrain_source(config, study_dir.path, overwrite, phases)
  transfer.refuse_unlearned(source.dirs, study.allow_collapsed_source, 'study.allow_collapsed_source')
  transfer.check_compatible(source.meta, featurizer.description(), ','.join(map(str, source.dirs)))
  if 'direct' in study.methods and targets.source_outputs(source.meta) != 1:
    raise UserError('--config.study.methods: direct applies the source as is, which predicts several targets')
  sources = workdir.digests(source.dirs)
  study_dir.check_sources(sources)
  previous = _previous_runs(study_dir)
  study_dir.start(sources)
  with workdir.log_to(study_dir.path / 'log.txt'):
    leakage = leakage_record(source, examples, config.target.dataset.name, config.data_dir or config.source.data_dir)
    logging.info('leakage control: %s', leakage)
    context = {
      'quantity': notes['target']['quantity'],
      'unit': notes['target']['unit'],
      'source': source.meta['dataset']['name'],
      'target': config.target.dataset.name,
      'task': config.target.dataset.task,
      'machine': machine.describe(),
    }
    results = Results(study_dir.path, study, notes, leakage, sources, context, previous.get('runs', []), phases=phases)
    results.parity = previous.get('parity', results.parity)
    Study(config, source, featurizer, folds, results).run()
    results.report()
    logging.info('time: %s', results.phases.describe())
    results.save(finished=True)  # what a later --overwrite reads: this study is complete
  study_dir.finish()
  return results.runs
