"""Each entry point run as a user would: a subprocess, real data, a tiny config."""

import hashlib
import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import pytest

from elemnet_jax import datasets, experiment, featurizers, study
from elemnet_jax.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = 'experiments/configs/test.py'


def run(module, *flags, check=True, timeout=600):
  done = subprocess.run(
    [sys.executable, '-m', f'experiments.{module}', *flags], cwd=REPO, capture_output=True, text=True, timeout=timeout
  )
  if check and done.returncode != 0:
    raise AssertionError(f'{module} failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return done


def assert_user_error(done, *fragments):
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'Traceback' not in done.stderr
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: '), last
  for fragment in fragments:
    assert fragment in last, last


def pretrain_legacy(workdir, *flags):
  """A tiny model pretrained on qmpy_legacy in `workdir`."""
  run(
    'pretrain',
    f'--workdir={workdir}',
    f'--config={TEST_CONFIG}',
    '--config.dataset.name=qmpy_legacy',
    '--config.train.batch_size=256',
    *flags,
  )
  return workdir


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'pretrain')


def test_pretrain_writes_metrics_predictions_split_and_model(pretrained):
  metrics = json.loads((pretrained / 'metrics.json').read_text())
  assert set(metrics['test']) == {'mae', 'rmse', 'r2', 'n'}
  assert metrics['data']['dropped_abs_target_above']['count'] == 1
  lines = (pretrained / 'predictions_test.csv').read_text().splitlines()
  assert lines[0] == 'input,target,prediction' and len(lines) == metrics['test']['n'] + 1
  assert (pretrained / 'split.csv').exists() and (pretrained / 'model' / 'meta.json').exists()


def test_finished_workdir_is_refused_unless_overwrite(pretrained):
  before = (pretrained / 'metrics.json').read_text()
  done = run('pretrain', f'--workdir={pretrained}', f'--config={TEST_CONFIG}', check=False)
  assert_user_error(done, 'holds a finished run', '--overwrite')
  assert (pretrained / 'metrics.json').read_text() == before


def test_finetune_and_predict(pretrained, tmp_path):
  workdir = tmp_path / 'finetune'
  run(
    'finetune',
    f'--pretrained={pretrained}',
    f'--workdir={workdir}',
    f'--config={TEST_CONFIG}',
    '--config.transfer.freeze_layers=2',
    '--config.train.ensemble=2',
    '--config.train.optimizer=adamw',  # L2-SP: its starting point lives in the checkpointed optimizer state
    '--config.train.decay_toward=start',
    '--config.train.weight_decay=0.1',
  )
  metrics = json.loads((workdir / 'metrics.json').read_text())
  assert metrics['frozen_layers'] == [1, 2] and metrics['members'] == 2
  assert metrics['pretrained'] == str(pretrained)
  done = run('predict', f'--models={workdir}', '--formulas=Fe2O3,NaCl')
  rows = [line.split('\t') for line in done.stdout.strip().splitlines()]
  assert [r[0] for r in rows] == ['Fe2O3', 'NaCl'] and all(len(r) == 3 for r in rows)  # mean and std
  source = tmp_path / 'inputs.csv'
  source.write_text('formula\nFe2O3\nAl2O3\n')
  output = tmp_path / 'out.csv'
  run('predict', f'--models={workdir},{pretrained}', f'--input={source}', f'--output={output}')
  lines = output.read_text().splitlines()
  assert lines[0] == 'input,prediction,std' and len(lines) == 3
  assert_user_error(
    run('predict', f'--models={workdir}', f'--input={source}', f'--output={output}', check=False), 'already exists'
  )
  nowhere = tmp_path / 'no_such_folder' / 'out.csv'  # named as given, not as its temporary sibling
  assert_user_error(
    run('predict', f'--models={workdir}', f'--input={source}', f'--output={nowhere}', check=False),
    f'{nowhere}: cannot be written (No such file or directory)',
  )
  assert_user_error(
    run('predict', f'--models={workdir}', '--formulas=Fe2O3,Xx3', check=False),
    "row 2 ('Xx3'): unknown element symbol 'Xx'",
  )


def test_predict_refuses_a_model_whose_features_this_code_builds_differently(pretrained, tmp_path):
  # A model saved when the element list (or a featurizer's options) differed: its columns would shift.
  model = tmp_path / 'model'
  shutil.copytree(pretrained, model)
  meta = json.loads((model / 'model' / 'meta.json').read_text())
  meta['featurizer']['elements'] = meta['featurizer']['elements'][::-1]
  (model / 'model' / 'meta.json').write_text(json.dumps(meta))
  assert_user_error(
    run('predict', f'--models={model}', '--formulas=Fe2O3', check=False),
    f"{model}: the model reads features from 'composition' (width 86), but this code builds them otherwise "
    '(different elements); predict with the version it was trained with',
  )
  # An E-state model saved when its description still held `workers`, which never changes the features.
  molecules = tmp_path / 'molecules'
  run(
    'pretrain',
    f'--workdir={molecules}',
    f'--config={TEST_CONFIG}',
    '--config.dataset.name=porphyrin_mppd',
    '--config.dataset.target=E_gap',
    '--config.dataset.skip_invalid=True',
    '--config.featurizer.name=estate',
    '--config.train.max_epochs=1',
  )
  meta = json.loads((molecules / 'model' / 'meta.json').read_text())
  meta['featurizer']['workers'] = 0
  (molecules / 'model' / 'meta.json').write_text(json.dumps(meta))
  assert run('predict', f'--models={molecules}', '--formulas=c1ccccc1').stdout.startswith('c1ccccc1\t')


@pytest.mark.parametrize(
  'flags, fragments',
  [
    (['--config.transfer.freeze_layers=9'], ['freeze_layers=9 is outside the model', '0..3']),
    (['--config.dataset.name=nope'], ['unknown dataset', 'oqmd_fe']),
    (['--config.dataset.split=(0.5,0.1,0.1)'], ['split=(0.5, 0.1, 0.1)', 'sum to 1']),
  ],
)
def test_finetune_errors(pretrained, tmp_path, flags, fragments):
  done = run(
    'finetune',
    f'--pretrained={pretrained}',
    f'--workdir={tmp_path / "w"}',
    f'--config={TEST_CONFIG}',
    *flags,
    check=False,
  )
  assert_user_error(done, *fragments)


def test_missing_or_corrupted_pretrained_workdir(pretrained, tmp_path):
  done = run(
    'finetune',
    f'--pretrained={tmp_path / "absent"}',
    f'--workdir={tmp_path / "w"}',
    f'--config={TEST_CONFIG}',
    check=False,
  )
  assert_user_error(done, 'no such workdir')
  broken = tmp_path / 'broken'
  (broken / 'model' / 'params').mkdir(parents=True)
  (broken / 'model' / 'meta.json').write_text((pretrained / 'model' / 'meta.json').read_text())
  done = run(
    'finetune', f'--pretrained={broken}', f'--workdir={tmp_path / "w2"}', f'--config={TEST_CONFIG}', check=False
  )
  assert_user_error(done, 'cannot be restored', 'missing or corrupted')
  shutil.copytree(pretrained, tmp_path / 'cut')  # a finished run whose metrics.json was cut short
  (tmp_path / 'cut' / 'metrics.json').write_text('{"test": ')
  done = run(
    'transfer_study',
    f'--workdir={tmp_path / "study"}',
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={tmp_path / "cut"}',
    check=False,
  )
  assert_user_error(done, f'{tmp_path / "cut" / "metrics.json"}: corrupted')
  assert not (tmp_path / 'study').exists()
  done = run(  # a source that fails its checks leaves nothing that would refuse the corrected command
    'transfer_study',
    f'--workdir={tmp_path / "study"}',
    f'--config={TEST_CONFIG}:study',
    '--config.source.dataset.name=nope',
    check=False,
  )
  assert_user_error(done, "unknown dataset 'nope'")
  assert not (tmp_path / 'study').exists()
  meta = json.loads((tmp_path / 'cut' / 'model' / 'meta.json').read_text())
  del meta['target_scaling']  # valid JSON, but not a model's metadata
  (tmp_path / 'cut' / 'model' / 'meta.json').write_text(json.dumps(meta))
  done = run('predict', f'--models={tmp_path / "cut"}', '--formulas=NaCl', check=False)
  assert_user_error(done, 'meta.json: corrupted model metadata (missing target_scaling)')


@pytest.mark.parametrize(
  'module, flags, message',
  [
    ('pretrain', ['--workdir=', f'--config={TEST_CONFIG}'], '--workdir is empty'),  # else: the current folder
    (
      'pretrain',
      ['--workdir=unused', f'--config={TEST_CONFIG}', '--config.train.learning_rat=1e-3'],
      "--config.train.learning_rat=1e-3: the config has no field 'learning_rat' (did you mean 'learning_rate'?)",
    ),
    ('pretrain', ['--workdir=unused', f'--config={TEST_CONFIG}:bogus'], "unknown test config 'bogus'"),
    ('predict', ['--models=', '--formulas=NaCl'], "--models='': name a finished workdir"),
  ],
  ids=['empty workdir', 'misspelt field', 'unknown config variant', 'no models'],
)
def test_flag_mistakes_are_one_line_errors(module, flags, message):
  assert_user_error(run(module, *flags, check=False), message)
  assert not (REPO / 'config.json').exists()  # the empty workdir: nothing written into the current folder


def test_the_same_model_named_twice_is_refused(pretrained):
  done = run('predict', f'--models={pretrained},{pretrained}/', '--formulas=NaCl', check=False)
  assert_user_error(done, 'the same run is named twice')


def test_bad_user_csv_stops_before_training_and_skip_invalid_counts(tmp_path):
  path = tmp_path / 'mine.csv'
  good = [
    'Fe2O3,-1.0',
    'NaCl,-2.1',
    'MgO,-3.0',
    'Al2O3,-3.4',
    'LiF,-3.2',
    'CaO,-3.3',
    'ZnO,-1.8',
    'CuO,-0.8',
    'TiO2,-3.3',
    'SiO2,-3.1',
  ]
  path.write_text('formula,energy\n' + '\n'.join(good + ['Qq2,1.0', 'KCl,oops']) + '\n')
  flags = [f'--config={TEST_CONFIG}', f'--config.dataset.name={path}', '--config.dataset.target=energy']
  done = run('pretrain', f'--workdir={tmp_path / "a"}', *flags, check=False)
  assert_user_error(done, str(path), '2 invalid input row(s)', "row 12 ('Qq2')", "row 13 ('oops')")
  assert not (tmp_path / 'a' / 'checkpoints').exists()
  run('pretrain', f'--workdir={tmp_path / "b"}', *flags, '--config.dataset.skip_invalid=True')
  assert json.loads((tmp_path / 'b' / 'metrics.json').read_text())['data']['invalid_skipped'] == 2
  done = run('pretrain', f'--workdir={tmp_path / "c"}', *flags[:2], '--config.dataset.target=nope', check=False)
  assert_user_error(done, "missing column(s) 'nope'", "columns present: 'formula', 'energy'")
  done = run(
    'pretrain',
    f'--workdir={tmp_path / "d"}',
    f'--config={TEST_CONFIG}',
    f'--config.dataset.name={tmp_path / "absent.csv"}',
    '--config.dataset.target=x',
    check=False,
  )
  assert_user_error(done, 'absent.csv: no such file')


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
  """SIGKILL mid-training, start again with the same workdir: same final metrics.json."""
  flags = [
    f'--config={TEST_CONFIG}',
    '--config.train.max_epochs=12',
    '--config.train.patience=12',
    '--config.train.batch_size=16',
  ]
  run('pretrain', f'--workdir={tmp_path / "whole"}', *flags)
  workdir = tmp_path / 'killed'
  process = subprocess.Popen(
    [sys.executable, '-m', 'experiments.pretrain', f'--workdir={workdir}', *flags],
    cwd=REPO,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  checkpoints = workdir / 'checkpoints'
  while time.time() < deadline and process.poll() is None:
    if checkpoints.exists() and any(p.name.isdigit() and int(p.name) >= 3 for p in checkpoints.iterdir()):
      break
    time.sleep(0.05)
  assert process.poll() is None, 'the run ended before it could be killed'
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert not (workdir / 'metrics.json').exists()
  again = run('pretrain', f'--workdir={workdir}', *flags)
  assert 'resuming' in again.stderr and 'from epoch' in again.stderr  # not a fresh start
  whole = json.loads((tmp_path / 'whole' / 'metrics.json').read_text())
  resumed = json.loads((workdir / 'metrics.json').read_text())
  assert resumed == whole


def test_same_config_and_seed_give_identical_metrics(pretrained, tmp_path):
  pretrain_legacy(tmp_path / 'again')
  assert (tmp_path / 'again' / 'metrics.json').read_text() == (pretrained / 'metrics.json').read_text()


def test_transfer_study_writes_results_table_and_figures(tmp_path):
  # Pretrains a source ensemble of 2 inside the study workdir (the member mapping: next test), with
  # another dataset's compositions removed from it: the target's stay in, and the report must say so.
  flags = (
    f'--workdir={tmp_path}',
    f'--config={TEST_CONFIG}:study',
    '--config.source.train.ensemble=2',
    '--config.source.dataset.exclude_from=kim2017',
  )
  done = run('transfer_study', *flags)
  results = json.loads((tmp_path / 'results.json').read_text())
  rows = results['runs']
  assert results['leakage']['source_members'] == 2
  methods = {(r['method'], r['freeze_layers']) for r in rows}
  assert methods == {
    ('scratch', -1),
    ('finetune', 0),
    ('finetune', 2),
    ('featurizer', 3),
    ('head', 3),
    ('direct', -1),
  }
  assert {r['seed'] for r in rows if r['method'] == 'finetune' and not r.get('ensemble')} == {0, 1}
  assert {r['seed'] for r in rows if r.get('ensemble')} == {-1}  # the mean prediction of the seeds
  assert all(r['val_mae'] > 0 for r in rows if r['method'] != 'direct')  # ensembles' own too
  assert set(rows[0]) >= {'method', 'freeze_layers', 'train_size', 'seed', 'mae', 'rmse', 'r2', 'seconds'}
  report = (tmp_path / 'results.md').read_text()
  assert '| share of target train (n) |' in report and 'Mean prediction of the 2 seeds' in report
  assert 'an ensemble of 2 pretrained members' in report
  assert 'target inputs KEPT in the source data (0 removed;' in report
  source_test = json.loads((tmp_path / 'pretrain' / 'metrics.json').read_text())['test']
  assert f'test MAE {source_test["mae"]:.4f} on {source_test["n"]:,} examples' in report
  assert '| share of target train (n) |' in done.stdout
  for figure in ('learning_curve.png', 'parity.png'):
    assert (tmp_path / figure).read_bytes()[:4] == b'\x89PNG'
  again = run('transfer_study', *flags)
  assert json.loads((tmp_path / 'results.json').read_text())['runs'] == rows  # resumed: nothing rerun
  assert 'fine-tune (freeze 0)' in again.stdout and 'frozen featurizer (layer 3) + head network' in again.stdout


def test_rotated_validation_gives_later_seeds_their_own_held_out_rows(pretrained, tmp_path):
  # Seed 0 keeps the split's validation rows, so it scores exactly what it scores without rotation;
  # seed 1 stops on other rows and trains on the split's validation rows, so it differs.
  flags = (
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={pretrained}',
    "--config.study.methods=('finetune','head')",
    '--config.study.freeze_layers=(0,)',
    '--config.study.train_fractions=(0.5, 1.0)',
  )
  run('transfer_study', f'--workdir={tmp_path / "split"}', *flags)
  done = run('transfer_study', f'--workdir={tmp_path / "rotated"}', *flags, '--config.study.rotate_validation=True')
  assert 'rotated validation' in done.stdout
  split, rotated = (
    {
      (r['method'], r['train_fraction'], r['seed']): r
      for r in json.loads((tmp_path / name / 'results.json').read_text())['runs']
    }
    for name in ('split', 'rotated')
  )
  for method, fraction in itertools.product(('finetune', 'head'), (0.5, 1.0)):
    assert rotated[method, fraction, 0]['mae'] == pytest.approx(split[method, fraction, 0]['mae'], rel=1e-4)
    assert rotated[method, fraction, 0]['val_mae'] == pytest.approx(split[method, fraction, 0]['val_mae'], rel=1e-4)
    assert rotated[method, fraction, 1]['val_mae'] != split[method, fraction, 1]['val_mae']
    assert rotated[method, fraction, 1]['train_size'] == split[method, fraction, 1]['train_size']
    assert rotated[method, fraction, -1]['val_mae'] is None  # the seeds share no validation set
    assert split[method, fraction, -1]['val_mae'] > 0


def test_retraining_with_validation_rows_keeps_the_chosen_epochs_and_adds_the_rows(pretrained, tmp_path):
  # Retraining runs each model again on its training and validation rows for the epochs its early
  # stopping chose: validation MAE and epochs are the first run's, the training set grows by the
  # validation rows, and the test predictions change because the models saw more data.
  flags = (
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={pretrained}',
    "--config.study.methods=('finetune','featurizer')",
    '--config.study.freeze_layers=(0,)',
    '--config.study.train_fractions=(0.5, 1.0)',
  )
  run('transfer_study', f'--workdir={tmp_path / "split"}', *flags)
  done = run(
    'transfer_study', f'--workdir={tmp_path / "retrained"}', *flags, '--config.study.retrain_with_validation=True'
  )
  assert 'retrained: each model trained again' in done.stdout
  split, retrained = (
    {
      (r['method'], r['train_fraction'], r['seed']): r
      for r in json.loads((tmp_path / name / 'results.json').read_text())['runs']
    }
    for name in ('split', 'retrained')
  )
  assert split.keys() == retrained.keys()
  added = {retrained[key]['train_size'] - split[key]['train_size'] for key in split}
  assert len(added) == 1 and added.pop() > 0  # the same validation rows, added to every size and method
  for key in split:
    assert retrained[key]['val_mae'] == pytest.approx(split[key]['val_mae'], rel=1e-5)
    assert retrained[key].get('best_epoch') == split[key].get('best_epoch')
    assert retrained[key]['mae'] != split[key]['mae']
  assert all(split['finetune', fraction, seed]['best_epoch'] >= 1 for fraction in (0.5, 1.0) for seed in (0, 1))


def test_a_fine_tune_retrained_with_its_validation_rows_saves_the_retrained_members(pretrained, tmp_path):
  # The early-stopped run chooses each member's epochs and keeps its validation score; the saved
  # model and its test metrics are the members trained again on training + validation rows.
  flags = (f'--pretrained={pretrained}', f'--config={TEST_CONFIG}', '--config.train.ensemble=2')
  run('finetune', f'--workdir={tmp_path / "split"}', *flags)
  run('finetune', f'--workdir={tmp_path / "retrained"}', *flags, '--config.train.retrain_with_validation=True')
  split, retrained = (json.loads((tmp_path / name / 'metrics.json').read_text()) for name in ('split', 'retrained'))
  assert retrained['retrained_with_validation'] and not split['retrained_with_validation']
  assert retrained['val'] == split['val'] and retrained['best_epoch'] == split['best_epoch']
  assert retrained['split_sizes'] == split['split_sizes']
  assert retrained['test']['mae'] != split['test']['mae']
  predicted = [
    run('predict', f'--models={tmp_path / name}', '--formulas=Fe2O3').stdout for name in ('split', 'retrained')
  ]
  assert predicted[0] != predicted[1]


def test_a_source_retrained_with_its_validation_rows_counts_them_as_seen(pretrained, tmp_path):
  # The leakage count names the target compositions the source model trained on: a retrained
  # source also trained on its validation rows.
  retrained = pretrain_legacy(tmp_path / 'retrained', '--config.train.retrain_with_validation=True')
  seen = {}
  for name, source in (('plain', pretrained), ('retrained', retrained)):
    flags = (
      f'--config={TEST_CONFIG}:study',
      f'--config.study.pretrained={source}',
      "--config.study.methods=('direct',)",
    )
    run('transfer_study', f'--workdir={tmp_path / name}', *flags)
    seen[name] = json.loads((tmp_path / name / 'results.json').read_text())['leakage']['target_in_source_train']
  assert seen['retrained'] > seen['plain'] > 0


def test_refitted_target_statistics_come_from_each_sizes_own_rows(pretrained, tmp_path):
  # A learning-curve point trains on its subset's labels only, so the labels of the fold's other
  # training rows must not reach it, not even through the refitted target statistics; and the
  # source model applied directly is read in its own units, whatever the target's statistics.
  table, _ = datasets.load_table('ssub')
  formulas, energies = table.inputs[:400], [float(value) for value in table.targets[:400]]
  featurizer = featurizers.build({'name': 'composition'})
  _, keys, _ = featurizer.featurize(formulas)
  original = tmp_path / 'original.csv'
  original.write_text('formula,energy\n' + ''.join(f'{f},{e}\n' for f, e in zip(formulas, energies)))
  dataset = ml_collections.ConfigDict(dict(name=str(original), target='energy', split=(0.8, 0.1, 0.1), split_seed=0))
  examples, *_ = experiment.load_examples(dataset, ml_collections.ConfigDict({'name': 'composition'}))
  (fold,) = study.make_folds(examples, 0, (0.8, 0.1, 0.1), 0, 0.1)
  (size,) = study.subset_sizes(len(fold.train), (0.5,))
  inside = {fold.train.keys[i] for i in study.training_order(len(fold.train), 0, 0)[:size]}
  outside = set(fold.train.keys) - inside
  shifted = tmp_path / 'shifted.csv'
  shifted.write_text(
    'formula,energy\n' + ''.join(f'{f},{e + 3.0 * (k in outside)}\n' for f, e, k in zip(formulas, energies, keys))
  )
  flags = (
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={pretrained}',
    '--config.target.dataset.target=energy',
    "--config.study.methods=('scratch','direct')",
    '--config.study.train_fractions=(0.5,)',
    '--config.study.seeds=1',
    '--config.target.train.target_scaling=standard',
  )
  refit = ('--config.target.transfer.target_scaling=refit',)
  for name, path, extra in (('original', original, refit), ('shifted', shifted, refit), ('source', original, ())):
    run('transfer_study', f'--workdir={tmp_path / name}', *flags, f'--config.target.dataset.name={path}', *extra)
  rows = {
    name: {r['method']: r for r in json.loads((tmp_path / name / 'results.json').read_text())['runs']}
    for name in ('original', 'shifted', 'source')
  }
  assert rows['shifted']['scratch']['mae'] == pytest.approx(rows['original']['scratch']['mae'], rel=1e-5)
  assert rows['original']['direct']['mae'] == pytest.approx(rows['source']['direct']['mae'], rel=1e-6)


@pytest.fixture(scope='module')
def pretrained_pair(tmp_path_factory):
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'pair', '--config.train.ensemble=2')


@pytest.fixture(scope='module')
def pretrained_seed1(tmp_path_factory):
  return pretrain_legacy(tmp_path_factory.mktemp('runs') / 'seed1', '--config.seed=1')


@pytest.mark.parametrize('joined', [False, True], ids=['one run of 2', 'two runs joined'])
def test_fine_tuned_members_start_from_their_own_source_members(joined, request, tmp_path):
  # A source ensemble of 2: pretrained together in one run, or as two runs (seeds 0 and 1) joined
  # by naming both. At Adam 1e-10 for one epoch the weights stay where they start: on the source's
  # own data, fine-tuned member k scores what source member k scored, and in the study the seeds'
  # ensemble scores what the source ensemble (the direct row) scores.
  if joined:
    runs = [request.getfixturevalue('pretrained'), request.getfixturevalue('pretrained_seed1')]
    sources = ','.join(map(str, runs))
    source = [json.loads((run / 'metrics.json').read_text())['test']['mae'] for run in runs]
  else:
    sources = request.getfixturevalue('pretrained_pair')
    source = [m['mae'] for m in json.loads((sources / 'metrics.json').read_text())['test_members']]
  still = ('--config.train.learning_rate=1e-10', '--config.train.max_epochs=1')
  run(
    'finetune',
    f'--pretrained={sources}',
    f'--workdir={tmp_path / "ft"}',
    f'--config={TEST_CONFIG}',
    '--config.dataset.name=qmpy_legacy',
    '--config.train.ensemble=2',
    *still,
  )
  tuned = [m['mae'] for m in json.loads((tmp_path / 'ft' / 'metrics.json').read_text())['test_members']]
  assert abs(source[0] - source[1]) > 1e-3  # the two source members differ
  assert tuned == pytest.approx(source, abs=1e-5)

  run(
    'transfer_study',
    f'--workdir={tmp_path / "study"}',
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={sources}',
    "--config.study.methods=('finetune','direct')",
    '--config.study.freeze_layers=(0,)',
    '--config.study.train_fractions=(1.0,)',
    *(flag.replace('config.train', 'config.target.train') for flag in still),
  )
  results = json.loads((tmp_path / 'study' / 'results.json').read_text())
  rows = results['runs']
  (direct,) = [r['mae'] for r in rows if r['method'] == 'direct']
  (ensemble,) = [r['mae'] for r in rows if r['method'] == 'finetune' and r.get('ensemble')]
  members = [r['mae'] for r in rows if r['method'] == 'finetune' and not r.get('ensemble')]
  assert abs(members[0] - members[1]) > 1e-3 and ensemble == pytest.approx(direct, abs=1e-5)
  assert results['leakage']['source_members'] == 2
  report = (tmp_path / 'study' / 'results.md').read_text()
  assert ('pretrained as 2 separate runs' in report) == joined
  if joined:  # seeds 0 and 1 pretrained together in one run score, as an ensemble, what the joined runs do
    pair = json.loads((request.getfixturevalue('pretrained_pair') / 'metrics.json').read_text())['test']['mae']
    assert results['leakage']['source_test_mae'] == pytest.approx(pair, rel=1e-4)


def test_joining_runs_that_differ_or_repeat_is_refused(pretrained, pretrained_pair, pretrained_seed1, tmp_path):
  other = tmp_path / 'other'  # the same network with other target statistics
  (other / 'model').mkdir(parents=True)
  meta = json.loads((pretrained / 'model' / 'meta.json').read_text())
  meta['target_scaling'] = {'scale': 2.0, 'shift': 0.5}
  (other / 'model' / 'meta.json').write_text(json.dumps(meta))
  (other / 'config.json').write_text((pretrained / 'config.json').read_text())
  other_split = tmp_path / 'other_split'  # the same model files, but its config says another split
  shutil.copytree(pretrained / 'model', other_split / 'model')
  config = json.loads((pretrained_seed1 / 'config.json').read_text())
  config['dataset']['split_seed'] += 1
  (other_split / 'config.json').write_text(json.dumps(config))
  for sources, fragments in (
    (f'{pretrained},{other}', [f'{other}: its target_scaling differs from that of {pretrained}', 'share the network']),
    (f'{pretrained},{other_split}', [f'{other_split}: its dataset.split_seed differs from that of {pretrained}']),
    (f'{pretrained},{pretrained}/', [f"the same run is named twice ('{pretrained}' and '{pretrained}/')"]),
    (  # the pair trained seeds 0 and 1
      f'{pretrained_pair},{pretrained_seed1}',
      [f'{pretrained_seed1}: its member seed 1 was also trained by {pretrained_pair}', '--config.seed'],
    ),
  ):
    done = run(
      'finetune', f'--pretrained={sources}', f'--workdir={tmp_path / "w"}', f'--config={TEST_CONFIG}', check=False
    )
    assert_user_error(done, *fragments)
    done = run(
      'transfer_study',
      f'--workdir={tmp_path / "study"}',
      f'--config={TEST_CONFIG}:study',
      f'--config.study.pretrained={sources}',
      check=False,
    )
    assert_user_error(done, *fragments)
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'study').exists()


def test_a_run_saved_before_frozen_layers_existed_joins_a_newer_one(pretrained, pretrained_seed1, tmp_path):
  # The first OQMD run's model meta predates `frozen_layers`; it froze nothing, as the newer run did.
  older = tmp_path / 'older'
  shutil.copytree(pretrained / 'model', older / 'model')
  shutil.copy(pretrained / 'config.json', older / 'config.json')
  meta = json.loads((older / 'model' / 'meta.json').read_text())
  del meta['frozen_layers']
  (older / 'model' / 'meta.json').write_text(json.dumps(meta))
  assert experiment.read_source_meta([older, pretrained_seed1])['members'] == 2


def test_composition_checkpoint_refuses_smiles_data(pretrained, tmp_path):
  done = run(
    'finetune',
    f'--pretrained={pretrained}',
    f'--workdir={tmp_path / "w"}',
    f'--config={TEST_CONFIG}',
    '--config.dataset.name=porphyrin_mppd',
    '--config.dataset.target=E_gap',
    '--config.dataset.skip_invalid=True',
    '--config.featurizer.name=estate',
    check=False,
  )
  assert_user_error(done, "reads features from 'composition'", "'estate'")
  assert not (tmp_path / 'w' / 'metrics.json').exists()


def test_overwrite_with_a_bad_flag_keeps_the_finished_run(pretrained):
  before = {name: (pretrained / name).read_bytes() for name in ('metrics.json', 'predictions_test.csv')}
  done = run(
    'pretrain',
    f'--workdir={pretrained}',
    f'--config={TEST_CONFIG}',
    '--overwrite',
    '--config.train.optimizer=sgd',
    check=False,
  )
  assert_user_error(done, "--config.train.optimizer='sgd'", 'adam, adamw')
  assert {name: (pretrained / name).read_bytes() for name in before} == before
  assert (pretrained / 'model' / 'meta.json').exists()


def test_overwrite_keeps_the_finished_run_until_the_new_one_finishes(pretrained, tmp_path):
  workdir = shutil.copytree(pretrained, tmp_path / 'run')
  before = (workdir / 'metrics.json').read_bytes()
  flags = [f'--workdir={workdir}', f'--config={TEST_CONFIG}', '--config.dataset.name=qmpy_legacy', '--overwrite']
  done = run('pretrain', *flags, '--config.train.learning_rate=1e30', check=False)
  assert_user_error(done, 'training diverged')
  assert f'the run it replaces is kept in {workdir / "replaced"}' in done.stderr
  assert (workdir / 'replaced' / 'metrics.json').read_bytes() == before
  assert (workdir / 'replaced' / 'model' / 'meta.json').exists() and not (workdir / 'metrics.json').exists()
  run('pretrain', *flags, '--config.train.batch_size=256')
  assert (workdir / 'metrics.json').exists() and not (workdir / 'replaced').exists()


def test_overwriting_a_study_keeps_the_old_results_until_the_new_study_finishes(tmp_path):
  # The study pretrains its own source model; a replacement with another source config pretrains
  # again: the old results are kept until the new study finishes, the old source model until the new one is.
  flags = (f'--workdir={tmp_path}', f'--config={TEST_CONFIG}:study', '--config.study.seeds=1')
  run('transfer_study', *flags, "--config.study.methods=('direct',)")
  before = {name: (tmp_path / name).read_bytes() for name in ('results.json', 'study_config.json')}
  source_before = (tmp_path / 'pretrain' / 'metrics.json').read_bytes()
  (tmp_path / 'replaced').mkdir()  # left by a kill just before the finished study discarded it
  (tmp_path / 'replaced' / 'results.json').write_text('{"runs": []}')
  diverging = (
    '--config.source.seed=1',
    "--config.study.methods=('finetune',)",
    '--config.study.freeze_layers=(0,)',
    '--overwrite',
  )
  # The finished study displaces the stale replaced/; a second failed replacement leaves it there.
  for learning_rate in ('1e30', '2e30'):
    done = run(
      'transfer_study', *flags, *diverging, f'--config.target.train.learning_rate={learning_rate}', check=False
    )
    assert_user_error(done, 'training diverged')
    assert {name: (tmp_path / 'replaced' / name).read_bytes() for name in before} == before
  run('transfer_study', *flags, '--config.source.seed=1', "--config.study.methods=('direct',)", '--overwrite')
  assert {r['method'] for r in json.loads((tmp_path / 'results.json').read_text())['runs']} == {'direct'}
  assert not (tmp_path / 'replaced').exists()
  assert (tmp_path / 'pretrain' / 'metrics.json').read_bytes() != source_before


def test_a_resumed_study_plots_the_runs_made_before_it_was_interrupted(pretrained, tmp_path):
  flags = (
    f'--workdir={tmp_path}',
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={pretrained}',
    "--config.study.methods=('scratch','finetune')",
    '--config.study.freeze_layers=(0,)',
    '--config.study.train_fractions=(1.0,)',
    '--config.study.seeds=1',
  )
  run('transfer_study', *flags)
  results = json.loads((tmp_path / 'results.json').read_text())
  scratch = [row for row in results['runs'] if row['method'] == 'scratch']
  # What a kill right after the scratch run leaves: its rows and its parity predictions, no more.
  results.update(runs=scratch, finished=False)
  for key in ('finetune0', '_val_finetune0'):
    del results['parity'][key]
  (tmp_path / 'results.json').write_text(json.dumps(results))
  (tmp_path / 'parity.png').unlink()
  run('transfer_study', *flags)
  resumed = json.loads((tmp_path / 'results.json').read_text())
  assert resumed['runs'][: len(scratch)] == scratch and {row['method'] for row in resumed['runs']} == {
    'scratch',
    'finetune',
  }
  assert (tmp_path / 'parity.png').read_bytes()[:4] == b'\x89PNG'  # scratch against fine-tuning, as before the kill


def test_a_study_resumes_only_from_the_source_runs_it_started_from(pretrained, tmp_path):
  source, workdir = tmp_path / 'source', tmp_path / 'study'
  shutil.copytree(pretrained, source)
  flags = (
    f'--workdir={workdir}',
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={source}',
    "--config.study.methods=('direct',)",
    '--config.study.seeds=1',
  )
  run('transfer_study', *flags)
  pretrain_legacy(source, '--overwrite', '--config.seed=1')  # trained again under the same name
  assert_user_error(
    run('transfer_study', *flags, check=False),
    f'{workdir}: holds a study made from {source} as it was before it was trained again',
  )
  run('transfer_study', *flags, '--overwrite')
  digest = hashlib.sha256((source / 'metrics.json').read_bytes()).hexdigest()
  assert json.loads((workdir / 'results.json').read_text())['sources'] == {str(source): digest}


def test_a_study_whose_results_json_was_cut_short_starts_over_only_with_overwrite(pretrained, tmp_path):
  flags = (
    f'--workdir={tmp_path}',
    f'--config={TEST_CONFIG}:study',
    f'--config.study.pretrained={pretrained}',
    "--config.study.methods=('direct',)",
    '--config.study.seeds=1',
  )
  run('transfer_study', *flags)
  results = tmp_path / 'results.json'
  cut = results.read_bytes()[:100]
  results.write_bytes(cut)
  assert_user_error(
    run('transfer_study', *flags, check=False),
    f'{results}: corrupted (',
    'pass --overwrite to start the study over',
  )
  assert results.read_bytes() == cut
  run('transfer_study', *flags, '--overwrite')
  assert [row['method'] for row in json.loads(results.read_text())['runs']] == ['direct']
  assert not (tmp_path / 'replaced').exists()


def test_cross_validation_refuses_a_target_that_ships_its_own_split(pretrained, tmp_path):
  # Repeats are grouped within each published part, so folds drawn over the parts could put one
  # composition in training and test.
  config = importlib.import_module('experiments.configs.test').get_config('study')
  config.study.update(pretrained=str(pretrained), folds=2)
  config.target.dataset.name = 'oqmd_fe'
  with pytest.raises(UserError, match=r'oqmd_fe: ships its own split, .*--config\.target\.dataset\.resplit=True'):
    study.run_study(config, tmp_path)
  assert not any(tmp_path.iterdir())


def test_empty_or_too_small_datasets(tmp_path):
  path = tmp_path / 'tiny.csv'
  path.write_text('formula,energy\nFe2O3,-1.0\nNaCl,-2.1\nMgO,-3.0\n')
  flags = [f'--config={TEST_CONFIG}', f'--config.dataset.name={path}', '--config.dataset.target=energy']
  assert_user_error(
    run('pretrain', f'--workdir={tmp_path / "a"}', *flags, check=False),
    f'{path}: the val split has 0 examples (need at least 1)',
  )
  path.write_text('formula,energy\nXx,-1.0\nQq,-2.1\n')
  assert_user_error(
    run('pretrain', f'--workdir={tmp_path / "b"}', *flags, '--config.dataset.skip_invalid=True', check=False),
    'no usable rows left',
  )
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def test_an_interrupted_fine_tune_resumes_only_from_the_source_it_started_from(pretrained, tmp_path):
  source, workdir = tmp_path / 'source', tmp_path / 'finetune'
  shutil.copytree(pretrained, source)
  flags = (f'--pretrained={source}', f'--workdir={workdir}', f'--config={TEST_CONFIG}', '--config.train.max_epochs=2')

  def interrupt():  # as if killed after the last checkpoint
    for name in ('metrics.json', 'predictions_test.csv'):
      (workdir / name).unlink()

  run('finetune', *flags)
  interrupt()
  assert 'resuming' in run('finetune', *flags).stderr
  interrupt()
  pretrain_legacy(source, '--overwrite', '--config.seed=1')  # the source trained again, under the same name
  assert_user_error(
    run('finetune', *flags, check=False),
    f'{workdir}: holds an interrupted run fine-tuned from {source} as it was before it was trained again',
  )
  run('finetune', *flags, '--overwrite')
  assert json.loads((workdir / 'sources.json').read_text()) == {
    str(source): hashlib.sha256((source / 'metrics.json').read_bytes()).hexdigest()
  }


def test_interrupted_run_with_other_flags_and_corrupted_checkpoint(tmp_path):
  flags = [f'--config={TEST_CONFIG}', '--config.train.max_epochs=2']
  run('pretrain', f'--workdir={tmp_path}', *flags)
  for name in ('metrics.json', 'predictions_test.csv'):  # as if killed after the last checkpoint
    (tmp_path / name).unlink()
  done = run('pretrain', f'--workdir={tmp_path}', f'--config={TEST_CONFIG}', '--config.train.max_epochs=5', check=False)
  assert_user_error(done, 'holds an interrupted run with a different config (train.max_epochs)')
  # Array chunks first (orbax leaves reads running that used to print tracebacks around the line), then all.
  for chunks_only in (True, False):
    for file in (tmp_path / 'checkpoints').rglob('*'):
      if file.is_file() and 'state' in file.parts and ('d' in file.parts or not chunks_only):
        file.write_bytes(b'garbage')
    done = run('pretrain', f'--workdir={tmp_path}', *flags, check=False)
    assert_user_error(done, 'checkpoint cannot be restored')
    assert 'Event loop is closed' not in done.stderr
