"""A study's data: the source model (finished runs, or one pretrained in the study's workdir) and the target folds."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from elemnet_jax import data, inputs, run, transfer, workdir
from elemnet_jax.configs.schema import FeaturizerConfig, RunConfig
from elemnet_jax.configs.study_schema import StudyConfig
from elemnet_jax.errors import UserError
from elemnet_jax.metrics import regression_metrics
from elemnet_jax.models import ModelConfig, config_from_dict
from elemnet_jax.study.plan import check_study_depths, make_folds
from elemnet_jax.training import timing


@dataclasses.dataclass
class Source:
  """The pretrained model a study transfers from: one or several finished runs as one ensemble."""

  dirs: list[Path]
  model: Any  # the Flax module
  params: Any  # [K, ...]
  meta: dict
  metrics: list[dict]  # metrics.json of each run
  test_mae: float  # of the ensemble on the source's test split (NaN: a source of several targets)

  @property
  def model_config(self) -> ModelConfig:
    return config_from_dict(self.meta['model'])


def read_source(source_dirs: list[Path]) -> Source:
  """Finished runs as one source; several share a test split, scored by their member-weighted mean."""
  model, params, meta = transfer.load_sources(source_dirs)
  metrics = [workdir.read_json(d / 'metrics.json', 'the run did not finish') for d in source_dirs]
  if len(source_dirs) == 1:
    return Source(source_dirs, model, params, meta, metrics, metrics[0]['test'].get('mae', float('nan')))
  predictions, weights = [], [m['members'] for m in metrics]
  for source_dir in source_dirs:
    with open(source_dir / 'predictions_test.csv', newline='') as stream:
      rows = list(csv.DictReader(stream))
    predictions.append([float(row['prediction']) for row in rows])
  truth = np.array([float(row['target']) for row in rows])
  mean = np.average(np.array(predictions), axis=0, weights=weights)
  return Source(source_dirs, model, params, meta, metrics, regression_metrics(truth, mean)['mae'])


def pretrain_source(config: StudyConfig, path: Path, overwrite: bool, phases: timing.Phases) -> Source:
  """The source the study pretrains itself in `path/pretrain`, reused when its config matches; the time of its
  phases (train, evaluate, checkpoint, ...) is added to the study's `phases` (compiling is counted there already)."""
  source_dir = path / 'pretrain'
  done = (source_dir / 'config.json').exists() and (source_dir / 'metrics.json').exists()
  if not done or workdir.config_differences(source_dir / 'config.json', config.source.to_dict()):
    logging.info('pretraining on %s in %s', config.source.dataset.name, source_dir)
    phases.add(run.train_and_evaluate(config.source, source_dir, overwrite=overwrite).get('seconds', {}))
  return read_source([source_dir])


def named_sources(config: StudyConfig) -> tuple[list[Path], dict]:
  """The finished runs `study.pretrained` names and their joined meta, checked for the leakage control asked for."""
  study, target = config.study, config.target
  dirs = [Path(name) for name in transfer.source_workdirs(study.pretrained)]
  meta = transfer.read_source_meta(dirs)  # they must form one ensemble
  for source_dir in dirs:
    metrics = workdir.read_json(source_dir / 'metrics.json', 'the run did not finish')
    if study.exclude_target_from_source and target.dataset.name not in metrics['data'].get('excluded', {}).get(
      'from', []
    ):
      raise UserError(
        f'{source_dir}: was not pretrained with {target.dataset.name} removed; drop '
        '--config.study.pretrained to pretrain here with exclude_target_from_source=True'
      )
  return dirs, meta


def _split_keys(source_dir: Path, parts: set[str], data_dir: str = '') -> set[str]:
  """The grouping keys of a source run's `parts`: from its split.csv, or drawn again from its config."""
  if (source_dir / 'split.csv').exists():
    with open(source_dir / 'split.csv', newline='') as stream:
      return {row['key'] for row in csv.DictReader(stream) if row['split'] in parts}
  recorded = RunConfig.from_dict(workdir.read_config(source_dir / 'config.json'))
  config = dataclasses.replace(recorded, data_dir=data_dir)  # where this machine keeps the source's data
  logging.info('%s: drawing its split from its config to count the target inputs it trained on', source_dir)
  return {key for name, examples in inputs.split_parts(config).items() if name in parts for key in examples.keys}


def leakage_record(source: Source, examples: data.Examples, target_name: str, data_dir: str = '') -> dict:
  """How much of the target the source saw: removed from its data, or among the rows it trained on."""
  excluded = [metrics['data'].get('excluded') for metrics in source.metrics]
  removed = all(found and target_name in found['from'] for found in excluded)  # not another dataset
  seen = set()  # a composition any run trained on counts (its validation rows too, if retrained)
  for source_dir, metrics in zip(source.dirs, source.metrics):
    trained_on = {'train', 'val'} if metrics.get('retrained_with_validation') else {'train'}
    seen |= _split_keys(source_dir, trained_on, data_dir)
  return {
    'target_in_source_train': sum(key in seen for key in examples.keys),
    'source': ','.join(map(str, source.dirs)),
    'source_dataset': source.meta['dataset']['name'],
    'source_test_mae': source.test_mae,
    'source_test_n': source.metrics[0]['test'].get('n', source.metrics[0]['test'].get('mean', {}).get('n')),
    'source_runs': len(source.dirs),
    'target_excluded_from_source': removed,
    'excluded_count': min(found['count'] for found in excluded) if removed else 0,
    'source_members': source.meta['members'],
    'source_verdicts': [m['guard']['verdict'] for m in source.metrics if 'guard' in m],
  }


def load_target(config: StudyConfig, model_config: ModelConfig, featurizer_config: FeaturizerConfig):
  """The target examples, featurized as the source model's inputs are, and its folds."""
  study, dataset = config.study, config.target.dataset
  examples, featurizer, notes, spec = inputs.load_examples(dataset, featurizer_config, config.data_dir)
  notes['target'] = spec.describe_target(dataset.target or spec.targets[0]) | notes.pop('task', {})
  check_study_depths(study, model_config)
  if study.folds and examples.split is not None:  # its repeats are grouped within each published part
    raise UserError(
      f'{dataset.name}: ships its own split, which cross-validation would ignore; add '
      '--config.target.dataset.resplit=True to pool it first'
    )
  folds = make_folds(
    examples, study.folds, dataset.split, dataset.split_seed, study.val_fraction, dataset.name, dataset.min_split_size
  )
  for fold in folds:
    if study.rotate_validation and len(fold.val) > len(fold.train):
      raise UserError(
        f'--config.study.rotate_validation=True: fold {fold.index} has {len(fold.val)} validation but only '
        f'{len(fold.train)} training rows, too few to hold out a validation block for each later seed'
      )
  return examples, featurizer, notes, folds
