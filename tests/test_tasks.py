"""Classification: metal vs non-metal from the OQMD band gaps (CrabNet package), fine-tuned from a regression source."""

import csv
import io
import json

import jax
import numpy as np
import pytest
from conftest import config_with, require_dataset, user_error

from elemnet_jax import predict, run, tasks
from elemnet_jax.configs.schema import DatasetConfig
from elemnet_jax.data import datasets
from elemnet_jax.data.readers import RawTable
from elemnet_jax.metrics import classification_metrics
from elemnet_jax.training import checkpoint


def write_metals(path, per_class: int, seed: int = 0, positive: str = '1', negative: str = '0'):
  """A CSV of formula,metal: `per_class` OQMD compositions with band gap 0 (metal) and as many with a gap."""
  require_dataset('oqmd_bandgap')
  table, _ = datasets.load_table('oqmd_bandgap')
  gap = np.array([float(t) for t in table.targets])
  rng = np.random.default_rng(seed)
  rows = [rng.choice(np.flatnonzero(mask), per_class, replace=False) for mask in (gap == 0, gap > 0)]
  with open(path, 'w', newline='') as stream:
    writer = csv.writer(stream)
    writer.writerow(['formula', 'metal'])
    for i in rng.permutation(np.concatenate(rows)):
      writer.writerow([table.inputs[i], positive if gap[i] == 0 else negative])
  return path


def _dataset(**fields):
  return DatasetConfig(task='classification', **fields)


def test_labels_are_two_classes_0_1_or_two_values_and_anything_else_is_one_line():
  table = RawTable('t.csv', ['A', 'B', 'C', 'D'], ['metal', 'insulator', '', 'metal'], [2, 3, 4, 5])
  notes = {}
  encoded = tasks.encode_labels(table, _dataset(), notes)
  assert encoded.targets == ['1', '0', '', '1'] and notes['task']['classes'] == ['insulator', 'metal']
  encoded = tasks.encode_labels(table, _dataset(positive='insulator'), notes)
  assert encoded.targets == ['0', '1', '', '0'] and notes['task']['classes'] == ['metal', 'insulator']
  numbers = RawTable('t.csv', ['A', 'B'], ['1.0', '0'], [2, 3])
  assert tasks.encode_labels(numbers, _dataset(), {}).targets == ['1', '0']
  three = RawTable('t.csv', ['A', 'B', 'C'], ['a', 'b', 'c'], [2, 3, 4])
  user_error(lambda: tasks.encode_labels(three, _dataset(), {}), 'two classes', "it holds 3: 'a'; 'b'; 'c'")
  user_error(lambda: tasks.encode_labels(table, _dataset(positive='x'), {}), "positive='x'")
  user_error(lambda: config_with('test', {'dataset.task': 'ranking'}), "dataset.task='ranking'")
  user_error(lambda: config_with('test', {'train.loss': 'bce'}), 'dataset.task=classification')


def test_roc_auc_counts_ties_half_and_log_loss_is_the_mean_cross_entropy():
  scores = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9]))
  assert scores['roc_auc'] == pytest.approx((1 + 1 + 0.5 + 1) / 4)
  assert scores['accuracy'] == 0.75 and scores['log_loss'] == pytest.approx(-np.mean(np.log([0.9, 0.5, 0.5, 0.9])))


@pytest.fixture(scope='module')
def classifier(pretrained, tmp_path_factory):
  """The tiny regression source fine-tuned into a metal / non-metal classifier (2 members)."""
  folder = tmp_path_factory.mktemp('classify')
  fields = {
    'dataset.name': str(write_metals(folder / 'metals.csv', 300, positive='metal', negative='insulator')),
    'dataset.target': 'metal',
    'dataset.task': 'classification',
    'transfer.pretrained': str(pretrained),
    'train.ensemble': 2,
    'train.max_epochs': 6,
    'train.patience': 6,
  }
  metrics = run.train_and_evaluate(config_with('test', fields), folder / 'run')
  return folder / 'run', metrics


def test_a_regression_source_fine_tunes_into_a_classifier_with_a_fresh_head(classifier, pretrained):
  path, metrics = classifier
  assert set(metrics['test']) >= {'roc_auc', 'accuracy', 'log_loss', 'n'} and 'mae' not in metrics['test']
  assert metrics['test']['roc_auc'] > 0.75 and metrics['guard']['learned']  # metals vs gapped compounds
  assert json.loads((path / 'config.json').read_text())['train']['loss'] == 'bce'
  meta = json.loads((path / 'model' / 'meta.json').read_text())
  assert meta['target']['task'] == 'classification' and meta['target']['classes'] == ['insulator', 'metal']
  assert 'calibration' not in meta  # the spread of probabilities is not calibrated as a regression std
  history = [row for row in csv.DictReader(open(path / 'history.csv'))]
  assert float(history[0]['val_mae_0']) < 1.0  # validation log-loss, not the MAE of logits


def test_a_classifier_is_scored_against_its_own_class_names(classifier, tmp_path, caplog):
  # predict --target reads 'metal' / 'insulator' as the classifier's training did (metal = 1), not as numbers.
  path, _ = classifier
  labelled = path.parent / 'metals.csv'
  with caplog.at_level('INFO'):
    result = predict.predict_file([str(path)], input_csv=str(labelled), target='metal', output=str(tmp_path / 'p.csv'))
  labels = np.array([row['metal'] == 'metal' for row in csv.DictReader(open(labelled))], float)
  expected = tasks.describe(classification_metrics(labels, result.mean))
  assert any(record.getMessage().endswith(f'against metal, 2 member(s): {expected}') for record in caplog.records)
  unknown = tmp_path / 'unknown.csv'
  unknown.write_text('formula,metal\nNaCl,insulator\nCu,semiconductor\n')
  user_error(
    lambda: predict.predict_file([str(path)], input_csv=str(unknown), target='metal', output=str(tmp_path / 'q.csv')),
    f"{unknown}: 1 invalid --target=metal row(s): row 3 ('semiconductor'): not one of the classes 'insulator', 'metal'",
  )
  assert not (tmp_path / 'q.csv').exists()


def test_a_classifier_starts_from_the_source_with_its_output_layer_drawn_afresh(pretrained, tmp_path):
  fields = {
    'dataset.name': str(write_metals(tmp_path / 'm.csv', 50)),
    'dataset.target': 'metal',
    'dataset.task': 'classification',
    'transfer.pretrained': str(pretrained),
  }
  config = config_with('test', fields)
  prepared = run.prepare(config, tmp_path / 'unused')
  start = jax.tree.map(lambda a: np.asarray(a[0]), prepared.start(80).states.params)['params']
  _, source, source_meta = checkpoint.load_trained(pretrained)
  source = jax.tree.map(lambda a: np.asarray(a[0]), source)['params']
  head = prepared.model_config.output_group()
  assert not np.allclose(start[head]['kernel'], source[head]['kernel'])  # redrawn: regression -> classification
  body = [name for name in source if name != head]
  assert body and all(np.array_equal(start[name]['kernel'], source[name]['kernel']) for name in body)


def test_predict_prints_probabilities_of_the_positive_class(classifier, capsys):
  path, _ = classifier
  predict.predict_file([str(path)], inputs=['Cu3Au', 'MgO', 'Xx'])
  header, *rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert header[1:3] == ['P(metal=metal)', 'P(metal=metal) std']
  assert all(0 < float(row[1]) < 1 for row in rows[:2]) and rows[2][1] == ''
  user_error(lambda: predict.predict_file([str(path)], inputs=['MgO'], coverage=0.9), 'no calibration')


def test_the_study_refuses_a_classification_source():
  fields = {'source.dataset.task': 'classification'}
  user_error(lambda: config_with('test:study', fields), '--config.source.dataset.task', 'from a regression source')
  jax.clear_caches()


def test_a_classification_study_compares_scratch_and_fine_tuning_by_roc_auc(pretrained, tmp_path):
  """Metal vs non-metal through the CSV path from the tiny formation-enthalpy source: every row scores
  ROC-AUC, accuracy and log-loss, each network stops on its validation log-loss, the report leads with ROC-AUC."""
  from elemnet_jax import study

  fields = {
    'target.dataset.name': str(write_metals(tmp_path / 'metals.csv', 150, seed=1)),
    'target.dataset.target': 'metal',
    'target.dataset.task': 'classification',
    'study.pretrained': str(pretrained),
    'study.methods': ('scratch', 'finetune', 'head'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (0.5, 1.0),
    'study.learning_rates': (1e-4, 1e-3),
  }
  study.run_study(config_with('test:study', fields), tmp_path / 'study')
  rows = json.loads((tmp_path / 'study' / 'results.json').read_text())['runs']
  assert {row['method'] for row in rows} == {'scratch', 'finetune', 'head'} and len(rows) == 3 * 2 * 3
  for row in rows:
    assert {'roc_auc', 'accuracy', 'log_loss'} <= set(row) and 'mae' not in row
    assert 0 <= row['roc_auc'] <= 1 and 0 < row['accuracy'] < 1 and row['n'] == 30  # 10% of 300 compositions
    assert 0 < row['val_log_loss'] < 2  # a log-loss (early stopping's), not a MAE of logits
    assert row['ensemble'] == (row['seed'] is None) and ('within_1std' in row) is False
    assert 'val_log_loss_by_rate' in row or row['ensemble']
  report = (tmp_path / 'study' / 'results.md').read_text()
  assert 'test ROC-AUC' in report and 'Test log-loss' in report and 'lowest mean validation log-loss' in report
  assert 'MAE' not in report.splitlines()[0] and 'Calibration of' not in report  # the source's MAE is quoted
  wrong = {**fields, 'study.methods': ('scratch', 'featurizer')}
  user_error(lambda: study.run_study(config_with('test:study', wrong), tmp_path / 'no'), 'featurizer cannot classify')
