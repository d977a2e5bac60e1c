import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import config_with, user_error
from flax import traverse_util

from elemnet_jax import data, inputs, run, study, transfer
from elemnet_jax.errors import UserError
from elemnet_jax.models.elemnet import ElemNet, ElemNetConfig
from elemnet_jax.study import plan as study_plan
from elemnet_jax.training import optimizer as optimizers
from elemnet_jax.training import train

CONFIG = ElemNetConfig(widths=(32, 32, 16, 8), dropout_after=(1, 3), dropout_rates=(0.5, 0.5))


def _params(config=CONFIG, width=10):
  return ElemNet(config).init(jax.random.PRNGKey(0), jnp.zeros((1, width)))


@pytest.mark.parametrize(
  'depth, frozen, head',
  [
    (0, [], 'dense_4'),
    (2, ['dense_0', 'dense_1'], 'dense_4'),
    (4, ['dense_0', 'dense_1', 'dense_2', 'dense_3'], 'dense_4'),
  ],
)
def test_layer_rules_label_every_leaf_once(depth, frozen, head):
  labels = transfer.label_params(_params(), transfer.layer_rules(depth, CONFIG))
  flat = traverse_util.flatten_dict(labels)
  assert len(flat) == 10
  for (_, layer, _), label in flat.items():
    expected = 'frozen' if layer in frozen else 'head' if layer == head else 'body'
    assert label == expected


def test_regex_rules_and_errors():
  labels = transfer.label_params(_params(), transfer.freeze_rules(0, ('kernel$',), CONFIG))
  flat = traverse_util.flatten_dict(labels)
  assert all(label == 'frozen' for path, label in flat.items() if path[-1] == 'kernel')
  assert {label for path, label in flat.items() if path[-1] == 'bias'} == {'body', 'head'}
  with pytest.raises(UserError, match='matches no freeze rule'):
    transfer.label_params(_params(), [('dense_0', 'frozen')])
  with pytest.raises(UserError, match='unknown label'):
    transfer.label_params(_params(), [('.*', 'ice')])
  with pytest.raises(UserError, match='not a valid regular expression'):
    transfer.label_params(_params(), [('(', 'frozen')])
  with pytest.raises(UserError, match=r"freeze rule '\^params/dens_0/' matches no parameter"):  # a typo
    transfer.label_params(_params(), transfer.freeze_rules(0, ('^params/dens_0/',), CONFIG))


@pytest.mark.parametrize('depth', [-1, 5, 17])
def test_freeze_depth_outside_the_model(depth):
  with pytest.raises(
    UserError, match=r'freeze_layers=.* is outside the model: its elemnet network has 4 freezable layers'
  ):
    transfer.layer_rules(depth, CONFIG)


def test_fine_tuning_updates_only_unfrozen_leaves_and_keeps_no_frozen_moments():
  depth = 2
  params = _params()
  freezing = transfer.Freezing.from_rules(transfer.layer_rules(depth, CONFIG), params, CONFIG.groups())
  labels = freezing.labels
  model = ElemNet(CONFIG, frozen_layers=freezing.positions)
  assert model.frozen_layers == (1, 2)
  optimizer = optimizers.make_optimizer(1e-2, labels=labels, body_lr_scale=0.5)
  state = train.init_state(model, optimizer, 10, seed=0, params=params, moving_average=True)
  step = jax.jit(train.make_train_step(model, optimizer, 'mae', freezing.paths, ema_decay=0.8))
  rng = np.random.default_rng(0)
  for _ in range(5):
    x = jnp.asarray(rng.random((16, 10), np.float32))
    state, metrics = step(state, x, jnp.asarray(rng.random(16, np.float32)), jnp.ones(16, bool))
    assert np.isfinite(metrics['loss'])
  before = traverse_util.flatten_dict(params)
  for after in map(traverse_util.flatten_dict, (state.params, state.average)):  # the average is what is saved
    for path, leaf in before.items():
      if path[1] in ('dense_0', 'dense_1'):
        np.testing.assert_array_equal(after[path], leaf)  # bit-identical
      else:
        assert not np.array_equal(after[path], leaf), path
  # multi_transform keeps Adam moments only for the trainable leaves.
  for label in ('body', 'head'):
    adam = state.opt_state.inner_states[label].inner_state[0]
    for path, value in traverse_util.flatten_dict(adam.mu).items():
      has_moment = not isinstance(value, optax.MaskedNode)
      assert has_moment == (traverse_util.flatten_dict(labels)[path] == label), path


def test_body_learning_rate_scale_slows_the_body():
  params = _params()
  labels = transfer.label_params(params, transfer.layer_rules(0, CONFIG))
  grads = jax.tree.map(jnp.ones_like, params)
  optimizer = optimizers.make_optimizer(1e-2, labels=labels, body_lr_scale=0.1)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  flat = traverse_util.flatten_dict(updates)
  head = float(np.abs(flat[('params', 'dense_4', 'bias')]).max())
  body = float(np.abs(flat[('params', 'dense_1', 'bias')]).max())
  assert body == pytest.approx(0.1 * head, rel=1e-4)


@pytest.mark.parametrize('warmup_steps', [0, 3])
def test_cosine_schedule_warms_up_only_when_asked(warmup_steps):
  params = {'w': jnp.zeros(3)}
  optimizer = optimizers.make_optimizer(0.1, schedule='cosine', warmup_steps=warmup_steps, total_steps=10)
  updates, _ = optimizer.update({'w': jnp.ones(3)}, optimizer.init(params), params)
  first = float(-updates['w'][0])  # Adam's first step is the rate times 1 (up to its epsilon)
  assert first == (pytest.approx(0.1, rel=1e-4) if warmup_steps == 0 else 0.0)


@pytest.mark.parametrize('decay_toward', ['zero', 'start'])
def test_weight_decay_pulls_toward_zero_or_toward_the_pretrained_weights(decay_toward):
  # With zero gradients Adam's step is zero, so the update is the decoupled decay alone:
  # -lr * wd * params (toward zero) or -lr * wd * (params - pretrained) (L2-SP).
  pretrained = _params()
  moved = jax.tree.map(lambda a: a + 0.5, pretrained)
  labels = transfer.label_params(pretrained, transfer.layer_rules(2, CONFIG))
  optimizer = optimizers.make_optimizer(1e-2, name='adamw', weight_decay=0.3, decay_toward=decay_toward, labels=labels)
  state = optimizer.init(pretrained)
  updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, moved), state, moved)
  flat_updates, flat_moved = traverse_util.flatten_dict(updates), traverse_util.flatten_dict(moved)
  for path, label in traverse_util.flatten_dict(labels).items():
    pull = flat_moved[path] if decay_toward == 'zero' else np.full_like(flat_moved[path], 0.5)
    expected = 0.0 * pull if label == 'frozen' else -1e-2 * 0.3 * pull
    np.testing.assert_allclose(flat_updates[path], expected, rtol=1e-5, atol=1e-8)
  if decay_toward == 'start':  # the starting point is stored for trainable leaves only
    start = state.inner_states['body'].inner_state[1].start
    for path, value in traverse_util.flatten_dict(start).items():
      kept = not isinstance(value, optax.MaskedNode)
      assert kept == (traverse_util.flatten_dict(labels)[path] == 'body'), path


def test_reinit_head_replaces_only_the_output_layer():
  params = _params()
  model = ElemNet(CONFIG)
  fresh = transfer.reinit_head(params, model, 10, seed=3)
  for layer in params['params']:
    same = np.array_equal(fresh['params'][layer]['kernel'], params['params'][layer]['kernel'])
    assert same == (layer != 'dense_4')


def test_incompatible_featurizer_is_refused():
  meta = {'featurizer': {'name': 'composition', 'width': 86}}
  transfer.check_compatible(meta, {'name': 'composition', 'width': 86}, 'src')
  with pytest.raises(UserError, match="reads features from 'composition' .width 86.* 'estate'"):
    transfer.check_compatible(meta, {'name': 'estate', 'width': 190, 'parts': 'both'}, 'src')


def test_refitted_target_statistics_standardise_the_target_whatever_train_target_scaling_says():
  # A source trained on standardised targets, fine-tuned under the default train.target_scaling='none':
  # 'refit' must hand its output layer the target's statistics, not raw units.
  rng = np.random.default_rng(0)
  parts = {}
  for name, n in (('train', 40), ('val', 8), ('test', 8)):
    names = [f'{name}{i}' for i in range(n)]
    parts[name] = data.Examples(names, names, rng.random((n, 86), np.float32), rng.normal(-1.5, 0.8, n))
  meta = {
    'feature_scaling': data.FeatureScaling.fit(parts['train'].x, False, False).to_dict(),
    'target_scaling': {'shift': -0.3, 'scale': 0.2},
  }
  config = config_with('finetune', {'transfer.pretrained': 'source'})
  assert config.train.target_scaling == 'none'
  scaling = inputs.fit_target_scaling(parts['train'].y, config.train.target_scaling, config.transfer, meta)
  assert (scaling.shift, scaling.scale) == (-0.3, 0.2)
  config = config.replace({'transfer.target_scaling': 'refit'})
  scaling = inputs.fit_target_scaling(parts['train'].y, config.train.target_scaling, config.transfer, meta)
  assert scaling.shift == pytest.approx(parts['train'].y.mean()) and scaling.scale == pytest.approx(
    parts['train'].y.std()
  )


def test_each_fine_tuned_member_starts_from_its_own_source_member():
  # A source ensemble of two independently pretrained members; three fine-tuned members start
  # from source members 0, 1, 0 (k mod K), so an ensemble's members differ in their pretraining.
  sources = [ElemNet(CONFIG).init(jax.random.PRNGKey(seed), jnp.zeros((1, 10))) for seed in (7, 8)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *sources)
  members = transfer.source_members(stacked, 3)
  train_config = config_with('finetune', {'transfer.pretrained': 'source'}).train
  states = run.build(CONFIG, train_config, 10, 64, [0, 1, 2], init_params=members).states
  for k, source in enumerate([0, 1, 0]):
    started = jax.tree.map(lambda a, k=k: a[k], states.params)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, started, sources[source])))
  one = transfer.source_members(jax.tree.map(lambda a: a[:1], stacked), 2)  # one source starts every member
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, one[1], sources[0])))
  with pytest.raises(ValueError, match='2 initial parameter trees for 3 members'):
    run.build(CONFIG, train_config, 10, 64, [0, 1, 2], init_params=members[:2])


def test_head_features_are_scaled_by_the_training_rows_alone():
  # The head network's inputs: statistics from the chosen training rows only (never val or test),
  # and a ReLU unit that is dead on them stays a finite constant instead of dividing by zero.
  rng = np.random.default_rng(0)
  pool = np.column_stack([rng.normal(3.0, 2.0, 50), np.zeros(50)])
  pool[:5] += 100.0  # validation rows, far off: they must not move the statistics
  index = np.arange(6, 50, 2)
  scaled = study_plan.standardise_features({'pool': pool, 'test': np.ones((4, 2))}, index)
  np.testing.assert_allclose(scaled['pool'][index].mean(axis=0), 0.0, atol=1e-6)
  np.testing.assert_allclose(scaled['pool'][index, 0].std(), 1.0, rtol=1e-5)
  assert np.all(np.isfinite(scaled['test'])) and np.all(scaled['pool'][index, 1] == 0.0)
  mean, std = pool[index, 0].mean(), pool[index, 0].std()
  np.testing.assert_allclose(scaled['pool'][:5, 0], (pool[:5, 0] - mean) / std, rtol=1e-5)


@pytest.mark.parametrize('members', [1, 3, 12])
def test_rotated_validation_blocks_are_random_and_member_0_keeps_the_split(members):
  n_train, n_val = 50, 7  # pool: 7 validation rows, then 50 training rows (as the file orders them)
  train_rows, val_rows = study_plan.validation_rotation(n_train, n_val, members, np.random.default_rng(0))
  assert train_rows.shape == (members, n_train) and val_rows.shape == (members, n_val)
  np.testing.assert_array_equal(val_rows[0], np.arange(n_val))  # the fold's own validation rows
  np.testing.assert_array_equal(train_rows[0], np.arange(n_val, n_val + n_train))  # in their order
  for held_out, trained in zip(val_rows, train_rows):
    assert len(set(held_out)) == n_val and not set(held_out) & set(trained)
    assert sorted(set(held_out) | set(trained)) == list(range(n_train + n_val))
  for held_out in val_rows[1:]:  # from the training rows, not one run of a sorted file
    assert held_out.min() >= n_val and np.ptp(held_out) > n_val
  blocks = [set(v) for v in val_rows]
  if (members - 1) * n_val <= n_train:  # 2 x 7 <= 50: disjoint blocks; 11 x 7 wraps around the training rows
    assert all(not a & b for i, a in enumerate(blocks) for b in blocks[i + 1 :])
  else:
    assert set().union(*blocks) == set(range(n_train + n_val))  # every row validates some member


# --- finished runs joined into one source ensemble ---


@pytest.mark.parametrize('joined', [False, True], ids=['one run of 2', 'two runs joined'])
def test_fine_tuned_members_start_from_their_own_source_members(joined, request, tmp_path):
  # A source ensemble of 2: pretrained together in one run, or as two runs (seeds 0 and 1) joined
  # by naming both. At Adam 1e-10 for one epoch the weights stay where they start: on the source's
  # own data, fine-tuned member k scores what source member k scored, and in the study the seeds'
  # ensemble scores what the source ensemble (the direct row) scores.
  if joined:
    runs = [request.getfixturevalue('pretrained'), request.getfixturevalue('pretrained_seed1')]
    sources = ','.join(map(str, runs))
    source = [json.loads((r / 'metrics.json').read_text())['test']['mae'] for r in runs]
  else:
    sources = str(request.getfixturevalue('pretrained_pair'))
    source = [m['mae'] for m in json.loads((Path(sources) / 'metrics.json').read_text())['test_members']]
  still = {'learning_rate': 1e-10, 'max_epochs': 1}
  fields = {'transfer.pretrained': sources, 'dataset.name': 'qmpy_legacy', 'train.ensemble': 2}
  fields.update({f'train.{key}': value for key, value in still.items()})
  tuned = [m['mae'] for m in run.train_and_evaluate(config_with('test', fields), tmp_path / 'ft')['test_members']]
  assert abs(source[0] - source[1]) > 1e-3  # the two source members differ
  assert tuned == pytest.approx(source, abs=1e-5)

  fields = {
    'study.pretrained': sources,
    'study.methods': ('finetune', 'direct'),
    'study.freeze_layers': (0,),
    'study.train_fractions': (1.0,),
    **{f'target.train.{key}': value for key, value in still.items()},
  }
  study.run_study(config_with('test:study', fields), tmp_path / 'study')
  results = json.loads((tmp_path / 'study' / 'results.json').read_text())
  rows = results['runs']
  (direct,) = [r['mae'] for r in rows if r['method'] == 'direct']
  (ensemble,) = [r['mae'] for r in rows if r['method'] == 'finetune' and r['ensemble']]
  members = [r['mae'] for r in rows if r['method'] == 'finetune' and not r['ensemble']]
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
    finetune_config = config_with('test', {'transfer.pretrained': sources})
    user_error(lambda c=finetune_config: run.train_and_evaluate(c, tmp_path / 'w'), *fragments)
    study_config = config_with('test:study', {'study.pretrained': sources})
    user_error(lambda c=study_config: study.run_study(c, tmp_path / 'study'), *fragments)
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'study').exists()


def test_a_run_saved_before_frozen_layers_existed_joins_a_newer_one(pretrained, pretrained_seed1, tmp_path):
  # A model meta without `frozen_layers` froze nothing, as the newer run did.
  older = tmp_path / 'older'
  shutil.copytree(pretrained / 'model', older / 'model')
  shutil.copy(pretrained / 'config.json', older / 'config.json')
  meta = json.loads((older / 'model' / 'meta.json').read_text())
  del meta['frozen_layers']
  (older / 'model' / 'meta.json').write_text(json.dumps(meta))
  assert transfer.read_source_meta([older, pretrained_seed1])['members'] == 2


def test_a_residual_source_fine_tunes_with_its_first_layers_frozen(tmp_path):
  # The freeze rules address the residual blocks as ElemNet's dense layers: every leaf of the frozen
  # blocks (kernel, norm, shortcut) keeps its pretrained value; the rest trains.
  from elemnet_jax.training import checkpoint

  source = tmp_path / 'source'
  run.train_and_evaluate(config_with('test', {'model.name': 'residual', 'train.max_epochs': 2}), source)
  fields = {'transfer.pretrained': str(source), 'transfer.freeze_layers': 2, 'train.max_epochs': 2}
  fields['model.name'] = 'residual'  # the source's network: a fine-tune refuses another
  metrics = run.train_and_evaluate(config_with('test', fields), tmp_path / 'ft')
  assert metrics['frozen_layers'] == [1, 2]
  _, before, _ = checkpoint.load_trained(source)
  _, after, meta = checkpoint.load_trained(tmp_path / 'ft')
  assert meta['model']['name'] == 'residual'
  for block in ('dense_0', 'dense_1', 'dense_2', 'dense_3'):
    same = jax.tree.leaves(jax.tree.map(np.array_equal, before['params'][block], after['params'][block]))
    assert all(same) == (block in ('dense_0', 'dense_1')), block
  rows = study.run_study(
    config_with('test:study', {'study.pretrained': str(source), 'study.methods': ('finetune', 'featurizer')}),
    tmp_path / 'study',
  )
  assert {row['freeze_layers'] for row in rows if row['method'] == 'finetune'} == {0, 2}
