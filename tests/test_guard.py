"""The baseline guard: a run that learned nothing is stopped early, says so, and is not transferred from."""

import json

import numpy as np
import pytest
from conftest import config_with, require_dataset, user_error
from test_cli import assert_user_error, elemnet_jax

from elemnet_jax import run
from elemnet_jax.data import datasets
from elemnet_jax.study import run_study
from elemnet_jax.training import guard

# Adam at rate 1 kills every ReLU of the tiny network within an epoch: the output is a constant.
COLLAPSING = {'dataset.name': 'qmpy_legacy', 'train.batch_size': 64, 'train.learning_rate': 1.0}


def test_judgement_of_constant_median_and_good_predictions():
  rng = np.random.default_rng(0)
  y_train, y = rng.normal(size=500), rng.normal(size=200)
  constant = guard.judge(y_train, y, np.full(200, np.median(y_train)))
  assert constant.constant and constant.no_better and constant.mae == pytest.approx(constant.baseline_mae)
  noisy = guard.judge(y_train, y, rng.normal(size=200))  # varies, but knows nothing
  assert not noisy.constant and noisy.no_better
  good = guard.judge(y_train, y, y + 0.1 * rng.normal(size=200))
  assert not good.problem() and good.mae < 0.2 * good.baseline_mae
  assert 'LEARNED NOTHING (constant predictions and no better' in guard.verdict(constant, 'run')


def test_the_monitor_stops_constant_runs_early_and_runs_no_better_than_the_median_later():
  rng = np.random.default_rng(1)
  y_train, y_val = rng.normal(size=400), rng.normal(size=100)
  check = guard.monitor(y_train, y_val, 3, 'run')
  constant, noisy, good = np.zeros((2, 100)), rng.normal(size=(2, 100)), y_val + 0.1 * rng.normal(size=(2, 100))
  check(2, 1000, constant)  # before epoch 3: not judged
  check(3, 100, constant)  # nor before 200 steps
  with pytest.raises(guard.TrainingCollapsed, match='run: training stopped at epoch 3 .step 300.'):
    check(3, 300, constant)
  check(11, 500, noisy)  # no better than the median, but not constant: judged from epoch 12
  with pytest.raises(guard.TrainingCollapsed, match='no better than the training median'):
    check(12, 600, noisy)
  check(12, 600, np.stack([noisy[0], good[0]]))  # one member learned: training goes on
  check(50, 5000, good)
  guard.monitor(y_train, y_val, 0, 'off')(50, 5000, constant)  # guard_epochs=0: never


def test_a_run_that_beat_the_median_once_is_not_stopped_by_a_worse_epoch():
  # A small network on a zero-inflated target swings between epochs; early stopping keeps its best one.
  rng = np.random.default_rng(2)
  y_train, y_val = rng.normal(size=400), rng.normal(size=100)
  noisy, good = rng.normal(size=(1, 100)), y_val + 0.1 * rng.normal(size=(1, 100))
  check = guard.monitor(y_train, y_val, 3, 'run')
  check(5, 500, good)
  check(8, 800, noisy)  # worse than the median now, better at epoch 5
  check(9, 900, np.zeros((1, 100)))  # constant now: an earlier epoch learned
  fresh = guard.monitor(y_train, y_val, 3, 'run')
  fresh(11, 500, noisy)
  with pytest.raises(guard.TrainingCollapsed, match=r'val MAE [0-9.]+ vs [0-9.]+ for the training median'):
    fresh(12, 600, noisy)


def test_a_resumed_run_remembers_that_it_learned_before_it_stopped():
  rng = np.random.default_rng(3)
  y_train, y_val = rng.normal(size=400), rng.normal(size=100)
  good, noisy = y_val + 0.1 * rng.normal(size=100), rng.normal(size=(1, 100))
  baseline = np.mean(np.abs(y_val - np.median(y_train)))
  learned = guard.learned_before(y_train, y_val, [np.mean(np.abs(good - y_val))])
  assert learned.tolist() == [True] and guard.learned_before(y_train, y_val, [baseline]).tolist() == [False]
  guard.monitor(y_train, y_val, 3, 'run', learned=learned)(13, 1300, noisy)  # resumed at epoch 13: goes on
  with pytest.raises(guard.TrainingCollapsed):
    guard.monitor(y_train, y_val, 3, 'run', learned=[False])(13, 1300, noisy)
  nan = np.full((1, 100), np.nan)
  check = guard.monitor(y_train, y_val, 3, 'run')
  check(1, 100, nan)  # non-finite predictions never count as learned
  with pytest.raises(guard.TrainingCollapsed):
    check(12, 1200, noisy)


def test_a_collapsing_run_stops_within_a_few_epochs(tmp_path):
  require_dataset('qmpy_legacy')
  config = config_with('test', {**COLLAPSING, 'train.max_epochs': 50, 'train.patience': 50, 'train.guard_epochs': 2})
  message = user_error(
    lambda: run.train_and_evaluate(config, tmp_path / 'collapsed'),
    'training stopped at epoch 2',
    'learned nothing (constant predictions',
    'target_scaling=standard',
  )
  assert 'training stopped at epoch 2' in (tmp_path / 'collapsed' / 'log.txt').read_text(), message
  assert not (tmp_path / 'collapsed' / 'metrics.json').exists()


def test_a_healthy_run_is_not_flagged(pretrained):
  metrics = json.loads((pretrained / 'metrics.json').read_text())
  assert metrics['guard']['learned'] and metrics['guard']['verdict'].startswith('learned: val MAE')
  for split in ('val', 'test'):
    assert metrics[split]['mae'] < 0.5 * metrics[split]['baseline_mae'] and metrics[split]['prediction_std'] > 0.3
  assert metrics['guard']['verdict'] in (pretrained / 'log.txt').read_text().splitlines()[-1]


@pytest.fixture(scope='module')
def collapsed_source(tmp_path_factory):
  """A finished run that learned nothing: the guard was off, so it trained to the end."""
  require_dataset('qmpy_legacy')
  source = tmp_path_factory.mktemp('runs') / 'source'
  config = config_with('test', {**COLLAPSING, 'train.max_epochs': 2, 'train.guard_epochs': 0})
  metrics = run.train_and_evaluate(config, source)
  assert not metrics['guard']['learned'] and metrics['val']['prediction_std'] == pytest.approx(0, abs=1e-6)
  assert 'LEARNED NOTHING' in (source / 'log.txt').read_text().splitlines()[-1]
  return source


def test_finetune_refuses_a_source_that_learned_nothing_unless_allowed(collapsed_source, tmp_path):
  fields = {
    'transfer.pretrained': str(collapsed_source),
    'train.max_epochs': 1,
    'transfer.allow_collapsed_source': False,
  }
  fine = config_with('test', fields)
  user_error(
    lambda: run.train_and_evaluate(fine, tmp_path / 'fine'),
    f'{collapsed_source}: this source learned nothing',
    '--config.transfer.allow_collapsed_source=True',
  )
  assert not (tmp_path / 'fine').exists()
  fine = fine.replace({'transfer.allow_collapsed_source': True})
  assert run.train_and_evaluate(fine, tmp_path / 'fine')['pretrained'] == str(collapsed_source)


def test_a_study_refuses_a_source_that_learned_nothing_unless_allowed_and_reports_it(collapsed_source, tmp_path):
  fields = {'study.pretrained': str(collapsed_source), 'study.allow_collapsed_source': False}
  config = config_with('test:study', fields)
  user_error(
    lambda: run_study(config, tmp_path / 'study'), 'this source learned nothing', 'study.allow_collapsed_source=True'
  )
  assert not (tmp_path / 'study' / 'results.json').exists()
  small = {'study.methods': ('scratch', 'finetune'), 'study.train_fractions': (1.0,), 'study.seeds': 1}
  small.update({'study.freeze_layers': (0,), 'study.allow_collapsed_source': True})
  config = config_with('test:study', {'study.pretrained': str(collapsed_source), **small})
  run_study(config, tmp_path / 'study')
  report = (tmp_path / 'study' / 'results.md').read_text()
  assert 'Source: LEARNED NOTHING (constant predictions' in report


def test_the_command_ends_with_the_collapse_in_one_line(tmp_path):
  require_dataset('qmpy_legacy')
  flags = ['--config.dataset.name=qmpy_legacy', '--config.train.batch_size=64', '--config.train.learning_rate=1.0']
  flags += ['--config.train.max_epochs=50', '--config.train.guard_epochs=2']
  done = elemnet_jax('train', '--config=test', '--workdir=w', *flags, cwd=tmp_path, check=False)
  assert_user_error(done, 'training stopped at epoch 2', 'learned nothing (constant predictions')


def test_the_oqmd_recipe_learns_a_zero_inflated_source_read_from_a_csv(tmp_path):
  # 20,000 OQMD band gaps (93% exactly 0 eV) as a user's CSV, the paper's 17-layer network and the
  # `oqmd` recipe (the `paper` study's source), 4 epochs: with raw targets the network collapses to
  # the median and the guard stops it at epoch 4 (its first past 200 steps); the recipe as it is
  # (standardised targets) learns.
  require_dataset('oqmd_bandgap')
  table, _ = datasets.load_table('oqmd_bandgap')
  rows = np.random.default_rng(0).permutation([i for i, split in enumerate(table.split) if split == 'train'])
  path = tmp_path / 'gaps.csv'
  path.write_text('formula,gap\n' + ''.join(f'{table.inputs[i]},{table.targets[i]}\n' for i in rows[:20_000]))
  fields = {'dataset.name': str(path), 'dataset.target': 'gap', 'train.max_epochs': 4, 'train.patience': 4}
  user_error(
    lambda: run.train_and_evaluate(config_with('oqmd', {**fields, 'train.target_scaling': 'none'}), tmp_path / 'raw'),
    'training stopped at epoch 4',
    'learned nothing (constant predictions',
  )
  metrics = run.train_and_evaluate(config_with('oqmd', fields), tmp_path / 'default')
  assert metrics['guard']['learned'] and metrics['val']['mae'] < 0.9 * metrics['val']['baseline_mae']
