"""Named configs: `get_config()` of each module here returns an `ml_collections.ConfigDict`.

default (ElemNet's paper hyperparameters), oqmd (the pretraining recipe), finetune (SSUB), paper (the
full transfer study), demo (its reduced budget), porphyrin_tl (molecules; variants :HOMO, :LUMO,
:cross), test (tiny, for the tests). A command's `--config=NAME[:VARIANT]` names one of them, or a path.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ('default', 'oqmd', 'finetune', 'paper', 'demo', 'porphyrin_tl', 'test')


def path_of(name: str) -> str:
  """The file of a named config (`NAME` or `NAME:VARIANT`, the variant kept); any other value is a path."""
  base, _, variant = name.partition(':')
  if base in NAMES:
    return str(Path(__file__).with_name(f'{base}.py')) + (f':{variant}' if variant else '')
  return name


def get_config(name: str):
  """The ConfigDict of a named config, e.g. `get_config('paper')` or `get_config('porphyrin_tl:HOMO')`."""
  import importlib

  base, _, variant = name.partition(':')
  if base not in NAMES:
    raise ValueError(f'unknown config {name!r}; named configs: {", ".join(NAMES)}')
  module = importlib.import_module(f'elemnet_jax.configs.{base}')
  return module.get_config(variant) if variant else module.get_config()


def resolve(config):
  """The typed config that library calls take: `schema.RunConfig` for a run, `study_schema.StudyConfig` for a
  study (a config with a `study` section), from an `ml_collections.ConfigDict`, from the plain dict a workdir
  recorded (`workdir.read_config`), or a typed one as it is. A value that cannot run: one-line UserError."""
  from elemnet_jax.configs import schema, study_schema

  if isinstance(config, schema.RunConfig | study_schema.StudyConfig):
    return config
  values = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  return (study_schema.StudyConfig if 'study' in values else schema.RunConfig).from_dict(values)
