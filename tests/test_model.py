import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elemnet_jax.models import build_model, config_from_dict, count_params
from elemnet_jax.models.elemnet import ElemNet, ElemNetConfig


@pytest.fixture(scope='module')
def paper():
  model = ElemNet(ElemNetConfig())
  return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 86)))


def test_parameter_count_and_layer_names(paper):
  model, params = paper
  assert count_params(params) == 4_631_361
  widths = [params['params'][f'dense_{i}']['kernel'].shape[1] for i in range(17)]
  assert widths == [1024] * 4 + [512] * 3 + [256] * 3 + [128] * 3 + [64] * 2 + [32] + [1]


def _dropout_outputs(model, params, x, frozen=()):
  model = ElemNet(model.config, frozen_layers=frozen)
  _, state = model.apply(params, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(1)}, capture_intermediates=True)
  found = state['intermediates']
  return {name: np.asarray(found[name]['__call__'][0]) for name in found if name != '__call__'}


def test_dropout_positions_and_rates(paper):
  model, params = paper
  x = jax.random.uniform(jax.random.PRNGKey(2), (512, 86))
  outputs = _dropout_outputs(model, params, x)
  assert sorted(n for n in outputs if n.startswith('Dropout')) == [f'Dropout_{i}' for i in range(4)]
  for i, (position, rate) in enumerate(zip((4, 7, 10, 13), (0.2, 0.1, 0.3, 0.2))):
    hidden = np.maximum(outputs[f'dense_{position - 1}'], 0)  # ReLU of the dense layer's output
    dropped = outputs[f'Dropout_{i}']
    alive = hidden > 0
    zeroed = (dropped == 0) & alive
    assert zeroed.sum() / alive.sum() == pytest.approx(rate, abs=0.02)
    kept = ~zeroed & alive  # survivors are scaled by 1 / (1 - rate): the dropout acts on this layer
    np.testing.assert_allclose(dropped[kept], hidden[kept] / (1 - rate), rtol=1e-5)


def test_dropout_after_frozen_layers_is_off(paper):
  model, params = paper
  x = jnp.ones((4, 86)) / 86
  outputs = _dropout_outputs(model, params, x, frozen=tuple(range(1, 11)))
  assert [n for n in outputs if n.startswith('Dropout')] == ['Dropout_0']  # only after layer 13
  assert outputs['Dropout_0'].shape[-1] == 128


def test_evaluation_is_deterministic_and_dropout_is_configuration(paper):
  model, params = paper
  x = jax.random.uniform(jax.random.PRNGKey(3), (8, 86))
  np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x))
  stochastic = model.apply(params, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(4)})
  assert not np.allclose(stochastic, model.apply(params, x))
  plain = ElemNet(ElemNetConfig(use_dropout=False))
  np.testing.assert_array_equal(
    plain.apply(params, x, dropout=True, rngs={'dropout': jax.random.PRNGKey(4)}), model.apply(params, x)
  )


def test_config_is_validated():
  with pytest.raises(ValueError, match='same length'):
    ElemNetConfig(dropout_after=(1, 2), dropout_rates=(0.1,))
  with pytest.raises(ValueError, match='activation'):
    ElemNetConfig(activation='swish2')
  assert config_from_dict(ElemNetConfig().to_dict()) == ElemNetConfig()


def test_the_residual_network_names_its_blocks_as_elemnet_names_its_layers():
  config = ElemNetConfig(widths=(16, 16, 8), dropout_after=(), dropout_rates=(), use_dropout=False, name='residual')
  model = build_model(config)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))
  assert sorted(params['params']) == ['dense_0', 'dense_1', 'dense_2', 'dense_3']
  assert set(params['params']['dense_0']) == {'linear', 'norm', 'shortcut'}  # 10 -> 16: projected
  assert set(params['params']['dense_1']) == {'linear', 'norm'}  # 16 -> 16: identity shortcut
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 10))
  assert model.apply(params, x).shape == (4,) and model.apply(params, x, hidden_layer=3).shape == (4, 8)
  with pytest.raises(ValueError, match="model name 'resnet' is not one of"):
    ElemNetConfig(name='resnet')
