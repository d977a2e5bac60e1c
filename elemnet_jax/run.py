"""One training run end to end: data -> features -> fit -> test metrics, predictions, the saved model.

Pretraining and fine-tuning (`config.transfer.pretrained` names finished runs) both run here;
`train_and_evaluate` is what the `train` and `finetune` commands call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from elemnet_jax import checks, data, featurizers, model_data, tasks, transfer, workdir
from elemnet_jax import targets as several
from elemnet_jax.checks import TrainConfig
from elemnet_jax.data import datasets
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, build_model, config_from_dict, count_params, heads
from elemnet_jax.predict import evaluate_outputs, write_predictions
from elemnet_jax.training import checkpoint, distributed, events, timing
from elemnet_jax.training.fit import Progress, fit, retrain_with_validation
from elemnet_jax.training.optimizer import make_optimizer
from elemnet_jax.training.train import Members, data_mesh, init_state, stack_members

# The record (metrics.json) and the config last: a run being set aside reads as finished until the end.
LAYOUT = workdir.Layout(
  kind='run',
  config='config.json',
  progress='checkpoints',
  record='metrics.json',
  outputs=('predictions_test.csv', 'split.csv', 'history.csv', 'log.txt', 'checkpoints', events.FOLDER)
  + (checkpoint.MODEL_DIR, 'metrics.json', 'config.json'),
)


@dataclasses.dataclass
class Inputs:
  """Featurized, scaled data of one run, split into train/val/test."""

  parts: dict[str, data.Examples]  # unscaled features and targets, for reporting
  x: dict[str, np.ndarray]  # scaled features per split
  y: dict[str, np.ndarray]  # scaled targets per split
  featurizer: dict  # description
  feature_scaling: data.FeatureScaling
  target_scaling: data.TargetScaling
  notes: dict


def load_examples(dataset, featurizer_config, data_dir: str | None = None):
  """Reads, validates, featurizes and groups a dataset; returns (examples, featurizer, notes, spec)."""
  table, spec = datasets.load_table(
    dataset.name,
    dataset.get('target') or None,
    data_dir=data_dir or None,
    input_column=dataset.get('input_column', 'formula'),
    input_kind=dataset.get('input_kind', 'formula'),
    unit=dataset.get('unit', ''),
  )
  if dataset.get('resplit') and table.split is not None:  # one pool, grouped across the published split
    table = dataclasses.replace(table, split=None)
  try:
    featurizer = featurizers.build(featurizer_config.to_dict())
  except (ValueError, TypeError) as error:
    raise UserError(f'--config.featurizer: {error}') from None
  notes: dict = {'dataset': dataset.name}
  table = tasks.encode_labels(table, dataset, notes)  # classification: 0/1 labels
  tic = time.perf_counter()
  examples = data.prepare(table, spec, featurizer, skip_invalid=dataset.get('skip_invalid', False), notes=notes)
  logging.info(
    '%s: %d rows -> %d examples, featurized in %.1fs (%s)',
    dataset.name,
    len(table.inputs),
    len(examples),
    time.perf_counter() - tic,
    notes,
  )
  exclude_from = [name for name in dataset.get('exclude_from', '').split(',') if name]
  if exclude_from:
    examples = _exclude(examples, exclude_from, featurizer, notes, dataset, data_dir)
  return examples, featurizer, notes, spec


def _exclude(examples, names: list[str], featurizer, notes: dict, dataset, data_dir) -> data.Examples:
  """Leakage control: `examples` without the inputs that the datasets `names` hold (whatever their targets)."""
  excluded, input_column = set(), dataset.get('input_column', 'formula')
  for name in names:  # a registered dataset, or a CSV file whose `input_column` names the inputs
    other_table, other_spec = datasets.load_table(
      name, data_dir=data_dir or None, input_column=input_column, input_kind=featurizer.input_kind, inputs_only=True
    )
    if other_spec.input_kind != featurizer.input_kind:
      raise UserError(
        f'exclude_from={name}: it holds {other_spec.input_kind} inputs, this dataset {featurizer.input_kind} inputs'
      )
    excluded |= set(featurizer.featurize(other_table.inputs)[1]) - {''}  # an invalid input's key is ''
  keep = np.array([key not in excluded for key in examples.keys])
  notes['excluded'] = {'from': names, 'count': int((~keep).sum())}
  logging.info('%s: removed %d examples whose inputs occur in %s', dataset.name, (~keep).sum(), names)
  return examples.take(np.flatnonzero(keep))


def make_inputs(parts, featurizer_description: dict, config, source_meta=None, notes=None) -> Inputs:
  """Fits (or, when fine-tuning, reuses the source model's) feature and target scaling."""
  if source_meta is not None:
    feature_scaling = data.FeatureScaling.from_dict(source_meta['feature_scaling'])
    checks.check_transfer_config(config.transfer)
  else:
    feature_scaling = data.FeatureScaling.fit(
      parts['train'].x, config.features.drop_constant, config.features.standardize
    )
  target_scaling = several.fit_scaling(parts['train'].y, config, source_meta)
  x = {name: feature_scaling(part.x) for name, part in parts.items()}
  y = {name: target_scaling.apply(part.y) for name, part in parts.items()}
  return Inputs(parts, x, y, featurizer_description, feature_scaling, target_scaling, notes or {})


def build(
  model_config: ModelConfig,
  train: TrainConfig,
  width: int,
  n_train: int,
  seeds: list[int],
  *,
  init_params: list | None = None,
  rules=None,
  reinit_head: bool = False,
  tables: dict | None = None,
) -> Members:
  """An ensemble of `len(seeds)` members ready to train on `n_train` rows (the schedule's length).

  `init_params`: None (fresh initialisation) or one parameter tree per member, as
  `transfer.source_members` gives them; `rules` freeze parts (`transfer.freeze_rules`); `tables`:
  published tables a fresh initialisation starts from (`model_data.load_tables`).
  """
  steps = train.steps_per_epoch(n_train)
  probe = build_model(model_config)
  shapes = jax.eval_shape(lambda: probe.init(jax.random.PRNGKey(0), jnp.zeros((1, width))))
  rules = transfer.with_fixed_tables(rules, model_config)  # published tables (element vectors) never train
  freezing = transfer.Freezing.from_rules(rules, shapes, model_config.groups()) if rules else transfer.Freezing()
  model = build_model(model_config, frozen_layers=freezing.positions)
  optimizer = make_optimizer(
    train.learning_rate,
    name=train.optimizer,
    schedule=train.schedule,
    warmup_steps=int(train.warmup_epochs * steps),
    total_steps=train.max_epochs * steps,
    weight_decay=train.weight_decay,
    decay_toward=train.decay_toward,
    labels=freezing.labels,
    body_lr_scale=train.body_lr_scale,
  )
  if init_params is not None and len(init_params) != len(seeds):
    raise ValueError(f'{len(init_params)} initial parameter trees for {len(seeds)} members')
  states = []
  for k, seed in enumerate(seeds):
    params = None if init_params is None else init_params[k]
    if params is not None and reinit_head:
      params = transfer.reinit_head(params, model, width, seed + 10_000)
    states.append(init_state(model, optimizer, width, seed, params, train.ema_decay > 0, tables))
  return Members(model, optimizer, stack_members(states), freezing.paths)


@dataclasses.dataclass
class Run:
  """A run whose inputs are all checked and loaded, ready to train."""

  config: ml_collections.ConfigDict  # as recorded in config.json (a fine-tune's model: the source's)
  train: TrainConfig
  workdir: workdir.Workdir
  sources: dict[str, str]  # source run -> digest of its metrics.json
  source_meta: dict | None
  inputs: Inputs
  featurizer: Any
  model_config: ModelConfig
  start: Any  # n_train -> Members, as `build` makes them
  seeds: list[int]


def prepare(config: ml_collections.ConfigDict, path: str | os.PathLike, overwrite: bool = False) -> Run:
  """Checks everything and loads the data; nothing is written."""
  config = tasks.resolve(config)  # classification: sigmoid cross-entropy on 0/1 labels
  several.check(config)  # several targets: regression
  train = checks.TrainConfig.from_config(config.train)
  checks.check_seed(config.seed, count=train.ensemble)
  checks.check_dataset(config.dataset)  # before any data is read
  source_dirs = transfer.source_workdirs(config.transfer.pretrained) if config.transfer.get('pretrained') else []
  source_meta = source_params = None
  config, head = config.copy_and_resolve_references(), heads.requested(config)  # '' where the config names none
  distributed.check_config(config.to_json(), train.data_parallel)
  if source_dirs:  # every source run checked and loaded before any work
    _, source_params, source_meta = transfer.load_sources(source_dirs)
    transfer.refuse_unlearned(source_dirs, config.transfer.get('allow_collapsed_source', False))
    config.model = ml_collections.ConfigDict(source_meta['model'])  # the model trained is the source's
    config.model.outputs = several.count(config.dataset)  # ... with one output per target
  train = tasks.set_head(config, head, source_meta, train)  # model.head='' keeps a source's; the loss follows it
  run_dir = workdir.Workdir(path, LAYOUT, config, overwrite)
  sources = workdir.digests(source_dirs)
  run_dir.check_sources(sources)
  examples, featurizer, notes, spec = load_examples(config.dataset, config.featurizer, config.data_dir)
  if source_meta is not None:
    transfer.check_compatible(source_meta, featurizer.description(), ','.join(source_dirs))
  parts = _split(examples, config)
  distributed.check_same('data', data.fingerprint(parts), 'give every process the same data files')
  run_dir.check_data(data.fingerprint(parts))  # an interrupted run resumes only on the data it started on
  notes['target'] = spec.describe_target(config.dataset.get('target') or spec.targets[0]) | notes.pop('task', {})
  inputs = make_inputs(parts, featurizer.description(), config, source_meta, notes)
  seeds = [config.seed + k for k in range(train.ensemble)]
  if source_meta is not None:
    model_config = config_from_dict(config.model.to_dict())  # the source's network, with the head asked for
    rules = transfer.freeze_rules(config.transfer.freeze_layers, tuple(config.transfer.freeze_regex), model_config)
    init_params = transfer.source_members(source_params, len(seeds))
  else:
    model_config, init_params, rules = checks.model_config_from(config), None, None
  model_config = several.with_outputs(model_config, several.count(config.dataset))  # one output per target
  new_width = several.new_outputs(source_meta, config.dataset)  # the output layer is then redrawn
  model_data.check_inputs(model_config, inputs.featurizer, inputs.feature_scaling, inputs.parts['train'].x)
  tables = None if source_meta else model_data.load_tables(model_config, featurizer, config.data_dir)
  start = functools.partial(
    build,
    model_config,
    train,
    inputs.feature_scaling.width,
    seeds=seeds,
    init_params=init_params,
    rules=rules,
    reinit_head=config.transfer.get('reinit_head', False)
    or tasks.new_head(config, source_meta, model_config)
    or new_width,
    tables=tables,
  )
  return Run(config, train, run_dir, sources, source_meta, inputs, featurizer, model_config, start, seeds)


def split_parts(config: ml_collections.ConfigDict) -> dict[str, data.Examples]:
  """The train/val/test examples a run with `config` trains on: what its split.csv records."""
  return _split(load_examples(config.dataset, config.featurizer, config.get('data_dir'))[0], config)


def _split(examples: data.Examples, config: ml_collections.ConfigDict) -> dict[str, data.Examples]:
  labels = data.assign_splits(examples, checks.check_dataset(config.dataset), config.dataset.split_seed)
  parts = data.split_examples(examples, labels, config.dataset.get('min_split_size', 1), config.dataset.name)
  fraction = config.train.get('calibration_fraction', 0.0)  # training rows that only calibrate the spread
  return data.set_apart(parts, fraction, config.dataset.split_seed + 300) if fraction > 0 else parts


def train_members(run: Run, members: Members, phases: timing.Phases, mesh=None, profile_steps: int = 0):
  """(best parameters, progress): fits the members with early stopping, resuming from and saving checkpoints."""
  path = run.workdir.path
  manager = checkpoint.TrainingCheckpoints(
    path / 'checkpoints', run.train.checkpoint_every, run.train.checkpoint_seconds
  )
  resume = None
  if distributed.from_writer_json(run.workdir.resume and manager.latest_epoch() is not None):  # process 0 decides
    states, best, progress = manager.restore(members.states, jax.tree.map(jnp.copy, members.states.params))
    members, resume = dataclasses.replace(members, states=states), (best, progress)
    logging.info('resuming %s from epoch %d', path, progress.epoch)
  records = events.EpochRecords(path, len(run.inputs.parts['train']) * len(run.seeds), profile_steps)

  def save(states, best_params, progress):
    manager.save(states, best_params, progress)
    records.epoch(progress, int(np.asarray(states.step).reshape(-1)[0]))

  inputs = run.inputs
  tic = time.perf_counter()
  names = inputs.notes['target'].get('names')  # several targets: each judged on its own
  watch = several.monitor(inputs.y['train'], inputs.y['val'], run.train.guard_epochs, path.name, names)
  try:
    states, best_params, progress = fit(
      members,
      (inputs.x['train'], inputs.y['train']),
      (inputs.x['val'], inputs.y['val']),
      dataclasses.replace(
        run.train.fit_options(several.log_scale(inputs.target_scaling), len(inputs.parts['train'])), guard=watch
      ),
      mesh=mesh,
      resume=resume,
      save=save,
      name=path.name,
      phases=phases,
    )
    with phases('checkpoint'):
      manager.save(states, best_params, progress, force=True)
  finally:  # a checkpoint still being written completes, whatever stopped training
    manager.close()
    records.close()
  records.history(progress)
  logging.info('training took %.1fs', time.perf_counter() - tic)
  return best_params, progress


def train_and_evaluate(config, path: str | os.PathLike, overwrite: bool = False, profile_steps: int = 0) -> dict:
  """Pretrains, or fine-tunes when `config.transfer.pretrained` names finished runs; returns the metrics.

  Writes config.json, sources.json (when fine-tuning), split.csv, log.txt, history.csv, tensorboard/, checkpoints/
  (resumable), model/, predictions_test.csv and metrics.json into `path` (process 0 alone: `training.distributed`).
  """
  phases = timing.Phases()
  with phases('load'):  # read, featurize, load the source
    run = prepare(config, path, overwrite)
    members = run.start(len(run.inputs.parts['train']))
  distributed.barrier('prepared')  # every process has examined the workdir before process 0 writes it
  if distributed.is_writer():
    run.workdir.start(run.sources)  # every input is valid: only now is the workdir touched
  with distributed.writer_only(workdir.log_to(run.workdir.path / 'log.txt')):
    if distributed.is_writer():
      data.write_splits(run.workdir.path / 'split.csv', run.inputs.parts, run.inputs.notes['target'].get('names'))
    mesh = data_mesh() if run.train.data_parallel else None
    best_params, progress = train_members(run, members, phases, mesh, profile_steps)
    return finish(run, members.model, best_params, progress, phases, mesh)


def finish(run: Run, model, best_params, progress: Progress, phases: timing.Phases, mesh=None) -> dict:
  """Scores the members on test (retrained first if asked), saves the model, predictions and metrics."""
  inputs, train, path = run.inputs, run.train, run.workdir.path
  parts, best_params = inputs.parts, distributed.local(best_params)
  # Validation scores the early-stopped members: once retrained, the validation rows are training rows.
  outputs = functools.partial(
    evaluate_outputs, model, target_scaling=inputs.target_scaling, dropout_passes=train.eval_dropout_passes
  )
  val_outputs = outputs(best_params, inputs.x['val'])
  if train.retrain_with_validation:  # feature and target scaling stay the training rows'
    rows = tuple(np.concatenate([split['train'], split['val']]) for split in (inputs.x, inputs.y))
    options = train.fit_options(several.log_scale(inputs.target_scaling), len(parts['train']))
    best_params = retrain_with_validation(run.start, rows, progress.best_epoch, options, mesh, path.name)
  test_outputs, test, source_dir = outputs(best_params, inputs.x['test']), parts['test'], ','.join(run.sources)
  names = inputs.notes['target'].get('names')  # several targets: scored one by one, no calibration
  task = tasks.task_of(run.config.dataset)
  if names:
    predictions = test_outputs.prediction()
    scores, calibrated = several.score_run(task, names, parts, val_outputs.prediction(), predictions)
  else:
    apart = outputs(best_params, inputs.x['calibration']) if 'calibration' in parts else None  # else validation
    scores, calibrated, predictions = tasks.score_outputs(task, parts, val_outputs, test_outputs, apart)
  metrics = {
    **scores,  # test, val, test_members, guard (and the calibration of a regression ensemble's spread)
    'best_epoch': progress.best_epoch,
    'epochs': progress.epoch,
    'retrained_with_validation': train.retrain_with_validation,
    'members': len(run.seeds),
    'parameters': count_params(jax.tree.map(lambda a: a[0], best_params)),
    'split_sizes': {name: len(part) for name, part in parts.items()},
    'data': inputs.notes,
    'frozen_layers': list(model.frozen_layers),
    'pretrained': source_dir or None,
  }
  if not distributed.is_writer():  # process 0 writes the outputs; this process's exit waits for it (`distributed`)
    return metrics
  with phases('save'):
    meta = {**model_meta(run, model), **calibrated}
    checkpoint.save_model(path, best_params, meta)
    std = test_outputs.spread()  # a mean-variance head's own std (None: the members' spread)
    write_predictions(path / 'predictions_test.csv', test.inputs, tasks.output(meta, predictions), test.y, names, std)
  metrics['seconds'] = phases.summary()  # where the wall time went
  workdir.write_text(path / 'metrics.json', json.dumps(metrics, indent=2, sort_keys=True))
  run.workdir.finish()
  logging.info('time: %s', phases.describe())
  logging.info('test %s', several.describe(metrics['test'], names))
  (logging.info if metrics['guard']['learned'] else logging.warning)('%s: %s', path.name, metrics['guard']['verdict'])
  return metrics


def model_meta(run: Run, model) -> dict:
  """What a later fine-tune or prediction needs to read the saved parameters."""
  inputs, config = run.inputs, run.config
  seen = set(np.flatnonzero(np.any(inputs.parts['train'].x != 0, axis=0)).tolist())
  seen |= set((run.source_meta or {}).get('seen_columns', []))  # a fine-tune also learnt from its source's rows
  return {
    'model': run.model_config.to_dict(),
    'featurizer': inputs.featurizer,
    'feature_scaling': inputs.feature_scaling.to_dict(),
    'target_scaling': inputs.target_scaling.to_dict(),
    'members': len(run.seeds),
    'dataset': {'name': config.dataset.name, 'target': config.dataset.get('target', '')},
    'target': inputs.notes['target'],
    'seen_columns': sorted(int(j) for j in seen),  # raw feature columns non-zero in some training row
    'eval_dropout_passes': run.train.eval_dropout_passes,
    'frozen_layers': list(model.frozen_layers),
  }
