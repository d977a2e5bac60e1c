"""Every field of every shipped config acts or is refused.

Each leaf of each shipped config (every variant), changed alone to another value of its kind, either
reaches the typed config the command resolves (what the run records in config.json and reads) unchanged,
or is refused in one line; and every field of the typed sections is read by the library outside the
config modules (an attribute access: `config.train.patience`).
"""

import ast
import dataclasses
from pathlib import Path

import pytest

from elemnet_jax import configs
from elemnet_jax.configs import schema, study_schema
from elemnet_jax.errors import UserError
from elemnet_jax.models import FAMILIES

SHIPPED = [
  'default',
  'default:residual',
  'default:transformer',
  'oqmd',
  'oqmd:transformer',
  'finetune',
  'paper',
  'paper:transformer',
  'demo',
  'porphyrin_tl',
  'porphyrin_tl:HOMO',
  'porphyrin_tl:LUMO',
  'porphyrin_tl:cross',
  'test',
  'test:train,residual',
  'test:train,transformer',
  'test:study',
  'test:study,residual',
  'test:study,transformer',
]
CHOICES = [
  schema.OPTIMIZERS,
  schema.SCHEDULES,
  schema.LOSSES[:3],
  schema.MODES,
  schema.ENSEMBLE_SCHEDULES,
  schema.TARGET_SCALINGS,
  schema.DECAY_TOWARD,
  schema.SOURCE_SCALINGS,
  schema.TASKS,
  schema.INPUT_KINDS,
]


def _leaves(tree: dict, prefix: str = ''):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _changed(value):
  """Another value of the same kind: a choice's other choice, a number moved, a tuple one shorter or longer."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return value / 2 if value >= 0.5 else value + 0.25
  if isinstance(value, str):
    choices = next((c for c in CHOICES if value in c), None)
    return choices[(choices.index(value) + 1) % len(choices)] if choices else value + 'x'
  if isinstance(value, tuple | list):
    return tuple(value[:-1]) if len(value) > 1 else tuple(value) + (value[0] if value else 'x',)
  raise AssertionError(f'no change for {value!r}')


def _at(tree, dotted: str):
  for key in dotted.split('.'):
    tree = tree[key]
  return tree


def _plain(value):
  return list(value) if isinstance(value, tuple | list) else value


@pytest.mark.parametrize('name', SHIPPED)
def test_every_leaf_changed_alone_reaches_the_resolved_config_or_is_refused(name):
  config = configs.get_config(name)
  if 'model' not in config and 'study' not in config:  # finetune: the command names the source
    config.transfer.pretrained = 'source'
  values = config.to_dict()
  resolved = configs.resolve(values).to_dict()
  reached, refused = [], []
  for dotted, value in _leaves(values):
    changed = _changed(value)
    try:
      typed = configs.resolve(schema.with_fields(values, {dotted: changed})).to_dict()
    except UserError as error:
      assert '\n' not in str(error) and '--config.' in str(error), (dotted, str(error))
      refused.append(dotted)
      continue
    # it reaches the typed config as set: a field silently reset, or dropped, fails here
    assert _plain(_at(typed, dotted)) == pytest.approx(_plain(changed)) and typed != resolved, (dotted, changed)
    reached.append(dotted)
  assert len(reached) > len(refused) > 0  # most fields take another value; a few have no other that can run


def _read_attributes() -> set[str]:
  """The attribute names the library reads outside the config modules (and the migrations that name fields)."""
  package = Path(configs.__file__).parents[1]
  names = set()
  for path in package.rglob('*.py'):
    if 'configs' in path.parts or path.name == 'migrations.py':
      continue
    names |= {node.attr for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)}
  return names


SECTIONS = [
  schema.DatasetConfig,
  schema.FeaturesConfig,
  schema.FitConfig,
  schema.TrainConfig,
  schema.TargetTransferConfig,
  schema.TransferConfig,
  schema.RunConfig,
  study_schema.TargetConfig,
  study_schema.StudySection,
  study_schema.StudyConfig,
  *(config_class for config_class, _ in FAMILIES.values()),
]


@pytest.mark.parametrize('section', SECTIONS, ids=lambda section: section.__name__)
def test_every_typed_field_is_read_by_the_library(section):
  read = _read_attributes()
  own = [
    field.name for field in dataclasses.fields(section) if field.name in section.__dict__.get('__annotations__', {})
  ]
  assert own and not [name for name in own if name not in read]
