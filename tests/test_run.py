"""One training run in process: what a workdir holds, fine-tuning, resuming, replacing, and bad input."""

import hashlib
import importlib.metadata
import json
import os
import shutil

import flax
import jax
import jaxlib
import numpy as np
import optax
import pytest
from conftest import config_with, molecule_fields, pretrain_legacy, user_error

from elemnet_jax import machine, run


def test_pretrain_writes_metrics_predictions_history_log_split_and_model(pretrained):
  metrics = json.loads((pretrained / 'metrics.json').read_text())
  assert set(metrics['test']) == {'mae', 'rmse', 'r2', 'n', 'baseline_mae', 'prediction_std'}
  assert metrics['data']['dropped_abs_target_above']['count'] == 1
  lines = (pretrained / 'predictions_test.csv').read_text().splitlines()
  assert lines[0] == 'input,target,prediction' and len(lines) == metrics['test']['n'] + 1
  assert (pretrained / 'split.csv').exists() and (pretrained / 'model' / 'meta.json').exists()
  history = (pretrained / 'history.csv').read_text().splitlines()
  assert history[0] == 'epoch,train_loss_0,val_mae_0,learning_rate,seconds'
  assert len(history) == metrics['epochs'] + 1 and history[1].startswith('1,') and ',0.001,' in history[1]
  log = (pretrained / 'log.txt').read_text()
  assert 'pretrain epoch 3/3' in log and 'test MAE' in log
  meta = json.loads((pretrained / 'model' / 'meta.json').read_text())
  assert meta['target'] == {'name': 'energy', 'quantity': 'formation enthalpy', 'unit': 'eV/atom'}
  assert meta['seen_columns'] == list(range(86))  # every element occurs in qmpy_legacy's training rows
  # what the bits depend on besides config and data: versions, devices, CPU, the cores this process had
  assert metrics['machine'] == {
    'elemnet_jax': importlib.metadata.version('elemnet_jax'),
    'jax': jax.__version__,
    'jaxlib': jaxlib.__version__,
    'flax': flax.__version__,
    'optax': optax.__version__,
    'numpy': np.__version__,
    'platform': 'cpu',
    'device_kind': 'cpu',
    'devices': 1,
    'processes': 1,
    'cpu': machine.cpu_model(),
    'cores': len(os.sched_getaffinity(0)),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def test_finished_workdir_is_refused_unless_overwrite(pretrained):
  before = (pretrained / 'metrics.json').read_text()
  user_error(lambda: run.train_and_evaluate(config_with('test'), pretrained), 'holds a finished run', '--overwrite')
  assert (pretrained / 'metrics.json').read_text() == before


def test_finetune_freezes_records_the_source_model_and_its_sources(pretrained, tmp_path):
  config = config_with(
    'test',
    {
      'transfer.pretrained': str(pretrained),
      'transfer.freeze_layers': 2,
      'train.ensemble': 2,
      'train.optimizer': 'adamw',  # L2-SP: its starting point lives in the checkpointed optimizer state
      'train.decay_toward': 'start',
      'train.weight_decay': 0.1,
    },
  )
  other = config.replace({'model.widths': (8, 8)})  # the model trained is the source's: another one is refused
  user_error(lambda: run.train_and_evaluate(other, tmp_path / 'ft'), 'model.widths=(8, 8)', 'widths=(64, 32, 16)')
  metrics = run.train_and_evaluate(config, tmp_path / 'ft')
  assert metrics['frozen_layers'] == [1, 2] and metrics['members'] == 2
  assert metrics['pretrained'] == str(pretrained)
  recorded = json.loads((tmp_path / 'ft' / 'config.json').read_text())
  source = json.loads((pretrained / 'model' / 'meta.json').read_text())['model']
  assert recorded['model'] == source and recorded['model']['widths'] == [64, 32, 16]
  digest = hashlib.sha256((pretrained / 'metrics.json').read_bytes()).hexdigest()
  assert json.loads((tmp_path / 'ft' / 'sources.json').read_text()) == {str(pretrained): digest}
  assert (tmp_path / 'ft' / 'history.csv').read_text().splitlines()[0].startswith('epoch,train_loss_0,train_loss_1,')


@pytest.mark.parametrize(
  'fields, fragments',
  [
    ({'transfer.freeze_layers': 9}, ['freeze_layers=9 is outside the model', '0..3']),
    ({'dataset.name': 'nope'}, ['unknown dataset', 'oqmd_fe']),
    ({'dataset.split': (0.5, 0.1, 0.1)}, ['split=(0.5, 0.1, 0.1)', 'sum to 1']),
  ],
)
def test_finetune_errors(pretrained, tmp_path, fields, fragments):
  fields = {'transfer.pretrained': str(pretrained), **fields}
  user_error(lambda: run.train_and_evaluate(config_with('test', fields), tmp_path / 'w'), *fragments)
  assert not (tmp_path / 'w').exists()


def test_missing_or_corrupted_pretrained_workdir(pretrained, tmp_path):
  absent = config_with('test', {'transfer.pretrained': str(tmp_path / 'absent')})
  user_error(lambda: run.train_and_evaluate(absent, tmp_path / 'w'), 'no such workdir')
  broken = tmp_path / 'broken'
  (broken / 'model' / 'params').mkdir(parents=True)
  (broken / 'model' / 'meta.json').write_text((pretrained / 'model' / 'meta.json').read_text())
  config = config_with('test', {'transfer.pretrained': str(broken)})
  user_error(lambda: run.train_and_evaluate(config, tmp_path / 'w2'), 'cannot be restored', 'missing or corrupted')


def _user_csv(tmp_path):
  good = ['Fe2O3,-1.0', 'NaCl,-2.1', 'MgO,-3.0', 'Al2O3,-3.4', 'LiF,-3.2', 'CaO,-3.3', 'ZnO,-1.8', 'CuO,-0.8']
  path = tmp_path / 'mine.csv'
  path.write_text('formula,energy\n' + '\n'.join(good + ['TiO2,-3.3', 'SiO2,-3.1', 'Qq2,1.0', 'KCl,oops']) + '\n')
  return path


def test_bad_user_csv_stops_before_training_and_skip_invalid_counts(tmp_path):
  path = _user_csv(tmp_path)
  fields = {'dataset.name': str(path), 'dataset.target': 'energy'}
  user_error(
    lambda: run.train_and_evaluate(config_with('test', fields), tmp_path / 'a'),
    str(path),
    '2 invalid input row(s)',
    "row 12 ('Qq2')",
    "row 13 ('oops')",
    '--config.dataset.skip_invalid=True',
  )
  assert not (tmp_path / 'a').exists()
  metrics = run.train_and_evaluate(config_with('test', {**fields, 'dataset.skip_invalid': True}), tmp_path / 'b')
  assert metrics['data']['invalid_skipped'] == 2
  missing = config_with('test', {**fields, 'dataset.target': 'nope'})
  user_error(
    lambda: run.train_and_evaluate(missing, tmp_path / 'c'), "missing column(s) 'nope'", "columns present: 'formula'"
  )
  absent = config_with('test', {'dataset.name': str(tmp_path / 'absent.csv'), 'dataset.target': 'x'})
  user_error(lambda: run.train_and_evaluate(absent, tmp_path / 'd'), 'absent.csv: no such file')


def test_a_user_csv_records_the_unit_it_is_given(tmp_path):
  fields = {'dataset.name': str(_user_csv(tmp_path)), 'dataset.target': 'energy', 'dataset.skip_invalid': True}
  run.train_and_evaluate(config_with('test', {**fields, 'dataset.unit': 'eV/atom'}), tmp_path / 'w')
  meta = json.loads((tmp_path / 'w' / 'model' / 'meta.json').read_text())
  assert meta['target'] == {'name': 'energy', 'quantity': 'energy', 'unit': 'eV/atom'}


def test_same_config_and_seed_give_identical_metrics(pretrained, tmp_path):
  pretrain_legacy(tmp_path / 'again')
  again, first = (json.loads((path / 'metrics.json').read_text()) for path in (tmp_path / 'again', pretrained))
  assert again.pop('seconds').keys() == first.pop('seconds').keys() and again == first  # all but the timings


def test_a_fine_tune_retrained_with_its_validation_rows_saves_the_retrained_members(pretrained, tmp_path):
  # The early-stopped run chooses each member's epochs and keeps its validation score; the saved
  # model and its test metrics are the members trained again on training + validation rows.
  from elemnet_jax.predict import predict_inputs

  fields = {'transfer.pretrained': str(pretrained), 'train.ensemble': 2}
  split = run.train_and_evaluate(config_with('test', fields), tmp_path / 'split')
  retrained = run.train_and_evaluate(
    config_with('test', {**fields, 'train.retrain_with_validation': True}), tmp_path / 'retrained'
  )
  assert retrained['retrained_with_validation'] and not split['retrained_with_validation']
  assert retrained['val'] == split['val'] and retrained['best_epoch'] == split['best_epoch']
  assert retrained['split_sizes'] == split['split_sizes']
  assert retrained['test']['mae'] != split['test']['mae']
  predicted = [predict_inputs([str(tmp_path / name)], ['Fe2O3']).mean[0] for name in ('split', 'retrained')]
  assert predicted[0] != predicted[1]


def test_composition_checkpoint_refuses_smiles_data(pretrained, molecules_csv, tmp_path):
  config = config_with('test', {'transfer.pretrained': str(pretrained), **molecule_fields(molecules_csv)})
  user_error(lambda: run.train_and_evaluate(config, tmp_path / 'w'), "reads features from 'composition'", "'estate'")
  assert not (tmp_path / 'w').exists()


def test_overwrite_with_a_bad_setting_keeps_the_finished_run(pretrained):
  before = {name: (pretrained / name).read_bytes() for name in ('metrics.json', 'predictions_test.csv')}
  bad = {'train.optimizer': 'sgd'}
  overwrite = lambda: run.train_and_evaluate(config_with('test', bad), pretrained, overwrite=True)  # noqa: E731
  user_error(overwrite, "train.optimizer='sgd'", 'adam, adamw')
  assert {name: (pretrained / name).read_bytes() for name in before} == before
  assert (pretrained / 'model' / 'meta.json').exists()


def test_overwrite_keeps_the_finished_run_until_the_new_one_finishes(pretrained, tmp_path, caplog):
  workdir = shutil.copytree(pretrained, tmp_path / 'run')
  before = (workdir / 'metrics.json').read_bytes()
  fields = {'dataset.name': 'qmpy_legacy', 'overwrite': True}
  user_error(lambda: pretrain_legacy(workdir, {**fields, 'train.learning_rate': 1e30}), 'training diverged')
  assert f'the run it replaces is kept in {workdir / "replaced"}' in caplog.text
  assert (workdir / 'replaced' / 'metrics.json').read_bytes() == before
  assert (workdir / 'replaced' / 'model' / 'meta.json').exists() and not (workdir / 'metrics.json').exists()
  pretrain_legacy(workdir, fields)
  assert (workdir / 'metrics.json').exists() and not (workdir / 'replaced').exists()


def test_empty_or_too_small_datasets(tmp_path):
  path = tmp_path / 'tiny.csv'
  path.write_text('formula,energy\nFe2O3,-1.0\nNaCl,-2.1\nMgO,-3.0\n')
  fields = {'dataset.name': str(path), 'dataset.target': 'energy'}
  user_error(
    lambda: run.train_and_evaluate(config_with('test', fields), tmp_path / 'a'),
    f'{path}: the val split has 0 examples (need at least 1)',
  )
  path.write_text('formula,energy\nXx,-1.0\nQq,-2.1\n')
  skipping = config_with('test', {**fields, 'dataset.skip_invalid': True})
  user_error(lambda: run.train_and_evaluate(skipping, tmp_path / 'b'), 'no usable rows left')
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def _interrupt(workdir):  # as if killed after the last checkpoint
  for name in ('metrics.json', 'predictions_test.csv'):
    (workdir / name).unlink()


def test_an_interrupted_fine_tune_resumes_only_from_the_source_it_started_from(pretrained, tmp_path):
  source, workdir = tmp_path / 'source', tmp_path / 'finetune'
  shutil.copytree(pretrained, source)
  fields = {'transfer.pretrained': str(source), 'train.max_epochs': 2}
  run.train_and_evaluate(config_with('test', fields), workdir)
  _interrupt(workdir)
  run.train_and_evaluate(config_with('test', fields), workdir)
  assert 'resuming' in (workdir / 'log.txt').read_text()
  _interrupt(workdir)
  pretrain_legacy(source, {'overwrite': True, 'seed': 1})  # the source trained again, under the same name
  user_error(
    lambda: run.train_and_evaluate(config_with('test', fields), workdir),
    f'{workdir}: holds an interrupted run started from {source} as it was before it was trained again',
  )
  run.train_and_evaluate(config_with('test', fields), workdir, overwrite=True)
  assert json.loads((workdir / 'sources.json').read_text()) == {
    str(source): hashlib.sha256((source / 'metrics.json').read_bytes()).hexdigest()
  }


def test_an_interrupted_run_resumes_only_with_its_own_config_and_a_readable_checkpoint(tmp_path):
  run.train_and_evaluate(config_with('test', {'train.max_epochs': 2}), tmp_path)
  _interrupt(tmp_path)
  user_error(
    lambda: run.train_and_evaluate(config_with('test', {'train.max_epochs': 5}), tmp_path),
    'holds an interrupted run with a different config (train.max_epochs: 2, now 5)',
  )
  for file in (tmp_path / 'checkpoints').rglob('*'):
    if file.is_file() and 'state' in file.parts:
      file.write_bytes(b'garbage')
  user_error(
    lambda: run.train_and_evaluate(config_with('test', {'train.max_epochs': 2}), tmp_path), 'cannot be restored'
  )
