"""Dead ReLU units per layer, and a short probe of a recipe against the median baseline."""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import config_with, require_dataset

from elemnet_jax import diagnose
from elemnet_jax.models import build_model
from elemnet_jax.models.elemnet import ElemNetConfig


def test_dead_units_counts_units_off_on_every_row():
  model = build_model(ElemNetConfig(widths=(8, 4), dropout_after=(), dropout_rates=(), use_dropout=False))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 86)))
  x = np.abs(np.random.default_rng(0).normal(size=(64, 86))).astype(np.float32)
  bias = params['params']['dense_0']['bias']
  params['params']['dense_0']['bias'] = bias.at[:2].set(-1e6)  # two units of layer 1 never fire
  stacked = jax.tree.map(lambda a: a[None], params)
  shares = diagnose.dead_units(diagnose.layer_outputs(model, 2), stacked, x)
  assert len(shares) == 2 and shares[0] >= 2 / 8
  params['params']['dense_1']['bias'] = jnp.full(4, -1e6)  # all of layer 2
  assert diagnose.dead_units(diagnose.layer_outputs(model, 2), jax.tree.map(lambda a: a[None], params), x)[1] == 1.0


def test_a_probe_records_dead_units_and_the_median_baseline():
  require_dataset('qmpy_legacy')
  config = config_with('test', {'dataset.name': 'qmpy_legacy', 'train.batch_size': 64, 'train.learning_rate': 1.0})
  parts = diagnose.subsample(config, 640, 200)
  assert (len(parts['train']), len(parts['val'])) == (640, 200)
  probe = diagnose.probe(config, 'rate 1', parts, epochs=2, marks=2)
  assert probe.steps == [0, 5, 10, 20] and len(probe.dead) == 4 and len(probe.dead[0]) == 3
  assert probe.prediction_std[-1] < 0.01 * probe.target_std  # the collapse the guard stops
  assert abs(probe.val_mae[-1] - probe.baseline_mae) < 0.1 * probe.baseline_mae
  assert max(probe.dead[-1]) == 1.0  # a layer dead on every row: nothing passes
  table = diagnose.summary_rows([probe])
  assert table[2].startswith('| rate 1 |') and 'layer' in table[2]
