"""Recorded configs (config.json, study_config.json) brought to the current layout, one version at a time.

A config records `config_version`; one written before that field existed is version 0. `STEPS[v]` turns
a config of version v into one of version v + 1, naming every field it adds, renames or removes by its
full dotted path. A field that an older config lacks reads as the value that behaves as its absence did.
To add a config field: give it a default in `configs.schema`, and add it here in a new step (append to
`STEPS`) with the value that behaves as before the field existed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

VERSION_KEY = 'config_version'

# Fields a run config (a study's source and target too) lacked before version 1: the value that acts as their absence.
_RUN_FIELDS_V1 = {
  'dataset.exclude_from': '',
  'dataset.resplit': False,
  'dataset.unit': '',
  'dataset.task': 'regression',
  'dataset.positive': '',
  'train.decay_toward': 'zero',
  'train.ema_decay': 0.0,
  'train.checkpoint_seconds': 60.0,
  'train.retrain_with_validation': False,
  'train.guard_epochs': 3,
  'train.calibration_fraction': 0.0,
  'transfer.allow_collapsed_source': False,
}
_TRAIN_FIELDS_V1 = {path[6:]: value for path, value in _RUN_FIELDS_V1.items() if path.startswith('train.')}
_ESTATE_FIELDS_V1 = {'morgan_bits': 0, 'morgan_radius': 2, 'max_atoms': 500}
_STUDY_FIELDS_V1 = {
  'study.rotate_validation': False,
  'study.retrain_with_validation': False,
  'study.learning_rates': [],
  'study.head_widths': [64, 32],
  'study.allow_collapsed_source': False,
  'study.choose_source': False,
  **{f'study.scratch_train.{name}': value for name, value in _TRAIN_FIELDS_V1.items()},
}


def _has(config: dict, dotted: str) -> bool:
  node = config
  for key in dotted.split('.'):
    if not isinstance(node, dict) or key not in node:
      return False
    node = node[key]
  return True


def add(config: dict, dotted: str, value: Any) -> None:
  """Sets the field at `dotted` unless the config has it; its section must exist (else nothing is added)."""
  *sections, name = dotted.split('.')
  node = config
  for key in sections:
    node = node.get(key) if isinstance(node, dict) else None
  if isinstance(node, dict) and name not in node:
    node[name] = copy.deepcopy(value)


def remove(config: dict, dotted: str) -> None:
  if _has(config, dotted):
    *sections, name = dotted.split('.')
    node = config
    for key in sections:
      node = node[key]
    del node[name]


def run_prefixes(config: dict) -> list[str]:
  """Where run configs sit: the whole config of a run; a study's source and target."""
  return ['source.', 'target.'] if 'study' in config else ['']


def _to_v1(config: dict) -> None:
  """Version 0 (no `config_version`): the fields added before versions were recorded, filled by full path."""
  for prefix in run_prefixes(config):
    for dotted, value in _RUN_FIELDS_V1.items():
      add(config, prefix + dotted, value)
    if _has(config, prefix + 'model'):
      add(config, prefix + 'model.name', 'elemnet')
      add(config, prefix + 'model.outputs', 1)  # unset: the run sets one per target of dataset.target
    if _has(config, prefix + 'featurizer.name') and _at(config, prefix + 'featurizer.name') == 'estate':
      for name, value in _ESTATE_FIELDS_V1.items():
        add(config, f'{prefix}featurizer.{name}', value)
  if 'study' in config:
    for dotted, value in _STUDY_FIELDS_V1.items():
      add(config, dotted, value)


def _at(config: dict, dotted: str) -> Any:
  node = config
  for key in dotted.split('.'):
    node = node[key]
  return node


# Fields of a study's target and scratch training that no study read, removed in version 2: the target is
# featurized, scaled and trained as the source model is, and study.* says the ensemble, sources, depths and retraining.
_RUN_ONLY_TRAIN = (
  'ensemble',
  'target_scaling',
  'checkpoint_every',
  'checkpoint_seconds',
  'data_parallel',
  'calibration_fraction',
)
_STUDY_FIELDS_REMOVED_V2 = (
  *('target.seed', 'target.data_dir', 'target.featurizer', 'target.features', 'target.model'),
  *(f'target.transfer.{name}' for name in ('pretrained', 'freeze_layers', 'freeze_regex', 'allow_collapsed_source')),
  *(
    f'{section}.{name}'
    for section in ('target.train', 'study.scratch_train')
    for name in (*_RUN_ONLY_TRAIN, 'retrain_with_validation', 'guard_epochs')
  ),
)


def _to_v2(config: dict) -> None:
  if 'study' in config:
    for dotted in _STUDY_FIELDS_REMOVED_V2:
      remove(config, dotted)


def _to_v3(config: dict) -> None:
  """Output heads (`elemnet_jax.models.heads`): before them every network had the point head, and a fine-tune
  kept its source's (`transfer.head=''`)."""
  for prefix in run_prefixes(config):
    if prefix != 'target.':  # a study's target trains its source's network
      add(config, prefix + 'model.head', 'point')
      add(config, prefix + 'transfer.head', '')


STEPS: list[Callable[[dict], None]] = [_to_v1, _to_v2, _to_v3]
CURRENT = len(STEPS)


def migrate(recorded: dict, where: str = 'config.json') -> dict:
  """A recorded config in the current layout, without its `config_version` (a copy; `recorded` is unchanged)."""
  config = copy.deepcopy(recorded)
  version = config.pop(VERSION_KEY, 0)
  if not isinstance(version, int) or not 0 <= version <= CURRENT:
    raise ValueError(f'{where}: config_version {version!r} is not one this code reads (0..{CURRENT})')
  for step in STEPS[version:]:
    step(config)
  return config


def record(config: dict) -> dict:
  """What a workdir records: the config and the version of its layout."""
  return {**config, VERSION_KEY: CURRENT}
