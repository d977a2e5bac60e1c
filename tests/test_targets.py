"""Several targets: OQMD band gap, volume per atom and formation enthalpy (CrabNet package) joined on formula,
with cells left blank; one network with three outputs, and a fine-tune from it to one target."""

import csv
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import config_with, require_dataset, user_error

from elemnet_jax import data, featurizers, predict, run, targets
from elemnet_jax.data import datasets
from elemnet_jax.data.readers import read_csv
from elemnet_jax.models import build_model
from elemnet_jax.models.elemnet import ElemNetConfig
from elemnet_jax.training import checkpoint, guard, losses, train
from elemnet_jax.training.optimizer import make_optimizer

NAMES = ('band_gap', 'volume', 'enthalpy')


def write_three(path, rows: int, seed: int = 0, blank: float = 0.15):
  """formula,band_gap,volume,enthalpy of `rows` OQMD compositions, each cell blank with probability `blank`
  (and where a property is not in its dataset); rows left with no value at all are dropped."""
  for name in ('oqmd_volume', 'oqmd_bandgap', 'oqmd_fe'):
    require_dataset(name)
  volume, _ = datasets.load_table('oqmd_volume')
  gap, enthalpy = (dict(zip(t.inputs, t.targets)) for t, _ in map(datasets.load_table, ('oqmd_bandgap', 'oqmd_fe')))
  rng = np.random.default_rng(seed)
  with open(path, 'w', newline='') as stream:
    writer = csv.writer(stream)
    writer.writerow(['formula', *NAMES])
    for i in rng.choice(len(volume.inputs), rows, replace=False):
      formula = volume.inputs[i]
      cells = [gap.get(formula, ''), volume.targets[i], enthalpy.get(formula, '')]
      cells = [cell if rng.random() > blank else '' for cell in cells]
      if any(cells):
        writer.writerow([formula, *cells])
  return path


def test_several_target_columns_read_as_tuples_and_parse_with_blank_cells_missing(tmp_path):
  path = tmp_path / 't.csv'
  path.write_text('formula,a,b\nNaCl,1.5,\nMgO,,2\nFeO,,\nCuO,x,1\n')
  table = read_csv(path, 'formula', ('a', 'b'))
  assert table.targets == [('1.5', ''), ('', '2'), ('', ''), ('x', '1')]
  spec = datasets.load_table(str(path), 'a,b')[1]
  featurizer = featurizers.build({'name': 'composition'})
  message = user_error(lambda: data.prepare(table, spec, featurizer), 'row 4', 'every target is missing', 'row 5')
  assert 'target 1 is not a number' in message
  examples = data.prepare(table, spec, featurizer, skip_invalid=True)
  np.testing.assert_array_equal(examples.y, np.array([[1.5, np.nan], [np.nan, 2.0]], np.float32))
  user_error(lambda: datasets.load_table(str(path), 'a,a'), 'name each target column once')
  user_error(lambda: datasets.load_table(str(path), 'a,c'), "missing column(s) 'c'")


def test_each_target_is_scaled_on_its_own_values_present():
  y = np.array([[1.0, 10.0], [3.0, np.nan], [np.nan, 30.0]])
  scaling = data.TargetScaling.fit(y, 'standard')
  assert scaling.shift == (2.0, 20.0) and scaling.scale == (1.0, 10.0)
  np.testing.assert_allclose(scaling.apply(y)[:2, 0], [-1.0, 1.0])
  assert data.TargetScaling(**scaling.to_dict()) == scaling
  assert data.scaling_problem({'feature_scaling': {'keep': [0], 'mean': [0.0], 'scale': [1.0]}}) != ''


def test_missing_targets_weigh_nothing_in_the_loss_and_in_early_stopping():
  """The loss of a batch with blank cells equals the loss of the cells present; their values never matter."""
  model = build_model(ElemNetConfig(widths=(8,), dropout_after=(), dropout_rates=(), use_dropout=False, outputs=2))
  optimizer = make_optimizer(1e-3)
  state = train.init_state(model, optimizer, 3, 0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  y = jnp.asarray([[1.0, np.nan], [np.nan, 2.0], [0.5, -1.0], [2.0, 0.0]], jnp.float32)
  mask = jnp.asarray([True, True, True, False])
  step = jax.jit(train.make_train_step(model, optimizer, 'mae'))
  _, out = step(state, x, y, mask)
  prediction = np.asarray(model.apply(state.params, x))
  cells = [(0, 0), (1, 1), (2, 0), (2, 1)]  # present in the first three rows; row 4 is padding
  expected = np.mean([abs(prediction[i, t] - float(y[i, t])) for i, t in cells])
  assert float(out['loss']) == pytest.approx(expected, rel=1e-5)
  scores = losses.validation_error('mae', prediction[None, :3], np.asarray(y)[:3])
  per_target = [np.mean([abs(prediction[i, t] - float(y[i, t])) for i, s in cells if s == t]) for t in (0, 1)]
  assert scores[0] == pytest.approx(np.mean(per_target), rel=1e-6)


def test_training_stops_only_once_every_target_learned_nothing():
  rng = np.random.default_rng(0)
  y_train, y_val = rng.normal(size=(300, 2)), rng.normal(size=(100, 2))
  y_val[::7, 1] = np.nan  # missing values are not judged
  check = targets.monitor(y_train, y_val, 3, 'run', ['a', 'b'])
  constant = np.zeros((2, 100, 2))
  one_learned = constant.copy()
  one_learned[:, :, 0] = y_val[:, 0]
  check(3, 500, one_learned)  # target a learned: training goes on
  check(4, 600, constant)  # and so it does after a worse epoch
  fresh = targets.monitor(y_train, y_val, 3, 'run', ['a', 'b'])
  fresh(2, 500, constant)  # before guard_epochs: not judged
  with pytest.raises(guard.TrainingCollapsed, match='learned nothing for any target'):
    fresh(3, 500, constant)


@pytest.fixture(scope='module')
def three(tmp_path_factory):
  """A 2-member network with three outputs trained on 1,500 compositions with about 15% of the cells blank."""
  folder = tmp_path_factory.mktemp('three')
  fields = {
    'dataset.name': str(write_three(folder / 'three.csv', 1500)),
    'dataset.target': ','.join(NAMES),
    'train.target_scaling': 'standard',
    'train.ensemble': 2,
    'train.max_epochs': 12,
    'train.patience': 12,
  }
  metrics = run.train_and_evaluate(config_with('test', fields), folder / 'run')
  return folder, metrics


def test_one_network_learns_every_target_with_scores_per_target_and_their_mean(three):
  folder, metrics = three
  rows = list(csv.DictReader(open(folder / 'three.csv')))
  assert metrics['targets'] == list(NAMES)
  for split in ('val', 'test'):
    assert set(metrics[split]) == {*NAMES, 'mean'}
    n = [metrics[split][name]['n'] for name in NAMES]
    assert sum(n) == metrics[split]['mean']['n'] and all(k < metrics['split_sizes'][split] for k in n)
  given = sum(bool(row[name]) for row in rows for name in NAMES)
  assert sum(metrics[s][name]['n'] for s in ('val', 'test') for name in NAMES) < given
  # the volume and the enthalpy are learned; each target is judged against its own training median
  for name in ('volume', 'enthalpy'):
    assert metrics['test'][name]['mae'] < 0.8 * metrics['test'][name]['baseline_mae']
    assert metrics['test'][name]['r2'] > 0.1
  assert set(metrics['guard']['targets']) == set(NAMES) and metrics['guard']['learned']  # some target learned
  meta = checkpoint.read_meta(folder / 'run', checkpoint.MODEL_META)
  assert meta['model']['outputs'] == 3 and meta['target']['names'] == list(NAMES)
  assert len(meta['target_scaling']['scale']) == 3
  with open(folder / 'run' / 'predictions_test.csv') as stream:
    header = next(csv.reader(stream))
  assert header[:4] == ['input', 'band_gap', 'band_gap prediction', 'band_gap std']
  log = (folder / 'run' / 'log.txt').read_text()
  assert 'volume: MAE' in log and 'mean R2' in log


def test_predict_prints_a_column_per_target(three, capsys):
  folder, _ = three
  result = predict.predict_file([str(folder / 'run')], inputs=['NaCl', 'Fe2O3', 'Xx'])
  table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert table[0] == ['input'] + [f'{name}{what}' for name in NAMES for what in ('', ' std')] + ['error', 'warning']
  assert result.mean.shape == (3, 3) and np.isnan(result.mean[2]).all()
  nacl = dict(zip(table[0], table[1]))
  assert 15 < float(nacl['volume']) < 45 and float(nacl['enthalpy']) < 0
  user_error(lambda: predict.predict_file([str(folder / 'run')], inputs=['NaCl'], coverage=0.9), 'several targets')
  scored = lambda: predict.predict_file(  # noqa: E731
    [str(folder / 'run')], input_csv=str(folder / 'three.csv'), target='volume', output=str(folder / 'scored.csv')
  )
  user_error(scored, '--target=volume: scores models of one target; this one predicts band_gap, volume, enthalpy')
  assert not (folder / 'scored.csv').exists()


def test_a_multi_target_source_fine_tunes_to_one_target_with_its_output_layer_redrawn(three):
  folder, source_metrics = three
  fields = {
    'dataset.name': str(folder / 'three.csv'),
    'dataset.target': 'volume',
    'dataset.skip_invalid': True,  # the rows whose volume is blank
    'transfer.pretrained': str(folder / 'run'),
    'train.max_epochs': 4,
  }
  metrics = run.train_and_evaluate(config_with('test', fields), folder / 'volume')
  meta = checkpoint.read_meta(folder / 'volume', checkpoint.MODEL_META)
  assert meta['model']['outputs'] == 1 and isinstance(meta['target_scaling']['scale'], float)
  assert metrics['test']['mae'] < metrics['test']['baseline_mae'] and metrics['pretrained'] == str(folder / 'run')
  assert json.loads((folder / 'volume' / 'config.json').read_text())['model']['outputs'] == 1


def test_several_targets_are_regression_targets(tmp_path):
  path = tmp_path / 't.csv'
  path.write_text('formula,a,b\nNaCl,1,0\nMgO,0,1\n')
  fields = {'dataset.name': str(path), 'dataset.target': 'a,b', 'dataset.task': 'classification'}
  user_error(lambda: run.prepare(config_with('test', fields), tmp_path / 'run'), 'a classifier takes one target')


def test_a_study_transfers_from_a_multi_target_source_to_one_target(three):
  from elemnet_jax import study

  folder, _ = three
  fields = {
    'target.dataset.name': str(folder / 'three.csv'),
    'target.dataset.target': 'enthalpy',
    'target.dataset.skip_invalid': True,
    'study.pretrained': str(folder / 'run'),
    'study.methods': ('scratch', 'finetune'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (1.0,),
    'study.seeds': 1,
  }
  rows = {row['method']: row for row in study.run_study(config_with('test:study', fields), folder / 'study')}
  assert set(rows) == {'scratch', 'finetune'} and all(row['mae'] > 0 for row in rows.values())
  direct = {**fields, 'study.methods': ('direct',)}
  user_error(lambda: study.run_study(config_with('test:study', direct), folder / 'direct'), 'several targets')


def test_a_fine_tune_to_other_targets_than_the_source_predicts_redraws_the_output_layer():
  from elemnet_jax.configs.schema import DatasetConfig

  def dataset(target):
    return DatasetConfig(target=target)

  three_columns = {'model': {'outputs': 3}, 'target': {'names': ['a', 'b', 'c']}}
  assert targets.new_outputs(three_columns, dataset('a')) and targets.new_outputs(three_columns, dataset('a,b,d'))
  assert not targets.new_outputs(three_columns, dataset('a,b,c'))
  one = {'model': {'name': 'elemnet'}, 'target': {'name': 'target'}}  # a source saved before `outputs`
  assert not targets.new_outputs(one, dataset('dHf')) and targets.new_outputs(one, dataset('a,b'))
  assert not targets.new_outputs(None, dataset('a,b'))
