"""Shared fixtures. Tests read the real datasets through the project's own fetch path: from
$ELEMNET_JAX_DATA (CI points it at ../shared/data when that exists), else the cache, the public
address or a published package. A test whose dataset cannot be had that way skips, saying why."""

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / 'shared' / 'data'
if not os.environ.get('ELEMNET_JAX_DATA') and _SHARED.exists():
  os.environ['ELEMNET_JAX_DATA'] = str(_SHARED)

_XLA_CACHE = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config):
  # One test run shares its compiled XLA programs: the xdist workers and every command a test starts
  # read one persistent compilation cache, created empty here and removed at the end. A program is
  # then compiled once per run instead of once per process (tests start about a hundred processes).
  # JAX writes an entry in place: one it cannot read whole (a writer cut off) is compiled again, with a
  # warning; a test that limits a process's file sizes turns the cache off for that process.
  if hasattr(config, 'workerinput') or _XLA_CACHE in os.environ:
    return
  config.xla_cache = tempfile.mkdtemp(prefix='elemnet_jax_test_xla_')
  os.environ[_XLA_CACHE] = config.xla_cache
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


def pytest_unconfigure(config):
  if getattr(config, 'xla_cache', None):
    shutil.rmtree(config.xla_cache, ignore_errors=True)


@functools.cache
def _unavailable(name: str) -> str:
  from elemnet_jax.data import datasets
  from elemnet_jax.errors import UserError

  try:
    datasets.load_table(name)
  except UserError as error:
    return str(error)
  return ''


def require_dataset(name: str) -> None:
  """Skips the calling test when the registered dataset `name` cannot be obtained here."""
  reason = _unavailable(name)
  if reason:
    pytest.skip(f'{name} cannot be obtained here: {reason[:300]}')


# Ring systems and substituents from which the molecules fixture is built (every SMILES RDKit parses).
_CORES = ('c1ccccc1', 'c1ccncc1', 'C1CCCCC1', 'c1ccc2ccccc2c1', 'c1ccoc1', 'c1ccsc1', 'C1CCNCC1', 'c1cn[nH]c1')
_GROUPS = ('', 'C', 'CC', 'O', 'N', 'Cl', 'F', 'Br', 'C#N', 'OC', 'C(F)(F)F', 'N(C)C', 'S', 'C=O', 'C(=O)O')


def molecule_rows() -> list[tuple[str, float]]:
  """400 molecules with a property RDKit computes (Crippen logP), some with a metal fragment."""
  from rdkit import Chem, rdBase
  from rdkit.Chem import Crippen

  seen, rows, quiet = set(), [], rdBase.BlockLogs()  # the combinations RDKit refuses are skipped
  for i, core in enumerate(_CORES):
    for j, left in enumerate(_GROUPS):
      for k, right in enumerate(_GROUPS[:: 1 + (i + j) % 3]):
        smiles = left + core + right + ('.[Zn]' if (i + j + k) % 11 == 0 else '')
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or Chem.MolToSmiles(mol) in seen:
          continue
        seen.add(Chem.MolToSmiles(mol))
        rows.append((smiles, round(Crippen.MolLogP(mol), 4)))
  del quiet
  return rows[:400]


@pytest.fixture(scope='session')
def molecules_csv(tmp_path_factory) -> Path:
  """A CSV `smiles,logp` of real molecules and one row RDKit cannot parse (row 3)."""
  rows = molecule_rows()
  rows.insert(1, ('C1CC(', 1.0))
  path = tmp_path_factory.mktemp('molecules') / 'molecules.csv'
  path.write_text('smiles,logp\n' + ''.join(f'{s},{v}\n' for s, v in rows))
  return path


def molecule_fields(path: Path) -> dict:
  """Config fields that train on the molecules CSV with the E-state featurizer."""
  return {
    'dataset.name': str(path),
    'dataset.target': 'logp',
    'dataset.input_column': 'smiles',
    'dataset.input_kind': 'smiles',
    'dataset.skip_invalid': True,
    'featurizer.name': 'estate',
  }


@pytest.fixture(scope='session')
def data_dir() -> Path:
  return Path(os.environ.get('ELEMNET_JAX_DATA', '.'))


def config_dict_with(name: str = 'test', fields: dict | None = None):
  """A named config (an ml_collections.ConfigDict, as a config file gives it) with dotted fields set."""
  from elemnet_jax import configs

  config = configs.get_config(name)
  for dotted, value in (fields or {}).items():
    *path, last = dotted.split('.')
    section = config
    for key in path:
      section = section[key]
    section[last] = value
  return config


def config_with(name: str = 'test', fields: dict | None = None):
  """A named config with dotted fields set, as the commands resolve it: config_with('test', {'train.max_epochs': 2})."""
  from elemnet_jax import configs

  return configs.resolve(config_dict_with(name, fields))


def pretrain_legacy(path: Path, fields: dict | None = None) -> Path:
  """A tiny model pretrained on qmpy_legacy in `path` (in this process)."""
  from elemnet_jax import run

  fields = {'dataset.name': 'qmpy_legacy', 'train.batch_size': 256, **(fields or {})}
  overwrite = fields.pop('overwrite', False)
  run.train_and_evaluate(config_with('test', fields), path, overwrite=overwrite)
  return path


def user_error(call, *fragments) -> str:
  """Runs `call()`, which must raise a one-line UserError holding every fragment; returns the message."""
  from elemnet_jax.errors import UserError

  with pytest.raises(UserError) as caught:
    call()
  message = str(caught.value)
  assert '\n' not in message, message
  for fragment in fragments:
    assert fragment in message, message
  return message


@pytest.fixture(scope='session')
def pretrained(tmp_path_factory) -> Path:
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'pretrain')


@pytest.fixture(scope='session')
def pretrained_pair(tmp_path_factory) -> Path:
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'pair', {'train.ensemble': 2})


@pytest.fixture(scope='session')
def pretrained_seed1(tmp_path_factory) -> Path:
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'seed1', {'seed': 1})
