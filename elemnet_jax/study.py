"""The transfer study: scratch vs fine-tuning vs frozen featurizer vs the pretrained model as is.

For a source (large, DFT) and a target (small, experimental) dataset, trains on nested subsets of
the target's training data and reports test metrics per method, training-set size, fold and seed.
Seeds of one (method, size, fold) are trained together as one vmapped ensemble.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from elemnet_jax import atomic, data, experiment, ridge, train, transfer
from elemnet_jax.errors import UserError
from elemnet_jax.metrics import regression_metrics
from elemnet_jax.model import ElemNetConfig

METHODS = ('scratch', 'finetune', 'featurizer', 'head', 'direct')  # featurizer: ridge; head: a small network


@dataclasses.dataclass
class Fold:
  """One held-out test set and the training/validation data around it (unscaled)."""

  index: int
  train: data.Examples
  val: data.Examples
  test: data.Examples


def make_folds(
  examples: data.Examples,
  folds: int,
  split: tuple[float, float, float],
  seed: int,
  val_fraction: float,
  dataset: str = 'dataset',
) -> list[Fold]:
  """k-fold cross-validation (folds >= 2), or the one fixed split given by `split` (folds = 0)."""
  rng = np.random.default_rng(seed)
  n = len(examples)
  if folds == 0:
    labels = data.assign_splits(examples, split, seed)
    parts = data.split_examples(examples, labels, dataset=dataset)
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


def validation_rotation(
  n_train: int, n_val: int, members: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
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


def _member_rows(pool: np.ndarray, rows_MxN: np.ndarray) -> np.ndarray:
  """Rows of a pool shared by the members ([P, ...]) or each member's own ([M, P, F]); no member axis for one."""
  taken = pool[np.arange(len(rows_MxN))[:, None], rows_MxN] if pool.ndim == 3 else pool[rows_MxN]
  return taken[0] if len(rows_MxN) == 1 else taken


def subset_sizes(n_train: int, fractions) -> list[int]:
  return [max(1, round(f * n_train)) for f in fractions]


def training_order(n_train: int, split_seed: int, fold_index: int) -> np.ndarray:
  """The order in which a fold's training rows enter the nested subsets: size n trains on the first n."""
  return np.random.default_rng(split_seed + 100 + fold_index).permutation(n_train)


def _runs_key(row: dict) -> tuple:
  return (row['method'], row['freeze_layers'], row['train_fraction'], row['fold'])


def check_study_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for a study config that cannot run; nothing is read or trained."""
  study, source, target = config.study, config.source, config.target
  if not study.methods:
    raise UserError(f'--config.study.methods is empty; choose from {METHODS}')
  for method in study.methods:
    if method not in METHODS:
      raise UserError(f'--config.study.methods: unknown method {method!r}; choose from {METHODS}')
  if study.seeds < 1:
    raise UserError(f'--config.study.seeds={study.seeds}: must be at least 1')
  if not 0 < study.val_fraction < 1:
    raise UserError(
      f'--config.study.val_fraction={study.val_fraction}: give the share of all examples held out for '
      'validation under cross-validation, between 0 and 1 (exclusive)'
    )
  if study.rotate_validation and study.seeds < 2:
    raise UserError(
      '--config.study.rotate_validation=True needs --config.study.seeds >= 2: '
      "the first seed keeps the split's own validation rows, so with one seed nothing rotates"
    )
  if study.rotate_validation and not {'scratch', 'finetune', 'head'} & set(study.methods):
    raise UserError(
      '--config.study.rotate_validation=True rotates the seeds of scratch, finetune and head; '
      f'--config.study.methods={tuple(study.methods)} has none of them'
    )
  if study.retrain_with_validation and not {'scratch', 'finetune', 'head', 'featurizer'} & set(study.methods):
    raise UserError(
      '--config.study.retrain_with_validation=True retrains scratch, finetune, head and featurizer; '
      f'--config.study.methods={tuple(study.methods)} has none of them'
    )
  for where, train_config in (
    ('source.train', source.train),
    ('target.train', target.train),
    ('study.scratch_train', study.scratch_train),
  ):
    experiment.check_train_config(train_config, where)
  for where, train_config in (('target.train', target.train), ('study.scratch_train', study.scratch_train)):
    if train_config.get('retrain_with_validation', False):
      raise UserError(
        f'--config.{where}.retrain_with_validation=True: a study retrains its networks and ridge with '
        '--config.study.retrain_with_validation=True'
      )
  experiment.check_dataset(target.dataset, 'target.dataset')
  experiment.check_seed(config.seed, count=study.seeds)
  experiment.check_transfer_config(target.transfer, 'target.transfer')
  for field in ('methods', 'freeze_layers', 'train_fractions'):  # a repeat would count its runs twice in a cell
    values = tuple(study[field])
    if len(set(values)) != len(values):
      raise UserError(f'--config.study.{field}={values}: name each value once')
  if not all(0 < f <= 1 for f in study.train_fractions):
    raise UserError(f'--config.study.train_fractions={tuple(study.train_fractions)}: each must be in (0, 1]')
  widths = study.get('head_widths')
  if 'head' in study.methods and widths is None:
    raise UserError("--config.study.methods has 'head': set --config.study.head_widths, e.g. (64, 32)")
  if widths is not None and not (
    widths and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
  ):
    raise UserError(f'--config.study.head_widths={tuple(widths)}: give positive integer layer widths')


def check_study_depths(study: ml_collections.ConfigDict, model_config: ElemNetConfig) -> None:
  """Raises UserError unless the freeze depths and the featurizer layer exist in the source model."""
  for depth in study.freeze_layers:
    transfer.layer_rules(depth, model_config)
  if not 1 <= study.featurizer_layer <= len(model_config.widths):
    raise UserError(
      f'--config.study.featurizer_layer={study.featurizer_layer}: the hidden layers are 1..{len(model_config.widths)}'
    )


def head_config(study: ml_collections.ConfigDict, model_config: ElemNetConfig) -> ElemNetConfig:
  """The small network trained on frozen hidden activations: `study.head_widths`, no dropout."""
  return ElemNetConfig(
    widths=tuple(study.head_widths),
    dropout_after=(),
    dropout_rates=(),
    use_dropout=False,
    activation=model_config.activation,
  )


def standardise_features(features: dict[str, np.ndarray], train_index: np.ndarray) -> dict[str, np.ndarray]:
  """Every part scaled by the mean and std of features['pool'][train_index]; constant (dead) units stay 0."""
  scaling = data.FeatureScaling.fit(features['pool'][train_index], drop_constant=False, standardize=True)
  return {name: scaling(value) for name, value in features.items()}


def read_sources(source_dirs: list[Path]) -> tuple:
  """(model, parameters [K, ...], meta, metrics per run, test MAE of the ensemble) of finished runs.

  Several runs share a test split (`experiment.read_source_meta` checks their data and split
  settings), so the ensemble's test MAE scores their test predictions weighted by their members.
  """
  model, params, meta = experiment.load_sources(source_dirs)
  metrics = [experiment.read_run_json(run / 'metrics.json', 'the run did not finish') for run in source_dirs]
  if len(source_dirs) == 1:
    return model, params, meta, metrics, metrics[0]['test']['mae']
  predictions, weights = [], [run['members'] for run in metrics]
  for source_dir in source_dirs:
    with open(source_dir / 'predictions_test.csv', newline='') as stream:
      rows = list(csv.DictReader(stream))
    predictions.append([float(row['prediction']) for row in rows])
  truth = np.array([float(row['target']) for row in rows])
  mean = np.average(np.array(predictions), axis=0, weights=weights)
  return model, params, meta, metrics, regression_metrics(truth, mean)['mae']


# study_config.json last: until the set-aside is complete, the next start still sees the config it replaces
STUDY_OUTPUTS = ('results.json', 'results.md', 'learning_curve.png', 'parity.png', 'study_config.json')


def run_study(config: ml_collections.ConfigDict, workdir: str | Path, overwrite: bool = False) -> list[dict]:
  """Runs (or resumes) the study in `workdir`; writes results.json, results.md and figures.

  Everything that can be checked is checked before the (long) pretraining starts.
  """
  workdir = Path(workdir)
  study, source, target = config.study, config.source, config.target
  check_study_config(config)

  # The source model: finished runs to reuse (several join into one ensemble), or one pretrained
  # here (reused when its config matches).
  if study.pretrained:
    source_dirs = [Path(name) for name in experiment.source_workdirs(study.pretrained)]
    model, source_params, meta, source_metrics, source_test_mae = read_sources(source_dirs)
    for source_dir, metrics in zip(source_dirs, source_metrics):
      excluded_from = metrics['data'].get('excluded', {}).get('from', [])
      if study.exclude_target_from_source and target.dataset.name not in excluded_from:
        raise UserError(
          f'{source_dir}: was not pretrained with {target.dataset.name} removed; drop '
          '--config.study.pretrained to pretrain here with exclude_target_from_source=True'
        )
    model_config, featurizer_config = ElemNetConfig.from_dict(meta['model']), meta['featurizer']
  else:
    if study.exclude_target_from_source:
      source.dataset.exclude_from = target.dataset.name
    model_config, featurizer_config = experiment.model_config_from(source), source.featurizer.to_dict()

  # The target data, featurized as the source model's inputs are.
  target.featurizer = ml_collections.ConfigDict(
    {k: v for k, v in featurizer_config.items() if k not in ('width', 'elements')}
  )
  examples, featurizer, notes, _ = experiment.load_examples(
    target.dataset, target.featurizer, config.data_dir or target.data_dir
  )
  check_study_depths(study, model_config)
  if study.folds and examples.split is not None:  # its repeats are grouped within each published part
    raise UserError(
      f'{target.dataset.name}: ships its own split, which cross-validation would ignore; add '
      '--config.target.dataset.resplit=True to pool it first'
    )
  folds = make_folds(
    examples,
    study.folds,
    tuple(target.dataset.split),
    target.dataset.split_seed,
    study.val_fraction,
    target.dataset.name,
  )
  for fold in folds:
    if study.rotate_validation and len(fold.val) > len(fold.train):
      raise UserError(
        f'--config.study.rotate_validation=True: fold {fold.index} has {len(fold.val)} validation but only '
        f'{len(fold.train)} training rows, too few to hold out a validation block for each later seed'
      )

  saved, results_path = workdir / 'study_config.json', workdir / 'results.json'
  differences = experiment.config_differences(saved, config) if saved.exists() else []
  if differences and not overwrite:
    raise UserError(
      f'{workdir}: holds a study with a different config ({", ".join(differences)}); '
      'choose another --workdir or pass --overwrite'
    )
  if not study.pretrained:
    source_dir = workdir / 'pretrain'
    done_before = (source_dir / 'config.json').exists() and (source_dir / 'metrics.json').exists()
    if not done_before or experiment.config_differences(source_dir / 'config.json', source):
      logging.info('pretraining on %s in %s', source.dataset.name, source_dir)
      experiment.train_and_evaluate(source, source_dir, overwrite=overwrite)
    source_dirs = [source_dir]
    model, source_params, meta, source_metrics, source_test_mae = read_sources(source_dirs)
  source_name = ','.join(map(str, source_dirs))
  transfer.check_compatible(meta, featurizer.description(), source_name)
  # Only now, with the source ready, is the study's record written: a source that fails its own
  # checks leaves no study config behind to refuse the corrected command. The study replaced is kept
  # until this one finishes (its own source model, when pretrained again, only until that is done).
  # A study resumes only from the source runs it started from, not from runs trained again since.
  sources = experiment.source_digests(source_dirs)
  previous, unreadable = {}, False
  if results_path.exists() and not differences:
    try:
      previous = experiment.read_run_json(results_path, 'the study did not start')
    except UserError as error:  # cut short by a full disk or by hand: its runs cannot be resumed
      if not overwrite:
        raise UserError(f'{error}; pass --overwrite to start the study over') from None
      unreadable = True
  before = list(previous.get('sources', {}).values())  # by position: the workdir may be named another way now
  retrained = [name for (name, digest), old in zip(sources.items(), before) if digest != old]
  if retrained and not overwrite:
    raise UserError(
      f'{workdir}: holds a study made from {retrained[0]} as it was before it was trained again; '
      'pass --overwrite to start the study over'
    )
  if differences or retrained or unreadable:
    aside = atomic.set_aside(workdir, STUDY_OUTPUTS, finished=_finished(results_path))
    logging.warning('%s: the study it replaces is kept in %s until this study finishes', workdir, aside)
    previous = {}
  workdir.mkdir(parents=True, exist_ok=True)
  atomic.write_text(saved, config.to_json(indent=2))
  excluded = [metrics['data'].get('excluded') for metrics in source_metrics]
  removed = all(found and target.dataset.name in found['from'] for found in excluded)  # not another dataset
  source_keys = set()  # a composition any run trained on counts as seen (its validation rows too, if retrained)
  for source_dir, metrics in zip(source_dirs, source_metrics):
    trained_on = {'train', 'val'} if metrics.get('retrained_with_validation') else {'train'}
    if (source_dir / 'split.csv').exists():
      with open(source_dir / 'split.csv', newline='') as stream:
        source_keys |= {row['key'] for row in csv.DictReader(stream) if row['split'] in trained_on}
  leakage = {
    'target_in_source_train': sum(key in source_keys for key in examples.keys),
    'source': source_name,
    'source_dataset': meta['dataset']['name'],
    'source_test_mae': source_test_mae,
    'source_test_n': source_metrics[0]['test']['n'],  # a resplit source has its own, smaller test split
    'source_runs': len(source_dirs),
    'target_excluded_from_source': removed,
    'excluded_count': min(found['count'] for found in excluded) if removed else 0,
    'source_members': meta['members'],
  }
  logging.info('leakage control: %s', leakage)
  rows = previous.get('runs', [])
  done = {_runs_key(row) for row in rows}
  seeds = [config.seed + k for k in range(study.seeds)]
  pretrained = experiment.source_members(source_params, len(seeds))  # seed k from source member k mod K
  # fold 0, largest size: test predictions per method, '_val_<method>', '_target'; kept in results.json
  # so that a resumed study plots the runs made before it was interrupted too
  parity = {
    key: np.asarray(value) if isinstance(value, list) else value for key, value in previous.get('parity', {}).items()
  }
  source_scaling = data.TargetScaling(**meta['target_scaling'])  # the source model's own output units

  def save(finished=False):
    plotted = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in parity.items()}
    summary = {
      'target': notes,
      'leakage': leakage,
      'sources': sources,
      'runs': rows,
      'parity': plotted,
      'finished': finished,
    }
    atomic.write_text(results_path, json.dumps(summary, indent=1))

  def record(new_rows):  # results.json and the report stay current, so a partial study can be read
    rows.extend(new_rows)
    save()
    write_report(workdir, rows, leakage, parity, study, echo=False)

  for fold in folds:
    if fold.index == 0:
      parity['_target'] = fold.test.y
    order = training_order(len(fold.train), target.dataset.split_seed, fold.index)
    inputs_full = experiment.make_inputs(
      {'train': fold.train, 'val': fold.val, 'test': fold.test}, featurizer.description(), target, meta
    )
    x, scaling = inputs_full.x, inputs_full.target_scaling
    # The network methods' members: each trains on `member_train` and stops on `member_val`, rows of
    # the pool (validation rows, then training rows); without rotation, every member on the fold's split.
    rotated = len(seeds) if study.rotate_validation else 1
    rotation_rng = np.random.default_rng(target.dataset.split_seed + 200 + fold.index)
    member_train, member_val = validation_rotation(len(fold.train), len(fold.val), rotated, rotation_rng)
    pool_x = np.concatenate([x['val'], x['train']])
    pool_targets = np.concatenate([fold.val.y, fold.train.y])  # in target units
    pool_y = scaling.apply(pool_targets)
    features = None  # hidden activations of the source model, computed once per fold
    if 'featurizer' in study.methods or 'head' in study.methods:
      hidden = train.make_predict(model, hidden_layer=study.featurizer_layer)
      features = {name: train.predict_in_batches(hidden, source_params, x[name])[0] for name in x}  # member 0
      features['pool'] = np.concatenate([features['val'], features['train']])
    if 'direct' in study.methods and ('direct', -1, 0.0, fold.index) not in done:
      prediction = experiment.evaluate(  # the source ensemble as its own test MAE was scored
        model, source_params, x['test'], source_scaling, meta.get('eval_dropout_passes', 0)
      ).mean(axis=0)
      record([_row('direct', -1, 0.0, 0, fold.index, 0, fold.test.y, prediction, 0.0)])
    for fraction, size in zip(study.train_fractions, subset_sizes(len(fold.train), study.train_fractions)):
      index = np.sort(order[:size])  # nested subsets: 10% is inside 25%, and so on
      train_rows = member_train[:, index]  # [members, size] pool rows
      if size < study.min_train_size:
        raise UserError(
          f'target training set of {size} examples (fraction {fraction}) is smaller than '
          f'study.min_train_size={study.min_train_size}'
        )
      if target.transfer.target_scaling == 'refit':  # statistics of the rows this size trains on, not the pool's
        # (member 0's rows; rotated members train on other rows of the same pool and share them; retraining
        # adds the validation rows but keeps these statistics, as the head network keeps its feature scaling)
        scaling = experiment.fit_target_scaling(pool_targets[train_rows[0]], target, meta)
        pool_y = scaling.apply(pool_targets)
      runs = []
      if 'scratch' in study.methods:
        runs.append(('scratch', -1))
      if 'finetune' in study.methods:
        runs += [('finetune', k) for k in study.freeze_layers]
      if 'head' in study.methods:
        runs.append(('head', study.featurizer_layer))
      for method, depth in runs:
        if (method, depth, fraction, fold.index) in done:
          continue
        tic = time.perf_counter()
        if method == 'head':  # a fresh small network on the frozen source model's activations
          scaled = [standardise_features({'pool': features['pool'], 'test': features['test']}, r) for r in train_rows]
          pool_in, test_in = (np.stack([member[name] for member in scaled]) for name in ('pool', 'test'))
          test_in = test_in[0] if len(test_in) == 1 else test_in  # [N, F], or [members, N, F] each its own
          net_config, train_config, init, rules = head_config(study, model_config), study.scratch_train, None, None
        else:
          pool_in, test_in = pool_x, x['test']
          net_config, init = model_config, pretrained if method == 'finetune' else None
          rules = transfer.layer_rules(depth, model_config) if method == 'finetune' else None
          train_config = target.train if method == 'finetune' else study.scratch_train
        val_in = _member_rows(pool_in, member_val)
        build = functools.partial(  # the members' start, for n training rows (retraining builds it again)
          experiment.build,
          net_config,
          train_config,
          pool_in.shape[-1],
          seeds=seeds,
          init_params=init,
          rules=rules,
          reinit_head=target.transfer.reinit_head and method == 'finetune',
        )
        built_model, optimizer, states, frozen_set = build(size)
        name = f'{method}{depth if depth >= 0 else ""}/n={size}/fold{fold.index}'
        options = experiment.fit_options(train_config, scaling)
        _, best, progress = train.fit(
          built_model,
          optimizer,
          states,
          (_member_rows(pool_in, train_rows), _member_rows(pool_y, train_rows)),
          (val_in, _member_rows(pool_y, member_val)),
          options,
          frozen=frozen_set,
          name=name,
        )
        passes = train_config.eval_dropout_passes  # test and validation scored as early stopping scored
        ensemble_val_mae = None  # with rotated validation rows there is no shared set to score
        if rotated == 1:
          val_mean = experiment.evaluate(built_model, best, val_in, scaling, passes).mean(axis=0)
          ensemble_val_mae = round(float(np.abs(val_mean - fold.val.y).mean()), 6)
        trained_rows = train_rows
        if study.retrain_with_validation:  # the same start, its validation rows added, the epochs they chose
          trained_rows = np.concatenate([member_val, train_rows], axis=1)
          retrain_data = (_member_rows(pool_in, trained_rows), _member_rows(pool_y, trained_rows))
          best = experiment.retrain_with_validation(build, retrain_data, progress.best_epoch, options, name=name)
        seconds = (time.perf_counter() - tic) / len(seeds)
        predictions = experiment.evaluate(built_model, best, test_in, scaling, passes)
        size_trained = trained_rows.shape[1]
        ensemble = {
          **_row(
            method,
            depth,
            fraction,
            size_trained,
            fold.index,
            -1,
            fold.test.y,
            predictions.mean(axis=0),
            seconds * len(seeds),
          ),
          'ensemble': True,
          'val_mae': ensemble_val_mae,  # the ensemble's own validation MAE
        }
        if fold.index == 0 and fraction == max(study.train_fractions):  # saved with the run's rows
          parity[f'{method}{depth if depth >= 0 else ""}'] = predictions.mean(axis=0)
          parity[f'_val_{method}{depth if depth >= 0 else ""}'] = float(np.mean(progress.best_val))
        record(
          [
            {
              **_row(method, depth, fraction, size_trained, fold.index, seed, fold.test.y, p, seconds),
              'val_mae': round(val * scaling.scale, 6),  # early stopping's criterion, in target units
              'best_epoch': epoch,  # what early stopping kept (and retraining ran for)
            }
            for seed, p, val, epoch in zip(seeds, predictions, progress.best_val, progress.best_epoch)
          ]
          + ([ensemble] if len(seeds) > 1 else [])
        )
      if 'featurizer' in study.methods and ('featurizer', study.featurizer_layer, fraction, fold.index) not in done:
        tic = time.perf_counter()
        # in target units: ridge with an intercept is affine-equivariant, so no target scaling is needed
        weights, intercept, alpha = ridge.ridge_select(
          (features['train'][index], fold.train.y[index]), (features['val'], fold.val.y)
        )
        val_prediction = features['val'] @ weights + intercept  # alpha's criterion, before any refit
        ridge_size = len(index)
        if study.retrain_with_validation:  # the chosen alpha, fitted again with the validation rows
          weights, intercept = ridge.ridge_fit(
            np.concatenate([features['val'], features['train'][index]]),
            np.concatenate([fold.val.y, fold.train.y[index]]),
            alpha,
          )
          ridge_size += len(fold.val)
        prediction = features['test'] @ weights + intercept
        logging.info('featurizer ridge alpha %.0e: test MAE %.4f', alpha, np.abs(prediction - fold.test.y).mean())
        row = _row(
          'featurizer',
          study.featurizer_layer,
          fraction,
          ridge_size,
          fold.index,
          0,
          fold.test.y,
          prediction,
          time.perf_counter() - tic,
        )
        record([{**row, 'val_mae': round(float(np.abs(val_prediction - fold.val.y).mean()), 6)}])  # alpha's criterion
  write_report(workdir, rows, leakage, parity, study)
  save(finished=True)  # what a later --overwrite reads: this study is complete, not a replacement cut short
  atomic.discard_set_aside(workdir)
  return rows


def _finished(results_path: Path) -> bool:
  try:
    return json.loads(results_path.read_text()).get('finished', False)
  except (OSError, ValueError):  # absent, or cut short by hand: not a finished study
    return False


def _row(method, depth, fraction, size, fold, seed, target, prediction, seconds) -> dict:
  return {
    'method': method,
    'freeze_layers': depth,
    'train_fraction': fraction,
    'train_size': size,
    'fold': fold,
    'seed': seed,
    **regression_metrics(target, prediction),
    'seconds': round(seconds, 2),
  }


def _members(count: int) -> str:
  if count < 2:
    return ''
  return (
    f'an ensemble of {count} pretrained members, the k-th seed fine-tuned from member k mod {count}, '
    'the frozen featurizer reads member 0; '
  )


def _source_test(leakage: dict) -> str:
  runs = leakage.get('source_runs', 1)
  score = f'test MAE {leakage["source_test_mae"]:.4f} on {leakage["source_test_n"]:,} examples'
  return score if runs < 2 else f'pretrained as {runs} separate runs, ensemble {score}'


def method_label(method: str, depth: int) -> str:
  if method == 'finetune':
    return f'fine-tune (freeze {depth})'
  if method == 'featurizer':
    return f'frozen featurizer (layer {depth}) + ridge'
  if method == 'head':
    return f'frozen featurizer (layer {depth}) + head network'
  return {'scratch': 'scratch', 'direct': 'pretrained, applied directly'}[method]


def summarise(rows: list[dict], ensembles: bool = False):
  """(method, depth) -> train_fraction -> (mean MAE, std MAE, runs, train_size).

  Single runs by default; with `ensembles`, the rows that score the mean prediction of the seeds.
  """
  table: dict = {}
  for row in rows:
    if row.get('ensemble', False) != ensembles:
      continue
    cell = table.setdefault((row['method'], row['freeze_layers']), {}).setdefault(row['train_fraction'], [])
    cell.append((row['mae'], row['train_size']))
  return {
    key: {
      f: (
        float(np.mean([m for m, _ in v])),
        float(np.std([m for m, _ in v])),
        len(v),
        int(np.median([s for _, s in v])),
      )
      for f, v in cells.items()
    }
    for key, cells in table.items()
  }


def _table(summary, fractions, sizes) -> list[str]:
  methods = [key for key in summary if key[0] != 'direct']
  lines = [
    '| share of target train (n) | ' + ' | '.join(method_label(*m) for m in methods) + ' |',
    '|---' * (len(methods) + 1) + '|',
  ]
  for f in fractions:
    cells = []
    best = min((summary[m][f][0] for m in methods if f in summary[m]), default=None)
    for m in methods:
      if f not in summary[m]:
        cells.append('')
        continue
      mean, std, _, _ = summary[m][f]
      text = f'{mean:.4f} +- {std:.4f}'
      cells.append(f'**{text}**' if mean == best else text)
    lines.append(f'| {f:.0%} ({sizes[f]}) | ' + ' | '.join(cells) + ' |')
  return lines


def write_report(workdir: Path, rows: list[dict], leakage: dict, parity: dict, study, echo: bool = True) -> str:
  summary = summarise(rows)
  fractions = sorted({r['train_fraction'] for r in rows if r['method'] != 'direct'})
  methods = [key for key in summary if key[0] != 'direct']
  sizes = {f: max(v[f][3] for v in summary.values() if f in v) for f in fractions}
  lines = _table(summary, fractions, sizes)
  for key, cells in summary.items():
    if key[0] == 'direct':
      mean, std, runs, _ = cells[0.0]
      lines.append(f'\nPretrained model applied directly (no target training): {mean:.4f} +- {std:.4f} ({runs} folds).')
  runs_per_cell = max((v[2] for cells in summary.values() for v in cells.values()), default=0)
  ridge = ', ridge one per fold' if any(key[0] == 'featurizer' for key in summary) else ''  # it has no seeds
  lines.append(
    f'\nTest MAE, mean +- std over {runs_per_cell} runs per cell (folds x seeds{ridge}; '
    f'study.folds={study.folds}, study.seeds={study.seeds}'
    + (
      '; rotated validation: seed k >= 1 of scratch, fine-tuning and the head network stops on a random '
      "block of the fold's training rows and trains on the rest and the validation rows"
      if study.rotate_validation
      else ''
    )
    + (
      '; retrained: each model trained again from the same start on its training and validation rows '
      '(n counts both) for the epochs early stopping chose, ridge with the alpha validation chose'
      if study.get('retrain_with_validation', False)
      else ''
    )
    + f'). Source: {leakage["source_dataset"]} '
    f'({_members(leakage.get("source_members", 1))}{_source_test(leakage)}); target inputs '
    + ('REMOVED from' if leakage['target_excluded_from_source'] else 'KEPT in')
    + f' the source data ({leakage["excluded_count"]} removed; '
    f'{leakage["target_in_source_train"]} of the target inputs are among the rows the source trained on).'
  )
  scratch = summary.get(('scratch', -1), {})
  transfer_keys = [m for m in methods if m[0] in ('finetune', 'featurizer', 'head')]
  if scratch and transfer_keys:
    shared = [f for f in fractions if f in scratch and any(f in summary[m] for m in transfer_keys)]
    wins = all(min(summary[m][f][0] for m in transfer_keys if f in summary[m]) < scratch[f][0] for f in shared)
    lines.append(f'Transfer beats scratch at every training-set size: {"yes" if wins else "no"}.')
  ensembles = summarise(rows, ensembles=True)
  if ensembles:
    lines += ['', f'Mean prediction of the {study.seeds} seeds (an ensemble), test MAE (+- std over folds):', '']
    lines += _table(ensembles, fractions, sizes)
  text = '\n'.join(lines) + '\n'
  atomic.write_text(workdir / 'results.md', text)
  _plot(workdir, summary, fractions, sizes, parity)
  if echo:
    print(text)
  return text


def _plot(workdir: Path, summary, fractions, sizes, parity) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  figure, axes = plt.subplots(figsize=(6, 4.2))
  for key, cells in summary.items():
    if key[0] == 'direct':
      axes.axhline(cells[0.0][0], color='grey', linestyle='--', label=method_label(*key))
      continue
    present = [f for f in fractions if f in cells]
    axes.errorbar(
      [sizes[f] for f in present],
      [cells[f][0] for f in present],
      yerr=[cells[f][1] for f in present],
      marker='o',
      capsize=3,
      label=method_label(*key),
    )
  axes.set_xscale('log')
  axes.set_xticks([sizes[f] for f in fractions], [f'{sizes[f]}\n({f:.0%})' for f in fractions])
  axes.minorticks_off()
  axes.set_xlabel('target training-set size')
  axes.set_ylabel('test MAE')
  axes.legend(fontsize=8)
  axes.grid(alpha=0.3)
  figure.tight_layout()
  atomic.save_figure(figure, workdir / 'learning_curve.png')
  plt.close(figure)
  target = parity.get('_target')
  candidates = {k: v for k, v in parity.items() if not k.startswith('_') and k != 'scratch'}
  if target is None or 'scratch' not in parity or not candidates:
    return
  best = min(candidates, key=lambda k: parity[f'_val_{k}'])  # chosen on validation, never on test
  figure, axes = plt.subplots(figsize=(4.6, 4.4))
  for name, color in (('scratch', 'tab:red'), (best, 'tab:blue')):
    mae = np.abs(parity[name] - target).mean()
    axes.scatter(target, parity[name], s=9, alpha=0.6, color=color, label=f'{name} (MAE {mae:.3f})')
  low, high = float(min(target.min(), parity[best].min())), float(max(target.max(), parity[best].max()))
  axes.plot([low, high], [low, high], color='black', linewidth=0.8)
  axes.set_xlabel('target (test split, fold 0)')
  axes.set_ylabel('prediction (mean over seeds)')
  axes.legend(fontsize=8)
  figure.tight_layout()
  atomic.save_figure(figure, workdir / 'parity.png')
  plt.close(figure)
