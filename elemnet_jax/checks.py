"""Config validation at the boundary: a ConfigDict in, typed values or a one-line UserError out."""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, config_from_dict
from elemnet_jax.training.fit import FitOptions
from elemnet_jax.training.optimizer import learning_rate_schedule

_CHOICES = {
  'optimizer': ('adam', 'adamw'),
  'schedule': ('constant', 'cosine'),
  'loss': ('mae', 'mse', 'huber', 'bce', 'nll'),
  'mode': ('epoch', 'step'),
  'ensemble_schedule': ('auto', 'vmap', 'sequential'),
  'target_scaling': ('none', 'standard'),
  'decay_toward': ('zero', 'start'),
}
# The train settings `fit` takes as they are.
_FIT_FIELDS = (
  'batch_size max_epochs patience loss log_every mode eval_dropout_passes ema_decay ensemble_schedule'.split()
)
_POSITIVE_INTEGERS = ('batch_size', 'max_epochs', 'patience', 'ensemble', 'checkpoint_every', 'log_every')
_NOT_NEGATIVE = ('body_lr_scale', 'warmup_epochs', 'eval_dropout_passes', 'checkpoint_seconds', 'guard_epochs')
_REAL = ('learning_rate', 'weight_decay', 'ema_decay', 'warmup_epochs', 'body_lr_scale', 'calibration_fraction')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The training settings of one run (a config's `train` section), checked."""

  batch_size: int = 32
  learning_rate: float = 1e-4
  optimizer: str = 'adam'
  weight_decay: float = 0.0
  decay_toward: str = 'zero'
  ema_decay: float = 0.0
  schedule: str = 'constant'
  warmup_epochs: float = 0.0
  body_lr_scale: float = 1.0
  loss: str = 'mae'
  max_epochs: int = 1000
  patience: int = 200
  ensemble: int = 1
  mode: str = 'epoch'
  ensemble_schedule: str = 'auto'
  eval_dropout_passes: int = 0
  target_scaling: str = 'none'
  checkpoint_every: int = 1
  checkpoint_seconds: float = 60.0
  log_every: int = 1
  data_parallel: bool = False
  retrain_with_validation: bool = False
  guard_epochs: int = 3
  calibration_fraction: float = 0.0

  @classmethod
  def from_config(cls, section: ml_collections.ConfigDict, where: str = 'train') -> TrainConfig:
    """Reads and checks `section`; a field it lacks takes the default above."""
    names = {field.name for field in dataclasses.fields(cls)}
    config = cls(**{key: value for key, value in section.items() if key in names})
    config.check(where)
    return config

  def check(self, where: str = 'train') -> None:
    """Rejects settings that would otherwise fail deep inside JAX or optax."""
    for field in _REAL:
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f'--config.{where}.{field}={value!r}: must be a finite number')
    for field, choices in _CHOICES.items():
      if getattr(self, field) not in choices:
        raise UserError(f'--config.{where}.{field}={getattr(self, field)!r}: use one of {", ".join(choices)}')
    decay = self.weight_decay
    if decay < 0:
      raise UserError(f'--config.{where}.weight_decay={decay!r}: must be 0 or positive')
    if decay and self.optimizer != 'adamw':
      raise UserError(
        f'--config.{where}.weight_decay={decay!r} has no effect with '
        f'--config.{where}.optimizer={self.optimizer!r}: use adamw'
      )
    if self.decay_toward == 'start' and not (decay and self.optimizer == 'adamw'):
      raise UserError(
        f"--config.{where}.decay_toward='start' needs --config.{where}.optimizer=adamw and a positive "
        f'--config.{where}.weight_decay (now {self.optimizer!r}, {decay!r})'
      )
    for field in _POSITIVE_INTEGERS:
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise UserError(f'--config.{where}.{field}={value!r}: must be a positive integer')
    if not self.learning_rate > 0:
      raise UserError(f'--config.{where}.learning_rate={self.learning_rate!r}: must be positive')
    if not 0 <= self.calibration_fraction < 1:
      raise UserError(
        f'--config.{where}.calibration_fraction={self.calibration_fraction!r}: give the share of the training rows '
        'set apart to calibrate the spread, in [0, 1) (0: calibrate on validation)'
      )
    if not 0 <= self.ema_decay < 1:
      raise UserError(f'--config.{where}.ema_decay={self.ema_decay!r}: use 0 (off) or a value in (0, 1)')
    for field in _NOT_NEGATIVE:
      if not getattr(self, field) >= 0:
        raise UserError(f'--config.{where}.{field}={getattr(self, field)!r}: must not be negative')

  def steps_per_epoch(self, n_train: int) -> int:
    return -(-n_train // self.batch_size)

  def fit_options(self, target_scale: float, n_train: int) -> FitOptions:
    """What `fit` takes for `n_train` training rows whose targets are in units of `target_scale`."""
    steps = self.steps_per_epoch(n_train)
    rate = learning_rate_schedule(
      self.learning_rate, self.schedule, int(self.warmup_epochs * steps), self.max_epochs * steps
    )
    return FitOptions(
      **{name: getattr(self, name) for name in _FIT_FIELDS},
      log_scale=target_scale,
      learning_rate=rate if callable(rate) else (lambda step, rate=rate: rate),
    )


def check_train_config(section, where: str = 'train') -> TrainConfig:
  return TrainConfig.from_config(section, where)


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
  if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
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


def model_config_from(config) -> ModelConfig:
  try:
    return config_from_dict({**config.model.to_dict(), 'head': config.model.get('head') or 'point'})  # '': point
  except (TypeError, ValueError) as error:
    raise UserError(f'--config.model: {error}') from None
