"""Every registered model family goes through the same machinery: train, resume, fine-tune with frozen groups,
predict, fingerprint and the transfer study."""

import shutil

import jax
import numpy as np
import pytest
from conftest import config_with, require_dataset

from elemnet_jax import models, predict, run, study
from elemnet_jax.training import checkpoint

FAMILIES = sorted(models.FAMILIES)


def _same(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope='module', params=FAMILIES)
def source(request, tmp_path_factory):
  """(family, a tiny model of it pretrained on qmpy_legacy for 2 epochs, its metrics)."""
  require_dataset('qmpy_legacy')
  family, path = request.param, tmp_path_factory.mktemp(request.param) / 'source'
  fields = {'dataset.name': 'qmpy_legacy', 'train.batch_size': 256, 'train.max_epochs': 2, 'train.patience': 2}
  return family, path, run.train_and_evaluate(config_with(f'test:train,{family}', fields), path)


def test_a_run_resumes_from_its_last_checkpoint_to_the_same_result(source, tmp_path):
  family, path, metrics = source
  resumed = tmp_path / 'resumed'
  shutil.copytree(path, resumed)
  for name in ('metrics.json', 'predictions_test.csv'):  # as if killed after epoch 1's checkpoint
    (resumed / name).unlink()
  shutil.rmtree(resumed / 'checkpoints' / '2')
  fields = {'dataset.name': 'qmpy_legacy', 'train.batch_size': 256, 'train.max_epochs': 2, 'train.patience': 2}
  again = run.train_and_evaluate(config_with(f'test:train,{family}', fields), resumed)
  assert 'resuming' in (resumed / 'log.txt').read_text()
  assert again['test'] == metrics['test'] and again['best_epoch'] == metrics['best_epoch']


def test_fine_tuning_keeps_frozen_groups_bit_identical_then_predicts_and_fingerprints(source, tmp_path):
  family, path, _ = source
  fields = {'transfer.pretrained': str(path), 'transfer.freeze_layers': 1, 'train.max_epochs': 2}
  metrics = run.train_and_evaluate(config_with(f'test:train,{family}', fields), tmp_path / 'ft')
  _, before, _ = checkpoint.load_trained(path)
  model, after, meta = checkpoint.load_trained(tmp_path / 'ft')
  assert meta['model']['name'] == family and metrics['frozen_layers'] == [1]
  first, head = model.config.groups()[0], model.config.output_group()
  assert _same(before['params'][first], after['params'][first])
  assert not _same(before['params'][head], after['params'][head])
  result = predict.predict_inputs([str(tmp_path / 'ft')], ['Fe2O3', 'NaCl', 'Xx2'])
  assert np.isfinite(result.mean[:2]).all() and result.errors[2] and not result.errors[0]
  features, errors = predict.fingerprint([str(tmp_path / 'ft')], ['Fe2O3', 'NaCl'])
  assert features.shape == (2, model.config.hidden_sizes()[-1]) and np.isfinite(features).all()


def test_the_study_runs_every_method_on_the_family(source, tmp_path):
  family, path, _ = source
  require_dataset('ssub')
  fields = {
    'study.pretrained': str(path),
    'study.methods': ('scratch', 'finetune', 'featurizer', 'direct'),
    'study.train_fractions': (1.0,),
    'study.seeds': 1,
    'study.freeze_layers': (0, 1),
    'target.train.max_epochs': 2,
    'study.scratch_train.max_epochs': 2,
  }
  rows = study.run_study(config_with(f'test:study,{family}', fields), tmp_path / 'study')
  methods = {(row['method'], row.get('freeze_layers')) for row in rows}
  assert {'scratch', 'finetune', 'featurizer', 'direct'} <= {method for method, _ in methods}
  assert all(np.isfinite(row['mae']) for row in rows)


def test_the_transformer_starts_from_published_element_vectors_and_keeps_them(tmp_path):
  from elemnet_jax.data import element_vectors
  from elemnet_jax.errors import UserError
  from elemnet_jax.featurizers.composition import ELEMENTS

  require_dataset('ssub')
  try:
    _, mat2vec = element_vectors.load('mat2vec', elements=ELEMENTS)
  except UserError as error:
    pytest.skip(f'mat2vec cannot be obtained here: {error}')
  fields = {'model.element_vectors': 'mat2vec', 'model.vector_width': 200, 'train.max_epochs': 1}
  run.train_and_evaluate(config_with('test:train,transformer', fields), tmp_path / 'run')
  _, params, _ = checkpoint.load_trained(tmp_path / 'run')
  np.testing.assert_array_equal(params['params']['embed']['element_vectors'][0], mat2vec)  # features, not weights
  wrong = {**fields, 'model.vector_width': 100}
  with pytest.raises(UserError, match='vector_width=200'):
    run.train_and_evaluate(config_with('test:train,transformer', wrong), tmp_path / 'wrong')


@pytest.mark.parametrize('family', FAMILIES)
def test_the_compiled_init_draws_the_parameters_the_eager_init_draws(family):
  # A fresh model's parameters come from one compiled init program: bit for bit what model.init gives
  # run operation by operation, so runs from before it started from the same numbers.
  from elemnet_jax.training.train import random_params

  config = config_with(f'test:train,{family}')
  model = models.build_model(config.model)
  key = jax.random.PRNGKey(7)
  eager = model.init(key, np.zeros((1, 86), np.float32))
  assert _same(random_params(model, key, 86), eager)
