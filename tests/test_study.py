"""The transfer study in process: its rows, report and figures, validation options, resuming and replacing."""

import hashlib
import itertools
import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import config_with, pretrain_legacy, user_error

from elemnet_jax import featurizers, inputs, machine, metrics, study
from elemnet_jax.configs.schema import DatasetConfig, FeaturizerConfig
from elemnet_jax.data import datasets
from elemnet_jax.study import plan as study_plan


def _study(path, fields=None, overwrite=False):
  study.run_study(config_with('test:study', fields), path, overwrite=overwrite)
  return json.loads((path / 'results.json').read_text())


def _runs(path) -> dict:
  return {
    (r['method'], r['train_fraction'], r['seed']): r for r in json.loads((path / 'results.json').read_text())['runs']
  }


def test_a_study_writes_rows_a_report_and_figures_and_refuses_to_run_twice(tmp_path, capsys, caplog):
  # Pretrains a source ensemble of 2 inside the study workdir, with another dataset's compositions
  # removed from it: the target's stay in, and the report must say so.
  other = tmp_path / 'other.csv'
  other.write_text('formula\nFe2O3\nNaCl\nMgO\n')
  fields = {'source.train.ensemble': 2, 'source.dataset.exclude_from': str(other)}
  results = _study(tmp_path / 'study', fields)
  rows = results['runs']
  assert results['leakage']['source_members'] == 2 and results['finished']
  arms = {(r['method'], r['freeze_layers'], r['layer']) for r in rows}
  assert arms == {
    ('scratch', None, None),
    ('finetune', 0, None),
    ('finetune', 2, None),
    ('featurizer', None, 3),
    ('head', None, 3),
    ('direct', None, None),
  }
  assert {r['seed'] for r in rows if r['method'] == 'finetune' and not r['ensemble']} == {0, 1}
  assert {r['seed'] for r in rows if r['ensemble']} == {None}  # the mean prediction of the seeds
  assert all(r['val_mae'] > 0 for r in rows if r['method'] != 'direct')  # ensembles' own too
  assert set(rows[0]) >= {'method', 'freeze_layers', 'layer', 'train_size', 'seed', 'mae', 'rmse', 'r2', 'seconds'}
  report = (tmp_path / 'study' / 'results.md').read_text()
  assert report.startswith('# qmpy_legacy -> ssub: formation enthalpy, test MAE (eV/atom)')
  assert '| share of target train (n) |' in report and 'Mean prediction of the 2 seeds' in report
  assert 'an ensemble of 2 pretrained members' in report
  assert 'target inputs KEPT in the source data (0 removed;' in report
  assert f'Run on {machine.cpu_model()}, {len(os.sched_getaffinity(0))} core' in report
  assert f', cpu, jax {jax.__version__}: the last digits can differ' in report
  source_test = json.loads((tmp_path / 'study' / 'pretrain' / 'metrics.json').read_text())['test']
  assert f'test MAE {source_test["mae"]:.4f} on {source_test["n"]:,} examples' in report
  assert '| share of target train (n) |' in capsys.readouterr().out
  for figure in ('learning_curve', 'parity'):
    assert (tmp_path / 'study' / f'{figure}.png').read_bytes()[:4] == b'\x89PNG'
    assert b'<svg' in (tmp_path / 'study' / f'{figure}.svg').read_bytes()[:400]
  # 2 sizes x (scratch, 2 fine-tuning depths, head, ridge) + the source applied directly
  assert 'study: run 1 of 11:' in caplog.text and 'study: run 11 of 11:' in caplog.text and 'left' in caplog.text
  assert 'study: run 2 of 11' in (tmp_path / 'study' / 'log.txt').read_text()
  before = (tmp_path / 'study' / 'results.json').read_bytes()
  user_error(lambda: _study(tmp_path / 'study', fields), 'holds a finished study', '--overwrite')
  assert (tmp_path / 'study' / 'results.json').read_bytes() == before


def test_rotated_validation_gives_later_seeds_their_own_held_out_rows(pretrained, tmp_path):
  # Seed 0 keeps the split's validation rows, so it scores exactly what it scores without rotation;
  # seed 1 stops on other rows and trains on the split's validation rows, so it differs.
  fields = {
    'study.pretrained': str(pretrained),
    'study.methods': ('finetune', 'head'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (0.5, 1.0),
  }
  _study(tmp_path / 'split', fields)
  _study(tmp_path / 'rotated', {**fields, 'study.rotate_validation': True})
  assert 'rotated validation' in (tmp_path / 'rotated' / 'results.md').read_text()
  split, rotated = _runs(tmp_path / 'split'), _runs(tmp_path / 'rotated')
  for method, fraction in itertools.product(('finetune', 'head'), (0.5, 1.0)):
    assert rotated[method, fraction, 0]['mae'] == pytest.approx(split[method, fraction, 0]['mae'], rel=1e-4)
    assert rotated[method, fraction, 0]['val_mae'] == pytest.approx(split[method, fraction, 0]['val_mae'], rel=1e-4)
    assert rotated[method, fraction, 1]['val_mae'] != split[method, fraction, 1]['val_mae']
    assert rotated[method, fraction, 1]['train_size'] == split[method, fraction, 1]['train_size']
    assert rotated[method, fraction, None]['val_mae'] is None  # the seeds share no validation set
    assert split[method, fraction, None]['val_mae'] > 0


def test_retraining_with_validation_rows_keeps_the_chosen_epochs_and_adds_the_rows(pretrained, tmp_path):
  # Each model runs again on its training and validation rows for the epochs its early stopping
  # chose: validation MAE and epochs are the first run's, the training set grows by the validation
  # rows, and the test predictions change because the models saw more data.
  fields = {
    'study.pretrained': str(pretrained),
    'study.methods': ('finetune', 'featurizer'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (0.5, 1.0),
  }
  _study(tmp_path / 'split', fields)
  _study(tmp_path / 'retrained', {**fields, 'study.retrain_with_validation': True})
  assert 'retrained: each model trained again' in (tmp_path / 'retrained' / 'results.md').read_text()
  split, retrained = _runs(tmp_path / 'split'), _runs(tmp_path / 'retrained')
  assert split.keys() == retrained.keys()
  added = {retrained[key]['train_size'] - split[key]['train_size'] for key in split}
  assert len(added) == 1 and added.pop() > 0  # the same validation rows, added to every size and method
  for key in split:
    assert retrained[key]['val_mae'] == pytest.approx(split[key]['val_mae'], rel=1e-5)
    assert retrained[key].get('best_epoch') == split[key].get('best_epoch')
    assert retrained[key]['mae'] != split[key]['mae']
  assert all(split['finetune', fraction, seed]['best_epoch'] >= 1 for fraction in (0.5, 1.0) for seed in (0, 1))


def test_each_network_keeps_the_learning_rate_validation_prefers_and_reports_its_calibration(pretrained, tmp_path):
  # Every rate of the grid trains; the rows are those of the rate with the lowest mean validation
  # MAE of the seeds, and a single-rate study at that rate gives the same rows. Ensemble rows say
  # how often the seeds' spread covers the test target.
  fields = {
    'study.pretrained': str(pretrained),
    'study.methods': ('scratch', 'finetune'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (1.0,),
  }
  rows = _study(tmp_path / 'grid', {**fields, 'study.learning_rates': (1e-4, 1e-3)})['runs']
  for row in rows:
    tried = row['val_mae_by_rate']
    assert set(tried) == {'0.0001', '0.001'}
    assert f'{row["learning_rate"]:g}' == min(tried, key=tried.get)
  chosen = {r['method']: r['learning_rate'] for r in rows}
  assert chosen == {'scratch': 1e-3, 'finetune': 1e-3}  # 3 epochs at 1e-4 leave a network far from done
  assert all('within_1std' in r and 'within_2std' in r for r in rows if r['ensemble'])
  # ... and the test coverage and width of intervals calibrated on the shared validation rows.
  calibrated = [r['calibrated'] for r in rows if r['ensemble']]
  assert calibrated and all(set(c) == {'z_68', 'z_90', 'conformal_68', 'conformal_90'} for c in calibrated)
  assert all(c['z_90']['width'] > c['z_68']['width'] > 0 for c in calibrated)
  single = _runs(tmp_path / 'grid')
  one_rate = {**fields, 'study.learning_rates': (1e-3,), 'target.train.learning_rate': 1e-3}
  again = _study(tmp_path / 'single', one_rate)['runs']
  for row in again:
    assert row['mae'] == pytest.approx(single[row['method'], row['train_fraction'], row['seed']]['mae'], rel=1e-5)
  report = (tmp_path / 'grid' / 'results.md').read_text()
  assert 'Learning rate chosen on validation' in report and '| 0.001 | 0.001 |' in report
  assert 'with the lowest mean validation MAE of its seeds' in report
  assert 'share of test targets within 1 / 2 std of the ensemble mean, mean over folds (0.33 / 0.55' in report
  assert 'inside the 68% / 90% intervals' in report and '| split-conformal: share of target train (n) |' in report
  user_error(lambda: _study(tmp_path / 'bad', {**fields, 'study.learning_rates': (1e-3, 0.0)}), 'learning_rates')
  unused = {**fields, 'study.learning_rates': (1e-4, 1e-3), 'target.train.learning_rate': 5e-4}
  user_error(lambda: _study(tmp_path / 'bad', unused), 'target.train.learning_rate=0.0005 is not used')


def test_calibration_counts_targets_inside_the_spread_against_what_a_calibrated_spread_gives():
  shares = metrics.calibration(np.array([0.0, 1.0, 3.0, 10.0]), np.zeros(4), np.full(4, 1.5))
  assert shares == {'within_1std': 0.5, 'within_2std': 0.75}
  assert metrics.expected_coverage(3, 1) == pytest.approx(1 / 5**0.5, abs=1e-6)  # t, 2 dof: a / sqrt(2 + a^2)
  draws = np.random.default_rng(0).normal(size=(100_000, 4))  # 3 members and a target from one Gaussian
  members, target = draws[:, :3], draws[:, 3]
  simulated = metrics.calibration(target, members.mean(axis=1), members.std(axis=1))
  for width in (1, 2):
    assert simulated[f'within_{width}std'] == pytest.approx(metrics.expected_coverage(3, width), abs=0.01)


def test_a_source_retrained_with_its_validation_rows_counts_them_as_seen(pretrained, tmp_path):
  # The leakage count names the target compositions the source model trained on: a retrained
  # source also trained on its validation rows.
  retrained = pretrain_legacy(tmp_path / 'retrained', {'train.retrain_with_validation': True})
  seen = {}
  for name, source in (('plain', pretrained), ('retrained', retrained)):
    fields = {'study.pretrained': str(source), 'study.methods': ('direct',)}
    seen[name] = _study(tmp_path / name, fields)['leakage']['target_in_source_train']
  assert seen['retrained'] > seen['plain'] > 0


def test_a_source_without_its_split_file_counts_what_it_trained_on_from_its_config(pretrained, tmp_path):
  # Shipped models carry no split.csv: the split is drawn again from the config they were trained with.
  copy = tmp_path / 'copy'
  shutil.copytree(pretrained, copy)
  (copy / 'split.csv').unlink()
  counts = [
    _study(tmp_path / name, {'study.methods': ('direct',), 'study.pretrained': str(source)})['leakage']
    for name, source in (('with', pretrained), ('without', copy))
  ]
  assert counts[0]['target_in_source_train'] == counts[1]['target_in_source_train'] > 0


def test_refitted_target_statistics_come_from_each_sizes_own_rows(pretrained, tmp_path):
  # A learning-curve point trains on its subset's labels only, so the labels of the fold's other
  # training rows must not reach it, not even through the refitted target statistics; and the
  # source model applied directly is read in its own units, whatever the target's statistics.
  table, _ = datasets.load_table('ssub')
  formulas, energies = table.inputs[:400], [float(value) for value in table.targets[:400]]
  _, keys, _ = featurizers.build({'name': 'composition'}).featurize(formulas)
  original = tmp_path / 'original.csv'
  original.write_text('formula,energy\n' + ''.join(f'{f},{e}\n' for f, e in zip(formulas, energies)))
  dataset = DatasetConfig(name=str(original), target='energy', split=(0.8, 0.1, 0.1), split_seed=0)
  examples, *_ = inputs.load_examples(dataset, FeaturizerConfig('composition'))
  (fold,) = study_plan.make_folds(examples, 0, (0.8, 0.1, 0.1), 0, 0.1)
  (size,) = study_plan.subset_sizes(len(fold.train), (0.5,))
  inside = {fold.train.keys[i] for i in study_plan.training_order(len(fold.train), 0, 0)[:size]}
  outside = set(fold.train.keys) - inside
  shifted = tmp_path / 'shifted.csv'
  shifted.write_text(
    'formula,energy\n' + ''.join(f'{f},{e + 3.0 * (k in outside)}\n' for f, e, k in zip(formulas, energies, keys))
  )
  fields = {
    'study.pretrained': str(pretrained),
    'target.dataset.target': 'energy',
    'study.methods': ('scratch', 'direct'),
    'study.train_fractions': (0.5,),
    'study.seeds': 1,
  }
  refit = {'target.transfer.target_scaling': 'refit'}
  rows = {}
  for name, path, extra in (('original', original, refit), ('shifted', shifted, refit), ('source', original, {})):
    results = _study(tmp_path / name, {**fields, 'target.dataset.name': str(path), **extra})
    rows[name] = {r['method']: r for r in results['runs']}
  assert rows['shifted']['scratch']['mae'] == pytest.approx(rows['original']['scratch']['mae'], rel=1e-5)
  assert rows['original']['direct']['mae'] == pytest.approx(rows['source']['direct']['mae'], rel=1e-6)


def test_a_broken_source_leaves_no_study_behind(pretrained, tmp_path):
  cut = shutil.copytree(pretrained, tmp_path / 'cut')  # a finished run whose metrics.json was cut short
  (cut / 'metrics.json').write_text('{"test": ')
  user_error(lambda: _study(tmp_path / 'study', {'study.pretrained': str(cut)}), f'{cut / "metrics.json"}: corrupted')
  assert not (tmp_path / 'study').exists()
  # a source that fails its own checks leaves nothing that would refuse the corrected command
  user_error(lambda: _study(tmp_path / 'study', {'source.dataset.name': 'nope'}), "unknown dataset 'nope'")
  assert not (tmp_path / 'study').exists()


def test_overwriting_a_study_keeps_the_old_results_until_the_new_study_finishes(tmp_path):
  # The study pretrains its own source model; a replacement with another source config pretrains
  # again: the old results are kept until the new study finishes, the old source model until the new one is.
  fields = {'study.seeds': 1, 'study.methods': ('direct',)}
  _study(tmp_path, fields)
  before = {name: (tmp_path / name).read_bytes() for name in ('results.json', 'study_config.json')}
  source_before = (tmp_path / 'pretrain' / 'metrics.json').read_bytes()
  (tmp_path / 'replaced').mkdir()  # left by a kill just before the finished study discarded it
  (tmp_path / 'replaced' / 'results.json').write_text('{"runs": []}')
  diverging = {'source.seed': 1, 'study.seeds': 1, 'study.methods': ('finetune',), 'study.freeze_layers': (0,)}
  # The finished study displaces the stale replaced/; a second failed replacement leaves it there.
  for learning_rate in (1e30, 2e30):
    failing = {**diverging, 'target.train.learning_rate': learning_rate}
    user_error(lambda fields=failing: _study(tmp_path, fields, overwrite=True), 'training diverged')
    assert {name: (tmp_path / 'replaced' / name).read_bytes() for name in before} == before
  results = _study(tmp_path, {**fields, 'source.seed': 1}, overwrite=True)
  assert {r['method'] for r in results['runs']} == {'direct'}
  assert not (tmp_path / 'replaced').exists()
  assert (tmp_path / 'pretrain' / 'metrics.json').read_bytes() != source_before


def _interrupted(path, keep=lambda row: True):
  """What a kill leaves: the study unfinished, with the rows `keep` accepts."""
  results = json.loads((path / 'results.json').read_text())
  results.update(runs=[row for row in results['runs'] if keep(row)], finished=False)
  (path / 'results.json').write_text(json.dumps(results))
  return results


def test_a_resumed_study_plots_the_runs_made_before_it_was_interrupted(pretrained, tmp_path):
  fields = {
    'study.pretrained': str(pretrained),
    'study.methods': ('scratch', 'finetune'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (1.0,),
    'study.seeds': 1,
  }
  _study(tmp_path, fields)
  # What a kill right after the scratch run leaves: its rows and its parity predictions, no more.
  results = _interrupted(tmp_path, lambda row: row['method'] == 'scratch')
  del results['parity']['predictions']['fine-tune (freeze 0)'], results['parity']['val_mae']['fine-tune (freeze 0)']
  (tmp_path / 'results.json').write_text(json.dumps(results))
  (tmp_path / 'parity.png').unlink()
  resumed = _study(tmp_path, fields)
  assert resumed['runs'][: len(results['runs'])] == results['runs']
  assert {row['method'] for row in resumed['runs']} == {'scratch', 'finetune'}
  assert (tmp_path / 'parity.png').read_bytes()[:4] == b'\x89PNG'  # scratch against fine-tuning, as before the kill


def test_a_study_resumes_only_from_the_source_runs_it_started_from(pretrained, tmp_path):
  source, workdir = tmp_path / 'source', tmp_path / 'study'
  shutil.copytree(pretrained, source)
  fields = {'study.pretrained': str(source), 'study.methods': ('direct', 'featurizer'), 'study.seeds': 1}
  _study(workdir, fields)
  _interrupted(workdir, lambda row: row['method'] == 'direct')
  pretrain_legacy(source, {'overwrite': True, 'seed': 1})  # trained again under the same name
  user_error(
    lambda: _study(workdir, fields),
    f'{workdir}: holds an interrupted study started from {source} as it was before it was trained again',
  )
  results = _study(workdir, fields, overwrite=True)
  digest = hashlib.sha256((source / 'metrics.json').read_bytes()).hexdigest()
  assert results['sources'] == {str(source): digest}


def test_a_study_whose_results_json_was_cut_short_starts_over_only_with_overwrite(pretrained, tmp_path):
  fields = {'study.pretrained': str(pretrained), 'study.methods': ('direct',), 'study.seeds': 1}
  _study(tmp_path, fields)
  results = tmp_path / 'results.json'
  cut = results.read_bytes()[:100]
  results.write_bytes(cut)
  user_error(lambda: _study(tmp_path, fields), f'{results}: corrupted (', 'pass --overwrite to start the study over')
  assert results.read_bytes() == cut
  assert [row['method'] for row in _study(tmp_path, fields, overwrite=True)['runs']] == ['direct']
  assert not (tmp_path / 'replaced').exists()


def test_cross_validation_refuses_a_target_that_ships_its_own_split(pretrained, tmp_path):
  # Repeats are grouped within each published part, so folds drawn over the parts could put one
  # composition in training and test.
  fields = {'study.pretrained': str(pretrained), 'study.folds': 2, 'target.dataset.name': 'oqmd_fe'}
  user_error(lambda: _study(tmp_path, fields), 'oqmd_fe: ships its own split', '--config.target.dataset.resplit=True')
  assert not any(tmp_path.iterdir())


def test_an_interrupted_study_that_pretrains_without_the_target_resumes(tmp_path):
  # The study records its config as it runs it (the source's exclude_from set, the target featurized
  # as the source is), so starting it again with the same flags resumes instead of refusing.
  fields = {'study.exclude_target_from_source': True, 'study.methods': ('direct', 'featurizer'), 'study.seeds': 1}
  first = _study(tmp_path, fields)
  assert first['leakage']['target_excluded_from_source'] and first['leakage']['excluded_count'] > 0
  _interrupted(tmp_path, lambda row: row['method'] == 'direct')
  resumed = _study(tmp_path, fields)
  assert resumed['runs'][0] == first['runs'][0] and {r['method'] for r in resumed['runs']} == {'direct', 'featurizer'}
  assert {r['seed'] for r in resumed['runs']} == {None}  # neither the source as is nor ridge has a seed


def test_a_dft_to_experiment_pair_of_csv_files_transfers_with_the_paper_defaults(tmp_path):
  # A user's own pair through the generic CSV path: no registry entry, only data flags, and budget
  # flags (network width, epochs, seeds, sizes) that leave the rates, scaling and stopping as `paper` has them.
  files = {}
  for role, name, rows in (('source', 'qmpy_legacy', None), ('target', 'ssub', 400)):  # None: all its rows
    table, _ = datasets.load_table(name)
    files[role] = tmp_path / f'my_{role}.csv'
    lines = [f'{formula},{value}' for formula, value in zip(table.inputs[:rows], table.targets[:rows])]
    files[role].write_text('composition,enthalpy\n' + '\n'.join(lines) + '\n')
  data_flags = {
    f'{role}.dataset.{field}': value
    for role in ('source', 'target')
    for field, value in (('name', str(files[role])), ('input_column', 'composition'), ('target', 'enthalpy'))
  }
  budget = {
    'source.model.widths': (128, 64, 32),
    'source.model.dropout_after': (),
    'source.model.dropout_rates': (),
    'source.train.max_epochs': 30,
    'source.train.patience': 30,
    'target.train.max_epochs': 60,
    'study.scratch_train.max_epochs': 60,
    'study.seeds': 2,
    'study.train_fractions': (0.5, 1.0),
    'study.methods': ('scratch', 'finetune', 'direct'),
    'study.freeze_layers': (0,),
    'study.featurizer_layer': 3,
  }
  study.run_study(config_with('paper', {**data_flags, **budget}), tmp_path / 'study')
  results = json.loads((tmp_path / 'study' / 'results.json').read_text())
  ensembles = {(r['method'], r['train_fraction']): r for r in results['runs'] if r['ensemble']}
  for fraction in (0.5, 1.0):
    assert ensembles['finetune', fraction]['mae'] <= ensembles['scratch', fraction]['mae']
    assert set(ensembles['finetune', fraction]['val_mae_by_rate']) == {'0.0001', '0.0003', '0.001'}
  assert results['leakage']['source_dataset'] == str(files['source'])
  source_seconds = json.loads((tmp_path / 'study' / 'pretrain' / 'metrics.json').read_text())['seconds']
  assert results['seconds']['train'] > source_seconds['train'] > 0  # the source's epochs count as training
  assert results['machine']['cores'] == len(os.sched_getaffinity(0)) and results['machine']['jax'] == jax.__version__
  title = f'# {files["source"]} -> {files["target"]}: enthalpy, test MAE'
  assert (tmp_path / 'study' / 'results.md').read_text().startswith(title)
