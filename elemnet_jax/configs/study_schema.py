"""The typed config of a transfer study (`study`): its source run, its target and the study's own section.

The target holds only what a study reads of it: its data, how each network trains and how a fine-tuned
one starts. The rest of a fine-tune's fields have study counterparts (`study.seeds` for the ensemble,
`study.pretrained`, `study.freeze_layers`, `study.retrain_with_validation`) or do not apply.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from elemnet_jax.configs.schema import (
  METHODS,
  DatasetConfig,
  FitConfig,
  Invalid,
  RunConfig,
  TargetTransferConfig,
  check_fields,
  check_seed,
  default_model,
  plain,
  section,
  with_fields,
)
from elemnet_jax.errors import UserError
from elemnet_jax.models.elemnet import head_network

NETWORK_METHODS = ('scratch', 'finetune', 'head')
CLASSIFIER_METHODS = NETWORK_METHODS  # the methods that can learn a logit


@dataclasses.dataclass(frozen=True)
class TargetConfig:
  """A study's target: its dataset, how fine-tuning trains (`train`) and starts (`transfer`)."""

  dataset: DatasetConfig = DatasetConfig()
  train: FitConfig = FitConfig()
  transfer: TargetTransferConfig = TargetTransferConfig()


@dataclasses.dataclass(frozen=True)
class StudySection:
  pretrained: str = ''  # workdir of a finished pretraining run to reuse (several, comma-separated: one ensemble)
  exclude_target_from_source: bool = False  # leakage control: drop target compositions from the source
  folds: int = 0  # 0: the fixed split target.dataset.split; k >= 2: k-fold cross-validation
  val_fraction: float = 0.1  # with folds: share of all examples held out for early stopping
  rotate_validation: bool = False  # seed k >= 1 stops on its own random block of the training rows
  retrain_with_validation: bool = False  # train again on training + validation rows for the epochs they chose
  learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3)  # each network keeps the rate validation prefers; ()
  # for train's own
  train_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
  seeds: int = 3
  methods: tuple[str, ...] = ('scratch', 'finetune', 'featurizer', 'direct')
  freeze_layers: tuple[int, ...] = (0, 4, 10)  # fine-tuning depths: 0 = every layer trains
  featurizer_layer: int = 16  # hidden layer whose activations feed ridge and the head network
  head_widths: tuple[int, ...] = (64, 32)  # method 'head': a small network on those activations, trained as scratch
  min_train_size: int = 8
  allow_collapsed_source: bool = False  # transfer even from a source whose metrics.json says it learned nothing
  scratch_train: FitConfig = FitConfig()  # scratch and the head network (fine-tuning: target.train)
  choose_source: bool = False  # with several sources in `pretrained`: a study from each, the one validation prefers
  # kept per depth, size and fold (elemnet_jax.study.choice)

  def __post_init__(self):
    for field in ('learning_rates', 'train_fractions', 'methods', 'freeze_layers', 'head_widths'):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    methods = self.methods
    if not methods:
      raise Invalid(f'{{at}}methods is empty; choose from {METHODS}')
    for method in methods:
      if method not in METHODS:
        raise Invalid(f'{{at}}methods: unknown method {method!r}; choose from {METHODS}')
    if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
      raise Invalid(f'{{at}}seeds={self.seeds}: must be at least 1')
    if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0 or self.folds == 1:
      raise Invalid(f'{{at}}folds={self.folds}: use 0 (a fixed split) or 2 and more')
    if not 0 < self.val_fraction < 1:
      raise Invalid(
        f'{{at}}val_fraction={self.val_fraction}: give the share of all examples held out for validation under '
        'cross-validation, between 0 and 1 (exclusive)'
      )
    self._check_validation_options()
    rates = self.learning_rates
    if not all(isinstance(r, float | int) and not isinstance(r, bool) and r > 0 for r in rates):
      raise Invalid(f'{{at}}learning_rates={rates}: give positive rates, e.g. (1e-4,3e-4,1e-3), or ()')
    for field in ('methods', 'freeze_layers', 'train_fractions', 'learning_rates'):  # a repeat would run twice
      values = getattr(self, field)
      if len(set(values)) != len(values):
        raise Invalid(f'{{at}}{field}={values}: name each value once')
    if not all(0 < f <= 1 for f in self.train_fractions):
      raise Invalid(f'{{at}}train_fractions={self.train_fractions}: each must be in (0, 1]')
    head_network(self.head_widths)
    self._refuse_unread()
    if self.choose_source:
      names = [name.strip() for name in self.pretrained.split(',') if name.strip()]
      if len(names) < 2:
        raise Invalid(
          '{at}choose_source=True needs two or more sources in {at}pretrained (comma-separated), '
          f'got {self.pretrained!r}'
        )
      if len(set(names)) < len(names):
        raise Invalid(f'{{at}}pretrained={self.pretrained!r} names a source twice')

  def _check_validation_options(self) -> None:
    if self.rotate_validation and self.seeds < 2:
      raise Invalid(
        '{at}rotate_validation=True needs {at}seeds >= 2: '
        "the first seed keeps the split's own validation rows, so with one seed nothing rotates"
      )
    if self.rotate_validation and not set(NETWORK_METHODS) & set(self.methods):
      raise Invalid(
        '{at}rotate_validation=True rotates the seeds of scratch, finetune and head; '
        f'{{at}}methods={self.methods} has none of them'
      )
    if self.retrain_with_validation and not {'scratch', 'finetune', 'head', 'featurizer'} & set(self.methods):
      raise Invalid(
        '{at}retrain_with_validation=True retrains scratch, finetune, head and featurizer; '
        f'{{at}}methods={self.methods} has none of them'
      )

  def _refuse_unread(self) -> None:
    """Cross-validation's share, set without cross-validation: one line. (Method settings such as head_widths stay
    quiet when their method is not chosen: a config names them once for the runs that choose it.)"""
    if self.folds == 0 and self.val_fraction != StudySection.val_fraction:
      raise Invalid(f'{{at}}val_fraction={self.val_fraction!r}: applies only with {{at}}folds >= 2')


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """A transfer study: `source` pretrains (unless study.pretrained names finished runs), `target` is learned."""

  seed: int = 0
  data_dir: str = ''  # of the target (the source run has its own, source.data_dir)
  source: RunConfig = RunConfig(model=default_model())
  target: TargetConfig = TargetConfig()
  study: StudySection = StudySection()

  @classmethod
  def from_dict(cls, values: Any) -> StudyConfig:
    check_fields(cls, values, '')
    fields = dict(values)
    if 'source' in fields:
      fields['source'] = RunConfig.from_dict(fields['source'], 'source.')
    if 'target' in fields:
      fields['target'] = _sections(TargetConfig, fields['target'], 'target')
    if 'study' in fields:
      fields['study'] = _sections(StudySection, fields['study'], 'study')
    try:
      return cls(**fields)
    except Invalid as error:
      raise error.at('') from None

  def __post_init__(self):
    study, target = self.study, self.target
    if self.source.dataset.task != 'regression':
      raise Invalid('{at}source.dataset.task: a study transfers from a regression source')
    if len(target.dataset.target_names) > 1:
      raise Invalid(f'{{at}}target.dataset.target={target.dataset.target!r}: a study compares one target')
    self._set_task()
    check_seed(self.seed, count=study.seeds)
    rates = study.learning_rates
    for where, train in (('target.train', target.train), ('study.scratch_train', study.scratch_train)):
      if rates and train.learning_rate not in rates:
        raise Invalid(
          f'{{at}}{where}.learning_rate={train.learning_rate:g} is not used: each network trains at the rate of '
          f'{{at}}study.learning_rates={rates} its validation MAE prefers; add it there or pass '
          '"--config.study.learning_rates=()"'
        )

  def _set_task(self) -> None:
    """A classification target: its networks (fine-tuned, scratch, head) learn a logit with sigmoid cross-entropy."""
    study, target = self.study, self.target
    classify = target.dataset.task == 'classification'
    unfit = set(study.methods) - set(CLASSIFIER_METHODS)
    if classify and unfit:
      raise Invalid(
        f'{{at}}study.methods: {", ".join(sorted(unfit))} cannot classify; a classification study runs '
        f'{", ".join(CLASSIFIER_METHODS)}'
      )
    for where, train in (('target.train', target.train), ('study.scratch_train', study.scratch_train)):
      if classify and train.loss not in ('bce', FitConfig.loss):
        raise Invalid(f"{{at}}{where}.loss={train.loss!r}: classification trains with 'bce'")
      if not classify and train.loss == 'bce':
        raise Invalid(
          f'{{at}}{where}.loss=bce is the loss of classification; add {{at}}target.dataset.task=classification'
        )
    if classify:
      object.__setattr__(
        self, 'target', dataclasses.replace(target, train=dataclasses.replace(target.train, loss='bce'))
      )
      scratch = dataclasses.replace(study.scratch_train, loss='bce')
      object.__setattr__(self, 'study', dataclasses.replace(study, scratch_train=scratch))

  def to_dict(self) -> dict:
    return {field.name: plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

  def replace(self, fields: dict[str, Any]) -> StudyConfig:
    """This config with dotted fields set: config.replace({'study.seeds': 2}); checked again."""
    return type(self).from_dict(with_fields(self.to_dict(), fields))


def _sections(cls, values: Any, where: str):
  """`cls` from its fields, the typed sections among them (a train section) read first."""
  if not isinstance(values, dict):
    raise UserError(f'--config.{where}={values!r}: a section of fields')
  values = dict(values)
  for field in dataclasses.fields(cls):
    kind = field.default.__class__ if dataclasses.is_dataclass(field.default) else None
    if kind is not None and field.name in values:
      values[field.name] = section(kind, values[field.name], f'{where}.{field.name}')
  return section(cls, values, where)
