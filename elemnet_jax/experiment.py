"""Training runs end to end: data -> features -> fit -> test metrics, predictions, checkpoints.

This is the edge of the library where files are read and written; the entry points in
`experiments/` parse flags and call `train_and_evaluate` (pretraining and fine-tuning) or
`predict_inputs`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from elemnet_jax import atomic, checkpoint, data, datasets, featurizers, train, transfer
from elemnet_jax.errors import UserError, format_rows
from elemnet_jax.metrics import regression_metrics
from elemnet_jax.model import ElemNet, ElemNetConfig, count_params

# metrics.json last: a run whose outputs are being set aside reads as finished until the end
OUTPUTS = (
  'predictions_test.csv',
  'split.csv',
  'config.json',
  'sources.json',
  'checkpoints',
  checkpoint.MODEL_DIR,
  'metrics.json',
)

# Config and model-meta fields added after runs were saved, with the value that reproduces how those
# runs behaved: a config or meta that lacks one compares as if it held that value, so older workdirs
# still resume (and join newer runs in a source ensemble).
ADDED_FIELDS = {
  'decay_toward': 'zero',
  'ema_decay': 0.0,
  'morgan_bits': 0,
  'morgan_radius': 2,
  'head_widths': [64, 32],
  'rotate_validation': False,
  'retrain_with_validation': False,
  'exclude_from': '',
  'frozen_layers': [],
  'resplit': False,
}
_ABSENT = object()


def _differences(saved: Any, current: Any, prefix: str = '') -> list[str]:
  if isinstance(saved, dict) and isinstance(current, dict):
    return [
      name
      for key in sorted(saved.keys() | current.keys())
      for name in _differences(
        saved.get(key, ADDED_FIELDS.get(key, _ABSENT)),
        current.get(key, ADDED_FIELDS.get(key, _ABSENT)),
        f'{prefix}{key}.',
      )
    ]
  return [] if saved == current else [prefix.rstrip('.')]


def config_differences(saved_path: Path, config) -> list[str]:
  """Dotted names of the fields in which the config saved at `saved_path` differs from `config`."""
  try:
    saved = json.loads(Path(saved_path).read_text())
  except (OSError, ValueError):
    return [f'{Path(saved_path).name} unreadable']
  current = json.loads(config.to_json())
  return _differences(saved, current)


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


def load_examples(
  dataset: ml_collections.ConfigDict, featurizer_config: ml_collections.ConfigDict, data_dir: str | None = None
) -> tuple[data.Examples, Any, dict, datasets.DatasetSpec]:
  """Reads, validates, featurizes and groups a dataset; returns (examples, featurizer, notes, spec)."""
  table, spec = datasets.load_table(
    dataset.name,
    dataset.get('target') or None,
    data_dir=data_dir or None,
    input_column=dataset.get('input_column', 'formula'),
    input_kind=dataset.get('input_kind', 'formula'),
  )
  if dataset.get('resplit') and table.split is not None:  # one pool, grouped across the published split
    table = dataclasses.replace(table, split=None)
  try:
    featurizer = featurizers.build(featurizer_config.to_dict())
  except (ValueError, TypeError) as error:
    raise UserError(f'--config.featurizer: {error}') from None
  notes: dict = {'dataset': dataset.name}
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
  if exclude_from:  # leakage control: drop compositions that another dataset (the target) holds
    excluded = set()
    for name in exclude_from:  # every valid input, whatever its targets (a row may lack the default one)
      other_table, other_spec = datasets.load_table(name, data_dir=data_dir or None)
      if other_spec.input_kind != featurizer.input_kind:
        raise UserError(
          f'exclude_from={name}: it holds {other_spec.input_kind} inputs, this dataset {featurizer.input_kind} inputs'
        )
      excluded |= set(featurizer.featurize(other_table.inputs)[1]) - {''}  # an invalid input's key is ''
    keep = np.array([key not in excluded for key in examples.keys])
    notes['excluded'] = {'from': exclude_from, 'count': int((~keep).sum())}
    logging.info('%s: removed %d examples whose inputs occur in %s', dataset.name, (~keep).sum(), exclude_from)
    examples = examples.take(np.flatnonzero(keep))
  return examples, featurizer, notes, spec


def fit_target_scaling(y_train: np.ndarray, config, source_meta: dict | None = None) -> data.TargetScaling:
  """The units the model learns targets in.

  Fitted to `y_train` as `train.target_scaling` says; when fine-tuning, the source model's own, or
  with `transfer.target_scaling='refit'` standardised with `y_train` (a target with another offset
  or spread), whatever `train.target_scaling` says.
  """
  if source_meta is None:
    return data.TargetScaling.fit(y_train, config.train.target_scaling)
  if config.transfer.get('target_scaling', 'source') == 'refit':
    return data.TargetScaling.fit(y_train, 'standard')
  return data.TargetScaling(**source_meta['target_scaling'])


def make_inputs(
  parts: dict[str, data.Examples],
  featurizer_description: dict,
  config,
  source_meta: dict | None = None,
  notes: dict | None = None,
) -> Inputs:
  """Fits (or, when fine-tuning, reuses the source model's) feature and target scaling."""
  if source_meta is not None:
    feature_scaling = data.FeatureScaling.from_dict(source_meta['feature_scaling'])
    check_transfer_config(config.transfer)
  else:
    feature_scaling = data.FeatureScaling.fit(
      parts['train'].x, config.features.drop_constant, config.features.standardize
    )
  target_scaling = fit_target_scaling(parts['train'].y, config, source_meta)
  x = {name: feature_scaling(part.x) for name, part in parts.items()}
  y = {name: target_scaling.apply(part.y) for name, part in parts.items()}
  return Inputs(parts, x, y, featurizer_description, feature_scaling, target_scaling, notes or {})


def check_train_config(train_config, where: str = 'train') -> None:
  """Rejects training settings that would otherwise fail deep inside JAX or optax."""
  allowed = {
    'optimizer': ('adam', 'adamw'),
    'schedule': ('constant', 'cosine'),
    'loss': ('mae', 'mse', 'huber'),
    'mode': ('epoch', 'step'),
    'target_scaling': ('none', 'standard'),
    'decay_toward': ('zero', 'start'),
  }
  for field, choices in allowed.items():
    value = train_config.get(field)
    if value not in choices:
      raise UserError(f'--config.{where}.{field}={value!r}: use one of {", ".join(choices)}')
  decay = train_config.get('weight_decay', 0.0)
  if decay < 0:
    raise UserError(f'--config.{where}.weight_decay={decay!r}: must be 0 or positive')
  if decay and train_config.optimizer != 'adamw':
    raise UserError(
      f'--config.{where}.weight_decay={decay!r} has no effect with '
      f'--config.{where}.optimizer={train_config.optimizer!r}: use adamw'
    )
  if train_config.decay_toward == 'start' and not (decay and train_config.optimizer == 'adamw'):
    raise UserError(
      f"--config.{where}.decay_toward='start' needs --config.{where}.optimizer=adamw and a positive "
      f'--config.{where}.weight_decay (now {train_config.optimizer!r}, {decay!r})'
    )
  for field in ('batch_size', 'max_epochs', 'patience', 'ensemble', 'checkpoint_every', 'log_every'):
    value = train_config.get(field, 1)
    if not isinstance(value, int) or value < 1:
      raise UserError(f'--config.{where}.{field}={value!r}: must be a positive integer')
  if not train_config.learning_rate > 0:
    raise UserError(f'--config.{where}.learning_rate={train_config.learning_rate!r}: must be positive')
  if not 0 <= train_config.ema_decay < 1:
    raise UserError(f'--config.{where}.ema_decay={train_config.ema_decay!r}: use 0 (off) or a value in (0, 1)')
  for field in ('body_lr_scale', 'warmup_epochs', 'eval_dropout_passes'):
    if not train_config.get(field, 0) >= 0:
      raise UserError(f'--config.{where}.{field}={train_config.get(field)!r}: must not be negative')


def check_transfer_config(transfer_config, where: str = 'transfer') -> None:
  policy = transfer_config.get('target_scaling', 'source')
  if policy not in ('source', 'refit'):
    raise UserError(f'--config.{where}.target_scaling={policy!r}: use source or refit')


def check_dataset(dataset, where: str = 'dataset') -> tuple[float, float, float]:
  """The split fractions (train, val, test), once the split settings are checked."""
  split = dataset.split
  try:
    fractions = tuple(float(f) for f in split)
  except (TypeError, ValueError):
    fractions = ()
  # the train split takes every row not drawn for val or test, so a train fraction below 1 - val - test
  # would silently train on more rows than asked for
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
    raise UserError(
      f'--config.{where}.split={tuple(split)!r}: give three non-negative fractions (train, val, test) that sum to 1'
    )
  split_seed = dataset.get('split_seed', 0)  # numpy's generators take any non-negative integer
  if not isinstance(split_seed, int) or split_seed < 0:
    raise UserError(f'--config.{where}.split_seed={split_seed!r}: use a non-negative integer')
  size = dataset.get('min_split_size', 1)
  if not isinstance(size, int) or size < 1:  # an empty validation or test split fails only after training
    raise UserError(f'--config.{where}.min_split_size={size!r}: must be a positive integer')
  return fractions


def check_seed(seed, where: str = 'seed', count: int = 1) -> None:
  """Seeds seed .. seed + count - 1 must be distinct 32-bit keys (larger ones wrap onto smaller ones)."""
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**32 - count:
    raise UserError(f'--config.{where}={seed!r}: use an integer from 0 to {2**32 - count}')


def stacked_abstract_params(model_config: ElemNetConfig, width: int, members: int):
  """Shapes and dtypes of the parameters of `members` stacked models (an orbax restore target)."""
  model = ElemNet(model_config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, width))))
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct((members,) + a.shape, a.dtype), abstract)


def model_config_from(config) -> ElemNetConfig:
  try:
    return ElemNetConfig(**config.model.to_dict())
  except (TypeError, ValueError) as error:
    raise UserError(f'--config.model: {error}') from None


def fit_options(train_config, target_scaling: data.TargetScaling | None = None) -> train.FitOptions:
  return train.FitOptions(
    batch_size=train_config.batch_size,
    max_epochs=train_config.max_epochs,
    patience=train_config.patience,
    loss=train_config.loss,
    log_every=train_config.log_every,
    mode=train_config.mode,
    eval_dropout_passes=train_config.get('eval_dropout_passes', 0),
    log_scale=target_scaling.scale if target_scaling else 1.0,
    ema_decay=train_config.ema_decay,
  )


def build(
  model_config: ElemNetConfig,
  train_config,
  width: int,
  n_train: int,
  seeds: list[int],
  *,
  init_params: list | None = None,
  rules=None,
  reinit_head: bool = False,
):
  """(model, optimizer, stacked states, frozen paths) for an ensemble of `len(seeds)` members.

  `init_params`: None (fresh initialisation) or one parameter tree per member, as
  `source_members` gives them; `rules` freeze parts.
  """
  steps_per_epoch = -(-n_train // train_config.batch_size)
  probe = ElemNet(model_config)
  shapes = jax.eval_shape(lambda: probe.init(jax.random.PRNGKey(0), jnp.zeros((1, width))))
  labels = transfer.label_params(shapes, rules) if rules is not None else None
  model = ElemNet(model_config, frozen_layers=transfer.frozen_positions(labels) if labels else ())
  optimizer = train.make_optimizer(
    train_config.learning_rate,
    name=train_config.optimizer,
    schedule=train_config.schedule,
    warmup_steps=int(train_config.warmup_epochs * steps_per_epoch),
    total_steps=train_config.max_epochs * steps_per_epoch,
    weight_decay=train_config.weight_decay,
    decay_toward=train_config.decay_toward,
    labels=labels,
    body_lr_scale=train_config.get('body_lr_scale', 1.0),
  )
  if init_params is not None and len(init_params) != len(seeds):
    raise ValueError(f'{len(init_params)} initial parameter trees for {len(seeds)} members')
  states, moving_average = [], train_config.ema_decay > 0
  for k, seed in enumerate(seeds):
    params = None if init_params is None else init_params[k]
    if params is not None and reinit_head:
      params = transfer.reinit_head(params, model, width, seed + 10_000)
    states.append(train.init_state(model, optimizer, width, seed, params, moving_average))
  return model, optimizer, train.stack_members(states), train.frozen_paths(labels)


def source_members(stacked_params: Any, members: int) -> list:
  """Initial parameters of `members` fine-tuned members: member k starts from source member k mod K.

  A source ensemble of K independently pretrained members thus hands each fine-tuned member its
  own pretrained model (up to K); a single source model starts them all.
  """
  sources = jax.tree.leaves(stacked_params)[0].shape[0]
  return [jax.tree.map(lambda a, k=k % sources: a[k], stacked_params) for k in range(members)]


def evaluate(
  model: ElemNet, params: Any, x: np.ndarray, target_scaling: data.TargetScaling, dropout_passes: int = 0
) -> np.ndarray:
  """Predictions of every member in target units, [K, N]."""
  predict = train.make_predict(model, dropout_passes=dropout_passes)
  scaled = train.predict_in_batches(predict, params, x)
  return scaled * target_scaling.scale + target_scaling.shift


def source_digests(source_dirs: Sequence[str | os.PathLike]) -> dict[str, str]:
  """Each pretrained run named -> the SHA-256 of its metrics.json, which training it again rewrites."""
  for name in source_dirs:  # a run without its record did not finish: one line, not a traceback
    read_run_json(Path(name) / 'metrics.json', 'the run did not finish')
  return {str(name): hashlib.sha256((Path(name) / 'metrics.json').read_bytes()).hexdigest() for name in source_dirs}


def _check_workdir(workdir: Path, config, overwrite: bool, sources: dict[str, str]) -> bool:
  """Refuses a finished run (unless `overwrite`); True when an interrupted run should resume."""
  if (workdir / 'metrics.json').exists():
    if not overwrite:
      raise UserError(
        f'{workdir}: holds a finished run (metrics.json); choose another --workdir or pass --overwrite to replace it'
      )
    return False
  saved, checkpoints = workdir / 'config.json', workdir / 'checkpoints'
  if overwrite or not (saved.exists() and checkpoints.exists()):
    return False
  differences = config_differences(saved, config)
  if differences:
    raise UserError(
      f'{workdir}: holds an interrupted run with a different config ({", ".join(differences)}); resume it with '
      'the same flags, choose another --workdir, or pass --overwrite'
    )
  record = workdir / 'sources.json'
  started_from = read_run_json(record, 'the run did not finish') if record.exists() else {}
  for name, digest in started_from.items():
    if sources.get(name) != digest:
      raise UserError(
        f'{workdir}: holds an interrupted run fine-tuned from {name} as it was before it was trained again; '
        'pass --overwrite to start over from the run it holds now'
      )
  return True


def _start_workdir(workdir: Path, config, resume: bool, sources: dict[str, str]) -> None:
  """Sets earlier outputs aside unless resuming, then records the config. Called once inputs are valid."""
  aside = None if resume else atomic.set_aside(workdir, OUTPUTS, finished=(workdir / 'metrics.json').exists())
  if aside:
    logging.warning('%s: the run it replaces is kept in %s until this run finishes', workdir, aside)
  workdir.mkdir(parents=True, exist_ok=True)
  atomic.write_text(workdir / 'config.json', config.to_json(indent=2))
  if sources and not resume:
    atomic.write_text(workdir / 'sources.json', json.dumps(sources, indent=1))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, overwrite: bool = False) -> dict:
  """Pretrains, or fine-tunes when `config.transfer.pretrained` names a workdir; returns metrics.

  Writes config.json, sources.json (when fine-tuning: which pretrained runs, as they were), split.csv,
  checkpoints/ (resumable), model/, metrics.json and predictions_test.csv into `workdir`.
  """
  workdir = Path(workdir)
  check_train_config(config.train)
  check_seed(config.seed, count=config.train.ensemble)
  split = check_dataset(config.dataset)
  source_dirs = source_workdirs(config.transfer.pretrained) if config.transfer.get('pretrained') else []
  source_dir = ','.join(source_dirs)
  source_meta = source_params = None
  if source_dirs:  # every source run checked and loaded before any work
    _, source_params, source_meta = load_sources(source_dirs)
  sources = source_digests(source_dirs)
  resume = _check_workdir(workdir, config, overwrite, sources)
  examples, featurizer, notes, _ = load_examples(config.dataset, config.featurizer, config.data_dir)
  if source_meta is not None:
    transfer.check_compatible(source_meta, featurizer.description(), source_dir)
  labels = data.assign_splits(examples, split, config.dataset.split_seed)
  parts = data.split_examples(examples, labels, config.dataset.get('min_split_size', 1), config.dataset.name)
  inputs = make_inputs(parts, featurizer.description(), config, source_meta, notes)

  width = inputs.feature_scaling.width
  seeds = [config.seed + k for k in range(config.train.ensemble)]
  if source_meta is not None:
    model_config = ElemNetConfig.from_dict(source_meta['model'])
    rules = transfer.freeze_rules(config.transfer.freeze_layers, tuple(config.transfer.freeze_regex), model_config)
    init_params = source_members(source_params, len(seeds))
  else:
    model_config, init_params, rules = model_config_from(config), None, None
  start = functools.partial(  # the members' start, for n training rows (retraining builds it again)
    build,
    model_config,
    config.train,
    width,
    seeds=seeds,
    init_params=init_params,
    rules=rules,
    reinit_head=config.transfer.get('reinit_head', False),
  )
  model, optimizer, states, frozen_set = start(len(parts['train']))
  _start_workdir(workdir, config, resume, sources)  # every input is valid: only now touch the workdir
  data.write_splits(workdir / 'split.csv', parts)

  manager = checkpoint.TrainingCheckpoints(workdir / 'checkpoints', config.train.checkpoint_every)
  best_params, progress = None, None
  if resume and manager.latest_epoch() is not None:
    states, best_params, progress = manager.restore(states, jax.tree.map(jnp.copy, states.params))
    logging.info('resuming %s from epoch %d', workdir, progress.epoch)
  mesh = None
  if config.train.get('data_parallel', False):
    mesh = train.data_mesh()
  tic = time.perf_counter()
  states, best_params, progress = train.fit(
    model,
    optimizer,
    states,
    (inputs.x['train'], inputs.y['train']),
    (inputs.x['val'], inputs.y['val']),
    fit_options(config.train, inputs.target_scaling),
    frozen=frozen_set,
    mesh=mesh,
    best_params=best_params,
    progress=progress,
    save=manager.save,
    name=workdir.name,
  )
  manager.save(states, best_params, progress, force=True)
  manager.close()
  logging.info('training took %.1fs', time.perf_counter() - tic)

  # Validation scores the early-stopped members: once retrained, the validation rows are training rows.
  val_predictions = evaluate(
    model, best_params, inputs.x['val'], inputs.target_scaling, config.train.eval_dropout_passes
  )
  retrain = bool(config.train.get('retrain_with_validation', False))
  if retrain:  # feature and target scaling stay the training rows'
    rows = tuple(np.concatenate([split['train'], split['val']]) for split in (inputs.x, inputs.y))
    options = fit_options(config.train, inputs.target_scaling)
    best_params = retrain_with_validation(start, rows, progress.best_epoch, options, mesh, workdir.name)
  predictions = evaluate(model, best_params, inputs.x['test'], inputs.target_scaling, config.train.eval_dropout_passes)
  test = parts['test']
  metrics = {
    'test': regression_metrics(test.y, predictions.mean(axis=0)),
    'val': regression_metrics(parts['val'].y, val_predictions.mean(axis=0)),
    'test_members': [regression_metrics(test.y, p) for p in predictions],
    'best_epoch': progress.best_epoch,
    'epochs': progress.epoch,
    'retrained_with_validation': retrain,
    'members': len(seeds),
    'parameters': count_params(jax.tree.map(lambda a: a[0], best_params)),
    'split_sizes': {name: len(part) for name, part in parts.items()},
    'data': notes,
    'frozen_layers': list(model.frozen_layers),
    'pretrained': source_dir or None,
  }
  checkpoint.save_model(
    workdir,
    best_params,
    {
      'model': model_config.to_dict(),
      'featurizer': featurizer.description(),
      'feature_scaling': inputs.feature_scaling.to_dict(),
      'target_scaling': inputs.target_scaling.to_dict(),
      'members': len(seeds),
      'dataset': {'name': config.dataset.name, 'target': config.dataset.get('target', '')},
      'eval_dropout_passes': config.train.eval_dropout_passes,
      'frozen_layers': list(model.frozen_layers),
    },
  )
  write_predictions(workdir / 'predictions_test.csv', test.inputs, predictions, test.y)
  atomic.write_text(workdir / 'metrics.json', json.dumps(metrics, indent=2, sort_keys=True))
  atomic.discard_set_aside(workdir)
  logging.info(
    'test MAE %.4f  RMSE %.4f  R2 %.4f  (n=%d)',
    metrics['test']['mae'],
    metrics['test']['rmse'],
    metrics['test']['r2'],
    metrics['test']['n'],
  )
  return metrics


def retrain_with_validation(start, rows: tuple[np.ndarray, np.ndarray], epochs: list[int], options, mesh=None, name=''):
  """Member k trained again from its start on `rows` (training + validation rows) for `epochs[k]` epochs.

  `start(n)` builds the members as the early-stopped run began (seeds, source weights, shuffle
  seeds), its schedule counting n rows; `rows` as `train.fit` takes them (shared or each member's
  own). Returns the members' evaluation parameters (their moving averages, if kept) after their
  own epochs. The study and the single runs both retrain through here.
  """
  model, optimizer, states, frozen_set = start(rows[1].shape[-1])
  logging.info('retraining on %d training + validation rows for epochs %s', rows[1].shape[-1], epochs)
  tic = time.perf_counter()
  params = train.fit_epochs(
    model, optimizer, states, rows, epochs, options, frozen=frozen_set, mesh=mesh, name=f'{name}/retrain'
  )
  logging.info('retraining took %.1fs', time.perf_counter() - tic)
  return params


def write_predictions(
  path: Path, inputs: list[str], predictions_KxN: np.ndarray, targets: np.ndarray | None = None
) -> None:
  """CSV of input, (target), prediction (member mean) and, with several members, their std."""
  with atomic.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    members = predictions_KxN.shape[0]
    writer.writerow(
      ['input'] + (['target'] if targets is not None else []) + ['prediction'] + (['std'] if members > 1 else [])
    )
    for i, text in enumerate(inputs):
      row = [text] + ([f'{targets[i]:.6g}'] if targets is not None else [])
      row.append(f'{predictions_KxN[:, i].mean():.6g}')
      if members > 1:
        row.append(f'{predictions_KxN[:, i].std():.6g}')
      writer.writerow(row)


MODEL_META = ('model', 'featurizer', 'feature_scaling', 'target_scaling', 'members')  # what save_model writes


def load_for_prediction(workdir: str | os.PathLike) -> tuple[ElemNet, Any, dict]:
  """(model, parameters [K, ...], meta) of a finished run."""
  meta = checkpoint.read_meta(workdir, MODEL_META)
  model_config = ElemNetConfig.from_dict(meta['model'])
  model = ElemNet(model_config, frozen_layers=tuple(meta.get('frozen_layers', ())))
  width = len(meta['feature_scaling']['keep'])
  return model, checkpoint.load_model(workdir, stacked_abstract_params(model_config, width, meta['members'])), meta


# What runs must share to act as one source ensemble: the network, its inputs and its output units.
_SOURCE_KEYS = ('model', 'featurizer', 'feature_scaling', 'target_scaling', 'dataset', 'frozen_layers')


def _source_fields(meta: dict) -> dict:
  return {key: meta[key] for key in _SOURCE_KEYS if key in meta}


def source_workdirs(pretrained: str, where: str = 'pretrained') -> list[str]:
  """The finished runs named by a `pretrained` setting: one workdir, or several separated by commas."""
  workdirs = [name.strip() for name in pretrained.split(',') if name.strip()]
  if not workdirs:
    raise UserError(f'{where}={pretrained!r}: name a finished workdir')
  resolved = [Path(name).resolve() for name in workdirs]
  for later, path in enumerate(resolved):
    if path in resolved[:later]:
      twice = f'{workdirs[resolved.index(path)]!r} and {workdirs[later]!r}'
      raise UserError(f'{where}={pretrained!r}: the same run is named twice ({twice}); each run joins once')
  return workdirs


def read_run_json(path: Path, missing: str) -> dict:
  """A run's JSON record (config.json, metrics.json); missing or corrupted: one line naming the file."""
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f'{path}: missing; {missing}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise UserError(f'{path}: corrupted ({error})') from None


def read_source_meta(workdirs: Sequence[str | os.PathLike]) -> dict:
  """The meta of the runs as one ensemble: their members in the order given.

  Runs pretrained one at a time (e.g. one per `--config.seed`, on different machines) join into one
  source ensemble when they share the network, featurization, scalings, data and split, and no
  member seed is in two of them (which would put one model in twice).
  """
  metas = [checkpoint.read_meta(workdir, MODEL_META) for workdir in workdirs]
  if len(workdirs) == 1:
    return metas[0]
  why = 'a run joins a source ensemble only with the config it was trained with'
  configs = [read_run_json(Path(workdir) / 'config.json', why) for workdir in workdirs]
  trained_by = {}  # member seed -> the run that trained it
  for workdir, meta, config in zip(workdirs, metas, configs):
    differing = [name.split('.')[0] for name in _differences(_source_fields(metas[0]), _source_fields(meta))]
    differing += [f'dataset.{name}' for name in _differences(configs[0]['dataset'], config['dataset'])]
    if differing:
      raise UserError(
        f'{workdir}: its {differing[0]} differs from that of {workdirs[0]}; runs join into one source '
        'ensemble only when they share the network, featurizer, scalings, data and split'
      )
    for seed in range(config['seed'], config['seed'] + meta['members']):
      if seed in trained_by:
        raise UserError(
          f'{workdir}: its member seed {seed} was also trained by {trained_by[seed]}, so the ensemble '
          'would hold one model twice; pretrain it with another --config.seed'
        )
      trained_by[seed] = workdir
  return {**metas[0], 'members': sum(meta['members'] for meta in metas)}


def load_sources(workdirs: Sequence[str | os.PathLike]) -> tuple[ElemNet, Any, dict]:
  """(model, parameters [K, ...], meta) of one or several finished runs, their members concatenated."""
  meta = read_source_meta(workdirs)
  loaded = [load_for_prediction(workdir) for workdir in workdirs]
  params = jax.tree.map(lambda *members: np.concatenate(members), *(params for _, params, _ in loaded))
  return loaded[0][0], params, meta


def predict_inputs(
  workdirs: list[str],
  inputs: list[str],
  rows: list[int] | None = None,
  path: str = 'command line',
  skip_invalid: bool = False,
) -> tuple[list[str], np.ndarray]:
  """Predictions [M, N] of every member of every model for raw inputs (formulas or SMILES).

  The inputs are featurized once; every model must use the same featurizer.
  """
  workdirs = source_workdirs(','.join(workdirs), '--models')  # none, or one named twice: refused
  loaded = [load_for_prediction(workdir) for workdir in workdirs]
  description = loaded[0][2]['featurizer']
  for workdir, (_, _, meta) in zip(workdirs[1:], loaded[1:]):
    if meta['featurizer'] != description:
      raise UserError(f'{workdir}: uses another featurizer than {workdirs[0]}; predict with one kind')
  if not inputs:
    raise UserError(f'{path}: no inputs to predict')
  try:
    featurizer = featurizers.build(description)
  except (ValueError, TypeError) as error:
    raise UserError(f'{workdirs[0]}: {error}') from None
  # Every property this code says defines the features must be as saved (an element list or a metal
  # list may have changed since); a saved option it no longer counts among them (estate's workers) is not.
  built = featurizer.description()
  differing = sorted(key for key in built if built[key] != description.get(key))
  if differing:
    raise UserError(
      f'{workdirs[0]}: the model reads features from {transfer.describe(description)}, but this code builds '
      f'them otherwise (different {", ".join(differing)}); predict with the version it was trained with'
    )
  x, _, invalid = featurizer.featurize(inputs)
  if invalid:
    listed = [((rows or range(1, len(inputs) + 1))[i], inputs[i], reason) for i, reason in invalid]
    if not skip_invalid:
      raise UserError(format_rows(listed, 'input', path))
    logging.warning('skipping %d invalid inputs', len(invalid))
  kept = np.setdiff1d(np.arange(len(inputs)), [i for i, _ in invalid])
  if not len(kept):
    raise UserError(f'{path}: none of the {len(inputs)} inputs is valid')
  predictions = [
    evaluate(
      model,
      params,
      data.FeatureScaling.from_dict(meta['feature_scaling'])(x[kept]),
      data.TargetScaling(**meta['target_scaling']),
      meta.get('eval_dropout_passes', 0),
    )
    for model, params, meta in loaded
  ]
  return [inputs[i] for i in kept], np.concatenate(predictions, axis=0)


def predict_file(
  models: list[str],
  *,
  input_csv: str | None = None,
  column: str = 'formula',
  inputs: list[str] | None = None,
  output: str | None = None,
  skip_invalid: bool = False,
  overwrite: bool = False,
) -> None:
  """Reads inputs (a CSV column or a list), predicts with every model, writes or prints a CSV."""
  if (input_csv is None) == (inputs is None):
    raise UserError('give exactly one of --input=CSV or --formulas=A,B,...')
  if output and Path(output).exists() and not overwrite:
    raise UserError(f'{output}: already exists; pass --overwrite to replace it')
  rows, path = None, 'command line'
  if input_csv is not None:
    if not Path(input_csv).exists():
      raise UserError(f'{input_csv}: no such file')
    table = datasets.read_csv(Path(input_csv), column, column)
    inputs, rows, path = table.inputs, table.rows, input_csv
  kept, predictions = predict_inputs(models, list(inputs), rows, path, skip_invalid)
  if output:
    write_predictions(Path(output), kept, predictions)
    logging.info('wrote %d predictions to %s', len(kept), output)
  else:
    for text, values in zip(kept, predictions.T):
      std = f'\t{values.std():.4f}' if len(values) > 1 else ''
      print(f'{text}\t{values.mean():.4f}{std}')
