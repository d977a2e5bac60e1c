"""Output heads (`model.head`): point as it always was, mean-variance with its own calibrated std, and a hurdle
for zero-inflated targets; every family takes each, and fine-tuning between heads redraws the output layer."""

import csv
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import config_dict_with, config_with, require_dataset, user_error

from elemnet_jax import configs, migrations, models, predict, run
from elemnet_jax.configs import test as test_configs
from elemnet_jax.data import datasets
from elemnet_jax.models import heads
from elemnet_jax.training import checkpoint


@pytest.mark.parametrize('family', sorted(models.FAMILIES))
@pytest.mark.parametrize('head', heads.HEADS)
def test_every_family_gives_each_head_its_outputs_and_a_finite_loss(family, head):
  config = models.config_from_dict({**test_configs.TINY[family], 'name': family, 'head': head})
  model = models.build_model(config)
  x = jax.random.uniform(jax.random.PRNGKey(0), (5, 86))
  params = model.init(jax.random.PRNGKey(1), x)
  output = model.apply(params, x)
  assert output.shape == ((5,) if head == 'point' else (5, 2))
  assert params['params'][config.output_group()]['kernel'].shape[-1] == heads.WIDTHS[head]
  if head != 'point':
    y = jnp.array([0.0, 0.0, 1.5, 2.0, 0.3])
    loss = heads.loss(head, lambda p, t: jnp.abs(p - t), output, y)
    assert loss.shape == (5,) and np.isfinite(np.asarray(loss)).all()


def test_the_mixture_of_two_gaussians_has_the_mean_of_means_and_the_law_of_total_variance():
  mean, std = heads.mixture(np.array([[0.0], [2.0]]), np.array([[1.0], [1.0]]))
  assert mean[0] == pytest.approx(1.0) and std[0] == pytest.approx(np.sqrt(2.0))  # 1 + the means' variance 1


def test_the_point_head_gives_the_numbers_it_gave_before_heads_existed(tmp_path):
  metrics = run.train_and_evaluate(config_with('test', {'train.ensemble': 2}), tmp_path / 'point')
  assert 'head' not in metrics
  # test MAE and RMSE of this run before `model.head` existed (same data, seeds and program)
  assert metrics['test']['mae'] == pytest.approx(0.8134295860668872, rel=1e-6)
  assert metrics['test']['rmse'] == pytest.approx(0.9627700331889958, rel=1e-6)


@pytest.fixture(scope='module')
def mean_variance(tmp_path_factory):
  path = tmp_path_factory.mktemp('heads') / 'mv'
  fields = {'model.head': 'mean_variance', 'train.max_epochs': 15, 'train.patience': 15}
  return path, run.train_and_evaluate(config_with('test', fields), path)


def test_the_mean_variance_head_lowers_its_nll_and_its_std_follows_its_error(mean_variance):
  path, metrics = mean_variance
  history = list(csv.DictReader(open(path / 'history.csv')))
  losses = [float(row['train_loss_0']) for row in history]
  assert losses[-1] < losses[0] - 0.5  # the Gaussian NLL per row, in the model's units
  assert metrics['head']['name'] == 'mean_variance'
  assert metrics['head']['test_std_error_spearman'] > 0.15  # larger std where the error is larger
  assert metrics['test']['mae'] < metrics['test']['baseline_mae']
  # one member calibrates its own std on validation: intervals as the ensemble's spread has them
  assert metrics['members'] == 1 and 0.5 < metrics['calibration']['test']['conformal_90']['coverage'] <= 1
  meta = json.loads((path / 'model' / 'meta.json').read_text())
  assert meta['model']['head'] == 'mean_variance' and meta['calibration']['n'] == metrics['split_sizes']['val']


def test_predict_prints_a_mean_variance_models_own_std_and_its_interval(mean_variance, capsys):
  path, _ = mean_variance
  predict.predict_file([str(path)], inputs=['Fe2O3', 'NaCl', 'Xx'], coverage=0.9)
  header, *rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert header[1:4] == [
    'formation enthalpy (eV/atom)',
    'formation enthalpy std (eV/atom)',
    'formation enthalpy calibrated std (eV/atom)',
  ]
  mean, std, calibrated, lower, upper = (float(v) for v in rows[0][1:6])
  assert std > 0 and calibrated > 0 and lower < mean < upper
  assert rows[1][2] != rows[0][2]  # a std per input, not one for all
  assert rows[2][1] == '' and rows[2][-2]


@pytest.fixture(scope='module')
def band_gaps(tmp_path_factory):
  """A CSV of 10,000 OQMD band gaps (93% exactly 0 eV) from the registered dataset's training rows."""
  require_dataset('oqmd_bandgap')
  table, _ = datasets.load_table('oqmd_bandgap')
  train = [i for i, split in enumerate(table.split) if split == 'train'][:10000]
  path = tmp_path_factory.mktemp('heads') / 'gaps.csv'
  with open(path, 'w', newline='') as stream:
    writer = csv.writer(stream)
    writer.writerow(['formula', 'band_gap'])
    writer.writerows((table.inputs[i], table.targets[i]) for i in train)
  return path


def gap_fields(path, **more) -> dict:
  fields = {'dataset.name': str(path), 'dataset.target': 'band_gap', 'dataset.unit': 'eV', 'train.max_epochs': 5}
  return {**fields, 'train.patience': 5, **more}


def test_the_hurdle_head_gives_zero_rows_a_high_zero_probability_and_beats_the_median(band_gaps, tmp_path):
  metrics = run.train_and_evaluate(config_with('test', gap_fields(band_gaps, **{'model.head': 'hurdle'})), tmp_path)
  head = metrics['head']
  assert head['name'] == 'hurdle' and head['rule'] in heads.RULES
  assert head['test_zero_share'] > 0.85
  assert head['test_p_zero_on_zero_rows'] > 0.85
  assert head['test_p_zero_on_zero_rows'] > head['test_p_zero_on_nonzero_rows'] + 0.2
  assert metrics['val']['mae'] < 0.95 * metrics['val']['baseline_mae'] and metrics['guard']['learned']
  meta = json.loads((tmp_path / 'model' / 'meta.json').read_text())
  assert meta['hurdle_rule'] == head['rule'] and meta['target_scaling']['shift'] == 0.0
  result = predict.predict_inputs([str(tmp_path)], ['Cu', 'MgO'])
  assert np.all(result.mean >= 0)


@pytest.mark.parametrize('source_head, target_head', [('point', 'mean_variance'), ('mean_variance', 'point')])
def test_fine_tuning_into_another_head_redraws_the_output_layer_and_keeps_the_body(
  source_head, target_head, pretrained, mean_variance, tmp_path
):
  source = pretrained if source_head == 'point' else mean_variance[0]
  config = config_with('test', {'transfer.pretrained': str(source), 'transfer.head': target_head})
  prepared = run.prepare(config, tmp_path / 'unused')
  assert prepared.model_config.head == target_head and prepared.config.model.head == target_head
  start = jax.tree.map(lambda a: np.asarray(a[0]), prepared.start(80).states.params)['params']
  _, params, _ = checkpoint.load_trained(source)
  params = jax.tree.map(lambda a: np.asarray(a[0]), params)['params']
  output = prepared.model_config.output_group()
  assert start[output]['kernel'].shape[-1] == heads.WIDTHS[target_head]
  assert params[output]['kernel'].shape[-1] == heads.WIDTHS[source_head]
  body = [name for name in params if name != output]
  assert body and all(np.array_equal(start[name]['kernel'], params[name]['kernel']) for name in body)


def test_a_fine_tune_that_names_no_head_keeps_its_sources(mean_variance, tmp_path):
  config = config_dict_with('test', {'transfer.pretrained': str(mean_variance[0])})
  del config['model']  # as the finetune config: the network is the source's
  prepared = run.prepare(configs.resolve(config), tmp_path / 'unused')
  assert prepared.model_config.head == 'mean_variance' and prepared.train.loss == 'nll'
  # a model section's head is asked for as transfer.head is; a contradicting loss is one line
  fields = {'transfer.pretrained': str(mean_variance[0]), 'model.head': 'point'}
  assert run.prepare(config_with('test', fields), tmp_path / 'unused').train.loss == 'mae'
  fields = {'transfer.pretrained': str(mean_variance[0]), 'transfer.head': 'point', 'train.loss': 'nll'}
  user_error(lambda: run.prepare(config_with('test', fields), tmp_path / 'unused'), 'train.loss=nll', 'mean_variance')


def test_an_old_config_reads_as_the_point_head_and_transfer_head_applies_only_when_fine_tuning():
  recorded = config_with('test').to_dict()
  del recorded['model']['head'], recorded['transfer']['head']
  assert configs.resolve(migrations.migrate(recorded)) == config_with('test')
  user_error(lambda: config_with('test', {'transfer.head': 'hurdle'}), '--config.transfer.head', 'fine-tuning')
  user_error(lambda: config_with('test', {'transfer.pretrained': 'x', 'transfer.head': 'q'}), 'transfer.head')


def test_a_loss_that_contradicts_the_head_is_one_line(tmp_path):
  def prepare(**fields):  # the config's check refuses a contradicting loss before any data is read
    return lambda: run.prepare(config_with('test', fields), tmp_path / 'unused')

  user_error(prepare(**{'model.head': 'mean_variance', 'train.loss': 'huber'}), 'contradicts', 'nll')
  user_error(prepare(**{'model.head': 'hurdle', 'train.loss': 'nll'}), 'contradicts', 'mae, huber or mse')
  user_error(prepare(**{'train.loss': 'nll'}), 'mean_variance')
  user_error(prepare(**{'model.head': 'quantile'}), 'point, mean_variance, hurdle')
  user_error(prepare(**{'model.head': 'hurdle'}), 'zero or positive', 'negative')  # formation enthalpies
