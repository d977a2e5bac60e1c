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
import numpy as np
from absl import logging

from elemnet_jax import data, interrupts, machine, model_data, tasks, transfer, workdir
from elemnet_jax import targets as several
from elemnet_jax.configs.schema import RunConfig, TrainConfig
from elemnet_jax.errors import UserError
from elemnet_jax.inputs import Inputs, fit_feature_scaling, fit_target_scaling, load_examples, make_inputs, split
from elemnet_jax.models import ModelConfig, build_model, config_from_dict, count_params
from elemnet_jax.predict import evaluate_outputs, write_predictions
from elemnet_jax.training import checkpoint, distributed, events, guard, timing
from elemnet_jax.training.fit import Progress, fit, fit_options
from elemnet_jax.training.optimizer import make_optimizer
from elemnet_jax.training.retrain import retrain_with_validation
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

  config: RunConfig  # as recorded in config.json (a fine-tune's model: the source's)
  workdir: workdir.Workdir
  sources: dict[str, str]  # source run -> digest of its metrics.json
  source_meta: dict | None
  inputs: Inputs
  featurizer: Any
  start: Any  # n_train -> Members, as `build` makes them
  seeds: list[int]

  @property
  def train(self) -> TrainConfig:
    return self.config.train

  @property
  def model_config(self) -> ModelConfig:
    return self.config.model


def with_source_model(config: RunConfig, source_meta: dict, source: str) -> RunConfig:
  """`config` with the network of the run it fine-tunes, one output per target, and the output head that
  `transfer.head` names (else a model section's, else the source's; another than the source's is drawn afresh). A
  model section that says another network (its head aside when `transfer.head` names one) is refused."""
  head = config.transfer.head or (config.model.head if config.model is not None else '')
  try:
    model = config_from_dict({**source_meta['model'], 'outputs': len(config.dataset.target_names)} | _head(head))
  except ValueError as error:  # a head other than point models one target
    raise UserError(f'--config.transfer.head={head!r}: {error}') from None
  given = config.model and (
    dataclasses.replace(config.model, head=model.head) if config.transfer.head else config.model
  )
  if given is not None and given != model:
    field = next(name for name, value in given.to_dict().items() if model.to_dict().get(name) != value)
    raise UserError(
      f'--config.model.{field}={getattr(config.model, field)!r}: a fine-tune trains the network of {source} '
      f'({field}={getattr(model, field, None)!r}); set it so, or use a config without a model section (finetune)'
    )
  if config.train.target_scaling != 'none':
    raise UserError(
      f'--config.train.target_scaling={config.train.target_scaling!r}: a fine-tune learns in the target units of '
      f'{source}; --config.transfer.target_scaling=refit standardises the targets with its own training rows'
    )
  return dataclasses.replace(config, model=model)  # checked again: the loss its head trains with


def _head(head: str) -> dict:
  return {'head': head} if head else {}


def prepare(config: RunConfig, path: str | os.PathLike, overwrite: bool = False) -> Run:
  """Checks everything and loads the data; nothing is written."""
  if not isinstance(config, RunConfig):
    raise TypeError(f'a run takes a typed config (elemnet_jax.configs.resolve), not {type(config).__name__}')
  several.warn_unscaled(config)
  source_dirs = transfer.source_workdirs(config.transfer.pretrained) if config.transfer.pretrained else []
  source_meta = source_params = None
  distributed.check_config(json.dumps(config.to_dict()), config.train.data_parallel)
  if source_dirs:  # every source run checked and loaded before any work
    _, source_params, source_meta = transfer.load_sources(source_dirs)
    transfer.refuse_unlearned(source_dirs, config.transfer.allow_collapsed_source)
    config = with_source_model(config, source_meta, ','.join(source_dirs))  # the model trained is the source's
  run_dir = workdir.Workdir(path, LAYOUT, config.to_dict(), overwrite)
  sources = workdir.digests(source_dirs)
  run_dir.check_sources(sources)
  examples, featurizer, notes, spec = load_examples(config.dataset, config.featurizer, config.data_dir)
  if source_meta is not None:
    transfer.check_compatible(source_meta, featurizer.description(), ','.join(source_dirs))
  parts = split(examples, config.dataset, config.train)  # train.calibration_fraction: a calibration part too
  distributed.check_same('data', data.fingerprint(parts), 'give every process the same data files')
  run_dir.check_data(data.fingerprint(parts))  # an interrupted run resumes only on the data it started on
  notes['target'] = spec.describe_target(config.dataset.target or spec.targets[0]) | notes.pop('task', {})
  scaling = fit_target_scaling(
    parts['train'].y, config.train.target_scaling, config.transfer, source_meta, config.dataset, config.model.head
  )
  features = fit_feature_scaling(parts['train'].x, config.features, source_meta)
  inputs = make_inputs(parts, featurizer.description(), features, scaling, notes)
  seeds = [config.seed + k for k in range(config.train.ensemble)]
  model_config, init_params, rules = config.model, None, None
  if source_meta is not None:
    rules = transfer.freeze_rules(config.transfer.freeze_layers, config.transfer.freeze_regex, model_config)
    init_params = transfer.source_members(source_params, len(seeds))
  new_width = several.new_outputs(source_meta, config.dataset)  # the output layer is then redrawn
  model_data.check_inputs(model_config, inputs.featurizer, inputs.feature_scaling, inputs.parts['train'].x)
  tables = None if source_meta else model_data.load_tables(model_config, featurizer, config.data_dir)
  start = functools.partial(
    build,
    model_config,
    config.train,
    inputs.feature_scaling.width,
    seeds=seeds,
    init_params=init_params,
    rules=rules,
    reinit_head=config.transfer.reinit_head or tasks.new_head(config.dataset, source_meta, model_config) or new_width,
    tables=tables,
  )
  return Run(config, run_dir, sources, source_meta, inputs, featurizer, start, seeds)


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
    stopping = distributed.preempted(progress.epoch)  # SIGTERM to any process of a joined run: all stop here
    manager.save(states, best_params, progress, force=stopping)
    records.epoch(progress, int(np.asarray(states.step).reshape(-1)[0]))
    if stopping:
      raise interrupts.Preempted()

  inputs = run.inputs
  tic = time.perf_counter()
  names = inputs.notes['target'].get('names')  # several targets: each judged on its own
  learned = None if resume is None else guard.learned_before(inputs.y['train'], inputs.y['val'], resume[1].best_val)
  watch = several.monitor(inputs.y['train'], inputs.y['val'], run.train.guard_epochs, path.name, names, learned)
  try:
    states, best_params, progress = fit(
      members,
      (inputs.x['train'], inputs.y['train']),
      (inputs.x['val'], inputs.y['val']),
      fit_options(run.train, several.log_scale(inputs.target_scaling), len(inputs.parts['train']), guard=watch),
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


def train_and_evaluate(
  config: RunConfig, path: str | os.PathLike, overwrite: bool = False, profile_steps: int = 0
) -> dict:
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
    options = fit_options(train, several.log_scale(inputs.target_scaling), len(parts['train']))
    best_params = retrain_with_validation(run.start, rows, progress.best_epoch, options, mesh, path.name, phases)
  test_outputs, test, source_dir = outputs(best_params, inputs.x['test']), parts['test'], ','.join(run.sources)
  names = inputs.notes['target'].get('names')  # several targets: scored one by one, no calibration
  task = run.config.dataset.task
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
  metrics['machine'] = machine.describe()  # what the bits depend on besides config and data
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
    'dataset': {'name': config.dataset.name, 'target': config.dataset.target},
    'target': inputs.notes['target'],
    'seen_columns': sorted(int(j) for j in seen),  # raw feature columns non-zero in some training row
    'eval_dropout_passes': run.train.eval_dropout_passes,
    'frozen_layers': list(model.frozen_layers),
  }
