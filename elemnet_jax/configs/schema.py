"""The typed config: one frozen dataclass per section, each default written here once and checked here.

A command turns its config into these values once (`configs.resolve`); below that edge the library reads
their fields. A value that cannot run, or a field that cannot apply where it is set, is refused with one
line naming it: `--config.train.optimizer='sgd': use one of adam, adamw`.

To add a field: give it a default (and a check in `__post_init__`) in its section below, read it where
it acts, and add a step to `elemnet_jax.migrations` that gives older recorded configs the value that
acts as its absence. The shipped configs and `--help` take it from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from elemnet_jax import featurizers
from elemnet_jax.configs.values import (  # noqa: F401 - Invalid, plain and with_fields for the study's schema
  Invalid,
  _choice,
  _integer,
  _number,
  _tuple,
  check_seed,
  plain,
  target_names,
  with_fields,
)
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, config_from_dict, heads
from elemnet_jax.models.elemnet import ElemNetConfig

OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('constant', 'cosine')
LOSSES = ('mae', 'mse', 'huber', 'bce', 'nll')
MODES = ('epoch', 'step')
ENSEMBLE_SCHEDULES = ('auto', 'vmap', 'sequential')
TARGET_SCALINGS = ('none', 'standard')
DECAY_TOWARD = ('zero', 'start')
SOURCE_SCALINGS = ('source', 'refit')
TASKS = ('regression', 'classification')
INPUT_KINDS = ('formula', 'smiles')
# a study's: featurizer is ridge on a hidden layer's activations, head a small network on them, direct the source as is
METHODS = ('scratch', 'finetune', 'featurizer', 'head', 'direct')


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  name: str = 'oqmd_fe'  # a registered dataset or a path to a CSV file
  target: str = ''  # '' -> the dataset's default target column
  input_column: str = 'formula'  # for CSV files
  input_kind: str = 'formula'  # for CSV files: 'formula' or 'smiles'
  split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test when the dataset has no split of its own
  split_seed: int = 0
  resplit: bool = False  # True: ignore a dataset's published split and draw `split` with split_seed instead
  skip_invalid: bool = False  # drop (and count) bad rows instead of stopping
  min_split_size: int = 1
  exclude_from: str = ''  # comma-separated datasets whose inputs are removed (leakage control)
  unit: str = ''  # for CSV files: the targets' unit, e.g. 'eV/atom' (registered datasets know theirs)
  task: str = 'regression'  # regression | classification (two classes, sigmoid cross-entropy; elemnet_jax.tasks)
  positive: str = ''  # classification: the value that is the positive class ('' -> 1, or the second in sorted order)

  def __post_init__(self):
    split = _tuple(self, 'split')
    try:
      fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
      fractions = ()
    # the train split takes every row not drawn for val or test, so a train fraction below 1 - val - test
    # would silently train on more rows than asked for
    if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
      raise Invalid(f'{{at}}split={split!r}: give three non-negative fractions (train, val, test) that sum to 1')
    object.__setattr__(self, 'split', fractions)
    if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int) or self.split_seed < 0:
      raise Invalid(f'{{at}}split_seed={self.split_seed!r}: use a non-negative integer')  # numpy's generators' range
    _integer('min_split_size', self.min_split_size)  # an empty validation or test split fails only after training
    _choice('task', self.task, TASKS)
    _choice('input_kind', self.input_kind, INPUT_KINDS)
    if self.positive and self.task != 'classification':
      raise Invalid(f'{{at}}positive={self.positive!r}: names a class; it applies with {{at}}task=classification')
    if len(self.target_names) > 1 and self.task != 'regression':
      raise Invalid(
        f'{{at}}target={self.target!r}: several targets are regression targets; a classifier takes one target column'
      )

  @property
  def target_names(self) -> tuple[str, ...]:
    """The columns `target` names: one ('' for a registered dataset's default), or several (elemnet_jax.targets)."""
    return target_names(self.target)


@dataclasses.dataclass(frozen=True)
class FeaturizerConfig:
  """A featurizer's name and its own options (`elemnet_jax.featurizers`), checked by building it."""

  name: str = 'composition'
  options: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def from_dict(cls, values: dict) -> FeaturizerConfig:
    values = dict(values)
    return cls(values.pop('name', 'composition'), tuple(sorted(values.items())))

  def __post_init__(self):
    try:
      featurizers.build(self.to_dict())
    except (ValueError, TypeError) as error:
      raise Invalid(f'{{at}}featurizer: {error}') from None

  def to_dict(self) -> dict:
    return {'name': self.name, **dict(self.options)}


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
  drop_constant: bool = False  # drop feature columns constant on the training split
  standardize: bool = False  # scale each column to mean 0 and std 1 on the training split


@dataclasses.dataclass(frozen=True)
class FitConfig:
  """How one network trains: what a run's `train` section and a study's networks share."""

  batch_size: int = 32
  learning_rate: float = 1e-4
  optimizer: str = 'adam'  # adam | adamw
  weight_decay: float = 0.0  # adamw only
  decay_toward: str = 'zero'  # adamw: zero | start (L2-SP: toward the weights training started from)
  ema_decay: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights (per step)
  schedule: str = 'constant'  # constant | cosine (with warm-up)
  warmup_epochs: float = 0.0
  body_lr_scale: float = 1.0  # fine-tuning: learning-rate factor of unfrozen non-output layers
  loss: str = 'mae'  # mae | mse | huber (bce: classification's, set by dataset.task; nll: model.head=mean_variance's)
  max_epochs: int = 1000
  patience: int = 200
  ensemble_schedule: str = 'auto'  # vmap (members together) | sequential | auto: sequential on CPU
  mode: str = 'epoch'  # epoch: one compiled lax.scan per epoch; step: a Python loop (same result)
  eval_dropout_passes: int = 0  # > 0: evaluate as the mean of that many dropout passes
  log_every: int = 1

  def __post_init__(self):
    for field in ('learning_rate', 'weight_decay', 'ema_decay', 'warmup_epochs', 'body_lr_scale'):
      _number(self, field)
    for field, choices in (
      ('optimizer', OPTIMIZERS),
      ('schedule', SCHEDULES),
      ('loss', LOSSES),
      ('mode', MODES),
      ('ensemble_schedule', ENSEMBLE_SCHEDULES),
      ('decay_toward', DECAY_TOWARD),
    ):
      _choice(field, getattr(self, field), choices)
    decay = self.weight_decay
    if decay < 0:
      raise Invalid(f'{{at}}weight_decay={decay!r}: must be 0 or positive')
    if decay and self.optimizer != 'adamw':
      raise Invalid(f'{{at}}weight_decay={decay!r} has no effect with {{at}}optimizer={self.optimizer!r}: use adamw')
    if self.decay_toward == 'start' and not (decay and self.optimizer == 'adamw'):
      raise Invalid(
        "{at}decay_toward='start' needs {at}optimizer=adamw and a positive {at}weight_decay "
        f'(now {self.optimizer!r}, {decay!r})'
      )
    for field in ('batch_size', 'max_epochs', 'patience', 'log_every'):
      _integer(field, getattr(self, field))
    _integer('eval_dropout_passes', self.eval_dropout_passes, low=0)
    if not self.learning_rate > 0:
      raise Invalid(f'{{at}}learning_rate={self.learning_rate!r}: must be positive')
    if not 0 <= self.ema_decay < 1:
      raise Invalid(f'{{at}}ema_decay={self.ema_decay!r}: use 0 (off) or a value in (0, 1)')
    for field in ('body_lr_scale', 'warmup_epochs'):
      if not getattr(self, field) >= 0:
        raise Invalid(f'{{at}}{field}={getattr(self, field)!r}: must not be negative')

  def steps_per_epoch(self, n_train: int) -> int:
    return -(-n_train // self.batch_size)


@dataclasses.dataclass(frozen=True)
class TrainConfig(FitConfig):
  """A run's `train` section: how its network trains, and what only a whole run has."""

  ensemble: int = 1  # members, seeds seed..seed+ensemble-1, trained as ensemble_schedule says
  target_scaling: str = 'none'  # none | standard (statistics travel with the checkpoint); not when fine-tuning
  checkpoint_every: int = 1  # resumable checkpoints only at multiples of this many epochs
  checkpoint_seconds: float = 60.0  # and at least this many seconds apart (0: every such epoch); the last always
  data_parallel: bool = False  # shard each batch over all local devices (jax.sharding)
  retrain_with_validation: bool = False  # then train again on training + validation rows for the epochs chosen
  guard_epochs: int = 3  # unless an earlier epoch learned, stop if validation predictions are constant from this
  # epoch (and 200 steps) on, or no better than the training median from 4 x this epoch on (training.guard); 0: never
  calibration_fraction: float = 0.0  # > 0: this share of the training rows is set apart to calibrate the members'
  # spread (ensemble >= 2), apart from the validation rows early stopping chooses on; 0: calibrate on those

  def __post_init__(self):
    super().__post_init__()
    _number(self, 'checkpoint_seconds')
    _number(self, 'calibration_fraction')
    if not 0 <= self.calibration_fraction < 1:
      raise Invalid(
        f'{{at}}calibration_fraction={self.calibration_fraction!r}: give the share of the training rows set apart '
        'to calibrate the spread, in [0, 1) (0: calibrate on validation)'
      )
    _choice('target_scaling', self.target_scaling, TARGET_SCALINGS)
    for field in ('ensemble', 'checkpoint_every'):
      _integer(field, getattr(self, field))
    _integer('guard_epochs', self.guard_epochs, low=0)
    if not self.checkpoint_seconds >= 0:
      raise Invalid(f'{{at}}checkpoint_seconds={self.checkpoint_seconds!r}: must not be negative')


@dataclasses.dataclass(frozen=True)
class TargetTransferConfig:
  """How a fine-tuned network starts: what a run's `transfer` section and a study's target share."""

  reinit_head: bool = False  # draw the output layer afresh
  target_scaling: str = 'source'  # source: the pretrained model's target statistics; refit: the target train split's

  def __post_init__(self):
    _choice('target_scaling', self.target_scaling, SOURCE_SCALINGS)


@dataclasses.dataclass(frozen=True)
class TransferConfig(TargetTransferConfig):
  """A run's `transfer` section: fine-tuning from finished runs."""

  pretrained: str = ''  # workdir of a finished run to start from (several, comma-separated: one ensemble)
  freeze_layers: int = 0  # freeze the first k dense layers
  freeze_regex: tuple[str, ...] = ()  # or: regexes over parameter paths such as '^params/dense_[0-3]/'
  allow_collapsed_source: bool = False  # fine-tune even from a source whose metrics.json says it learned nothing
  head: str = ''  # '': the source's output head; point | mean_variance | hurdle: that head, its output layer redrawn

  def __post_init__(self):
    super().__post_init__()
    _choice('head', self.head, ('', *heads.HEADS))
    _tuple(self, 'freeze_regex')
    _integer('freeze_layers', self.freeze_layers, low=0)
    if not self.pretrained:  # what applies only to a fine-tune, set without a source
      for field in ('reinit_head', 'target_scaling', 'freeze_layers', 'freeze_regex', 'head'):
        if getattr(self, field) != getattr(TransferConfig, field):
          raise Invalid(
            f'{{at}}{field}={getattr(self, field)!r}: applies only when fine-tuning ({{at}}pretrained, or the '
            'finetune command)'
          )


def check_fields(cls, values: Any, where: str) -> None:
  """One line for a config section (`where`: its dotted name, '' for the whole config) that is not a dict of
  `cls`'s fields."""
  if not isinstance(values, dict):
    raise UserError(f'--config.{where}={values!r}: a section of fields')
  names = [field.name for field in dataclasses.fields(cls)]
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise UserError(
      f'--config.{".".join(filter(None, [where, unknown[0]]))}: no such field (the fields: {", ".join(names)})'
    )


def section(cls, values: Any, where: str):
  """The typed section `cls` of a config section's fields; one line for a field it lacks or a bad value."""
  check_fields(cls, values, where)
  try:
    return cls(**values)
  except Invalid as error:
    raise error.at(where) from None


def default_model(family: str = 'elemnet') -> ModelConfig:
  """A family's network as the configs ship it: the paper's ElemNet without dropout (elemnet; residual: IRNet-style
  blocks of the same widths), or the family's defaults."""
  if family in ('elemnet', 'residual'):
    return ElemNetConfig(use_dropout=False, name=family)
  return model_section({'name': family})


def model_section(values: Any, where: str = 'model') -> ModelConfig:
  try:
    return config_from_dict(dict(values))
  except (TypeError, ValueError) as error:
    raise UserError(f'--config.{where}: {error}') from None


def with_outputs(model: ModelConfig, outputs: int) -> ModelConfig:
  """`model` with one output per target; an `outputs` set to another count than 1 (unset) is refused."""
  if model.outputs not in (1, outputs):
    raise Invalid(f'{{at}}model.outputs={model.outputs!r}: a run sets it, one per target of {{at}}dataset.target')
  try:
    return dataclasses.replace(model, outputs=outputs)
  except ValueError as error:  # a head other than point models one target
    raise Invalid(f'{{at}}model: {error}') from None


_RUN_SECTIONS = {
  'dataset': lambda values, where: section(DatasetConfig, values, where),
  'featurizer': lambda values, where: _featurizer(values, where),
  'features': lambda values, where: section(FeaturesConfig, values, where),
  'model': lambda values, where: model_section(values, where),
  'train': lambda values, where: section(TrainConfig, values, where),
  'transfer': lambda values, where: section(TransferConfig, values, where),
}


def _featurizer(values: Any, where: str) -> FeaturizerConfig:
  try:
    return FeaturizerConfig.from_dict(values)
  except Invalid as error:
    raise UserError(error.message.replace('{at}featurizer', f'--config.{where}')) from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One training run (`train`, `finetune`): its data, features, network and training."""

  seed: int = 0
  data_dir: str = ''  # '' -> $ELEMNET_JAX_DATA, else the cache and public addresses
  dataset: DatasetConfig = DatasetConfig()
  featurizer: FeaturizerConfig = FeaturizerConfig()
  features: FeaturesConfig = FeaturesConfig()
  model: ModelConfig | None = None  # None: the network of transfer.pretrained (a fine-tune); its `outputs` is set
  # here, one per target of dataset.target (1 in a config file: unset)
  train: TrainConfig = TrainConfig()
  transfer: TransferConfig = TransferConfig()

  @classmethod
  def from_dict(cls, values: Any, where: str = '') -> RunConfig:
    check_fields(cls, values, where.rstrip('.'))
    fields = {
      name: _RUN_SECTIONS[name](value, where + name) if name in _RUN_SECTIONS else value
      for name, value in values.items()
    }
    try:
      return cls(**fields)
    except Invalid as error:
      raise error.at(where.rstrip('.')) from None

  def __post_init__(self):
    check_seed(self.seed, count=self.train.ensemble)
    if self.model is None and not self.transfer.pretrained:
      raise Invalid('{at}model: absent; a run that fine-tunes nothing ({at}transfer.pretrained) needs one')
    if self.model is not None:
      object.__setattr__(self, 'model', with_outputs(self.model, len(self.dataset.target_names)))
    loss, task = self.train.loss, self.dataset.task
    if self.model is not None:  # the loss the head trains with (mean_variance: nll); one that contradicts it refused
      try:
        loss = heads.resolve(self.model.head, loss, task)
      except ValueError as error:
        raise Invalid(str(error)) from None
      object.__setattr__(self, 'train', dataclasses.replace(self.train, loss=loss))
    if task == 'regression' and loss == 'bce':
      raise Invalid('{at}train.loss=bce is the loss of classification; add {at}dataset.task=classification')
    if task == 'classification':  # sigmoid cross-entropy on unscaled 0/1 labels; the guard judges it when done
      # target_scaling is a regression recipe's (the `oqmd` recipe standardises): labels are never scaled
      for field, value in (('loss', 'bce'), ('guard_epochs', 0)):
        if getattr(self.train, field) not in (value, getattr(TrainConfig, field)):
          raise Invalid(f'{{at}}train.{field}={getattr(self.train, field)!r}: classification trains with {value!r}')
      train = dataclasses.replace(self.train, loss='bce', target_scaling='none', guard_epochs=0)
      object.__setattr__(self, 'train', train)

  def to_dict(self) -> dict:
    """The config as plain data, as config.json records it."""
    return {
      field.name: plain(getattr(self, field.name))
      for field in dataclasses.fields(self)
      if getattr(self, field.name) is not None
    }

  def replace(self, fields: dict[str, Any]) -> RunConfig:
    """This config with dotted fields set: config.replace({'train.max_epochs': 2}); checked again."""
    return type(self).from_dict(with_fields(self.to_dict(), fields))
