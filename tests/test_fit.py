import dataclasses

import jax
import numpy as np
import pytest

from elemnet_jax import data
from elemnet_jax.configs.schema import FitConfig
from elemnet_jax.data import datasets
from elemnet_jax.errors import UserError
from elemnet_jax.featurizers.composition import CompositionFeaturizer
from elemnet_jax.models.elemnet import ElemNet, ElemNetConfig
from elemnet_jax.study import plan as study_plan
from elemnet_jax.training import checkpoint, timing, train
from elemnet_jax.training.fit import FitOptions, ensemble_schedule, fit
from elemnet_jax.training.optimizer import make_optimizer
from elemnet_jax.training.retrain import fit_epochs

CONFIG = ElemNetConfig(widths=(64, 64, 32), dropout_after=(2,), dropout_rates=(0.1,), use_dropout=True)


@pytest.fixture(scope='module')
def ssub():
  table, spec = datasets.load_table('ssub')
  examples = data.prepare(table, spec, CompositionFeaturizer())
  parts = data.split_examples(examples, data.assign_splits(examples, (0.8, 0.1, 0.1), seed=0))
  return {name: (part.x, part.y) for name, part in parts.items()}


def _fit(
  ssub,
  seeds,
  epochs=4,
  mode='epoch',
  batch_size=50,
  learning_rate=1e-3,
  patience=None,
  ema_decay=0.0,
  optimizer_options=(),
  schedule='auto',
  **kwargs,
):
  model = ElemNet(CONFIG)
  optimizer = make_optimizer(learning_rate, **dict(optimizer_options))
  states = train.stack_members([train.init_state(model, optimizer, 86, seed, None, ema_decay > 0) for seed in seeds])
  options = FitOptions(
    FitConfig(
      batch_size=batch_size,
      max_epochs=epochs,
      patience=patience or epochs,
      mode=mode,
      ema_decay=ema_decay,
      ensemble_schedule=schedule,
    )
  )
  return model, fit(train.Members(model, optimizer, states), ssub['train'], ssub['val'], options, **kwargs)


def test_short_training_lowers_validation_mae(ssub):
  model, (_, best, progress) = _fit(ssub, [0], epochs=6)
  start = np.abs(ssub['val'][1]).mean()  # MAE of predicting 0 (about the untrained network)
  assert progress.best_val[0] < 0.6 * start
  assert progress.history[-1]['val_mae'][0] < progress.history[0]['val_mae'][0]
  predictions = train.predict_in_batches(train.make_predict(model), best, ssub['val'][0])
  assert np.abs(predictions[0] - ssub['val'][1]).mean() == pytest.approx(progress.best_val[0], rel=1e-5)


def test_whole_epoch_scan_equals_the_step_loop(ssub):
  # 1,315 examples at batch 50: the last batch of each epoch is partial and masked, not dropped.
  _, (scan_states, _, scan) = _fit(ssub, [0], epochs=2, mode='epoch')
  _, (step_states, _, step) = _fit(ssub, [0], epochs=2, mode='step')
  assert int(scan_states.step[0]) == int(step_states.step[0]) == 2 * 27
  np.testing.assert_allclose(scan.history[-1]['train_loss'], step.history[-1]['train_loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(scan_states.params), jax.tree.leaves(step_states.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_vmapped_ensemble_members_equal_single_runs(ssub):
  _, (ensemble, _, together) = _fit(ssub, [0, 1, 2], epochs=2, schedule='vmap')  # forced: 'auto' is sequential on CPU
  for k, seed in enumerate([0, 1, 2]):
    _, (single, _, alone) = _fit(ssub, [seed], epochs=2)
    np.testing.assert_allclose(together.history[-1]['val_mae'][k], alone.history[-1]['val_mae'][0], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(ensemble.params), jax.tree.leaves(single.params)):
      np.testing.assert_allclose(a[k], b[0], rtol=1e-3, atol=1e-5)


def test_the_ensemble_schedule_picked_on_cpu_gives_the_members_of_solo_runs(ssub):
  # On CPU `fit` trains an ensemble's members one after another with the single-member program.
  assert ensemble_schedule('auto', 'cpu') == 'sequential' and ensemble_schedule('auto', 'gpu') == 'vmap'
  if jax.default_backend() != 'cpu':
    pytest.skip('the schedule picked on CPU')
  _, (ensemble, _, together) = _fit(ssub, [0, 1, 2], epochs=2, schedule='vmap')  # forced: 'auto' is sequential on CPU
  for k, seed in enumerate([0, 1, 2]):
    _, (single, _, alone) = _fit(ssub, [seed], epochs=2)
    np.testing.assert_allclose(together.history[-1]['val_mae'][k], alone.history[-1]['val_mae'][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(ensemble), jax.tree.leaves(single)):
      np.testing.assert_allclose(a[k], b[0], rtol=1e-6, atol=1e-7)  # bit for bit on CPU
  with pytest.raises(UserError, match="ensemble_schedule='parallel': use one of auto, vmap, sequential"):
    _fit(ssub, [0, 1], epochs=1, schedule='parallel')  # refused with the config, before anything trains


@pytest.mark.parametrize(('mode', 'own_data'), [('epoch', False), ('epoch', True), ('step', False), ('step', True)])
def test_vmapped_and_sequential_schedules_give_the_same_members(ssub, mode, own_data):
  parts = ssub
  if own_data:  # member k trains on rows rotated by k
    parts = {
      name: tuple(np.stack([np.roll(a, 7 * k, axis=0) for k in range(2)]) for a in part) for name, part in ssub.items()
    }
  _, (vmapped, _, together) = _fit(parts, [0, 1], epochs=2, mode=mode, schedule='vmap')
  _, (sequential, _, apart) = _fit(parts, [0, 1], epochs=2, mode=mode, schedule='sequential')
  assert int(vmapped.step[1]) == int(sequential.step[1]) == 2 * 27
  np.testing.assert_allclose(together.history[-1]['val_mae'], apart.history[-1]['val_mae'], rtol=1e-4)
  np.testing.assert_allclose(together.history[-1]['train_loss'], apart.history[-1]['train_loss'], rtol=1e-4)
  for a, b in zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(sequential.params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize('mode', ['epoch', 'step'])
def test_members_with_their_own_data_equal_single_runs_on_that_data(ssub, mode):
  # Rotated validation: member k trains and stops on its own rows; together they must behave as if alone.
  x, y = np.concatenate([ssub['val'][0], ssub['train'][0]]), np.concatenate([ssub['val'][1], ssub['train'][1]])
  train_rows, val_rows = study_plan.validation_rotation(
    len(ssub['train'][1]), len(ssub['val'][1]), 2, np.random.default_rng(0)
  )
  own = {'train': (x[train_rows], y[train_rows]), 'val': (x[val_rows], y[val_rows])}
  _, (ensemble, _, together) = _fit(own, [0, 0], epochs=2, mode=mode)  # one seed: only the data differ
  alone = []
  for k in range(2):
    single = {name: (part[0][k], part[1][k]) for name, part in own.items()}
    _, (state, _, progress) = _fit(single, [0], epochs=2, mode=mode)
    np.testing.assert_allclose(together.history[-1]['val_mae'][k], progress.history[-1]['val_mae'][0], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(ensemble.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a[k], b[0], rtol=1e-3, atol=1e-5)
    alone.append(progress.history[-1]['val_mae'][0])
  assert abs(alone[0] - alone[1]) > 1e-4  # the members did see different data
  one = {name: (part[0][1:], part[1][1:]) for name, part in own.items()}  # a member axis of one
  _, (_, _, progress) = _fit(one, [0], epochs=2, mode=mode)
  assert progress.history[-1]['val_mae'][0] == pytest.approx(alone[1], rel=1e-5)


def test_ensemble_member_stops_improving_when_its_own_patience_ends(ssub):
  # A large learning rate makes validation noisy, so members run out of patience at different epochs.
  kwargs = dict(epochs=25, learning_rate=2e-2, patience=2)
  _, (_, best, together) = _fit(ssub, [0, 1, 2], **kwargs)
  assert len(set(together.best_epoch)) > 1, together.best_epoch  # the members did stop apart
  for k, seed in enumerate([0, 1, 2]):
    _, (_, alone_best, alone) = _fit(ssub, [seed], **kwargs)
    assert together.best_epoch[k] == alone.best_epoch[0]
    assert together.best_val[k] == pytest.approx(alone.best_val[0], rel=1e-4)
    np.testing.assert_allclose(jax.tree.leaves(best)[0][k], jax.tree.leaves(alone_best)[0][0], rtol=1e-3, atol=1e-5)


def test_checkpoint_round_trip_gives_identical_predictions(ssub, tmp_path):
  model, (_, best, _) = _fit(ssub, [0, 1], epochs=1)
  checkpoint.save_model(tmp_path, best, {'model': CONFIG.to_dict(), 'members': 2})
  assert checkpoint.read_meta(tmp_path)['members'] == 2
  restored = checkpoint.load_model(tmp_path, best)
  predict = train.make_predict(model)
  np.testing.assert_array_equal(predict(best, ssub['test'][0]), predict(restored, ssub['test'][0]))
  (tmp_path / 'model' / 'meta.json').write_text('{not json')
  with pytest.raises(UserError, match='corrupted model metadata'):
    checkpoint.read_meta(tmp_path)


def test_dropout_passes_give_an_input_the_same_prediction_wherever_it_sits(ssub):
  # Mean of stochastic passes (the TF1 evaluation): a row's prediction must not depend on its
  # position in the batch, nor on the rows around it; and the passes must differ from no dropout.
  model, (_, best, _) = _fit(ssub, [0], epochs=1)
  x = ssub['test'][0][:20]
  predict = train.make_predict(model, dropout_passes=4)
  alone, shuffled = predict(best, x[:1])[0, 0], predict(best, x[::-1])[0]
  np.testing.assert_allclose(shuffled[-1], alone, rtol=1e-6)
  np.testing.assert_allclose(shuffled[::-1], predict(best, x)[0], rtol=1e-6)
  assert not np.allclose(predict(best, x)[0], train.make_predict(model)(best, x)[0], rtol=1e-3)


L2SP = (('name', 'adamw'), ('weight_decay', 0.5), ('decay_toward', 'start'))


@pytest.mark.parametrize(('ema_decay', 'optimizer_options'), [(0.0, ()), (0.9, ()), (0.0, L2SP)])
def test_resume_from_a_training_checkpoint_matches_an_uninterrupted_run(ssub, tmp_path, ema_decay, optimizer_options):
  # The moving average and L2-SP's starting point live in the state and are checkpointed with it.
  kwargs = dict(ema_decay=ema_decay, optimizer_options=optimizer_options)
  _, (_, full_best, full) = _fit(ssub, [0], epochs=4, **kwargs)
  manager = checkpoint.TrainingCheckpoints(tmp_path / 'checkpoints', every=1)
  _fit(ssub, [0], epochs=2, save=manager.save, **kwargs)  # "interrupted" after epoch 2
  model, optimizer = ElemNet(CONFIG), make_optimizer(1e-3, **dict(optimizer_options))
  fresh = train.stack_members([train.init_state(model, optimizer, 86, 0, None, ema_decay > 0)])
  states, best, progress = manager.restore(fresh, fresh.params)
  assert progress.epoch == 2
  progress = dataclasses.replace(progress, stopped=False)
  options = FitOptions(FitConfig(batch_size=50, max_epochs=4, patience=4, ema_decay=ema_decay))
  members = train.Members(model, optimizer, states)
  _, resumed_best, resumed = fit(members, ssub['train'], ssub['val'], options, resume=(best, progress))

  def untimed(history):  # everything but the seconds each epoch took
    return [{k: v for k, v in entry.items() if k != 'seconds'} for entry in history]

  assert untimed(resumed.history) == untimed(full.history)
  for a, b in zip(jax.tree.leaves(resumed_best), jax.tree.leaves(full_best)):
    np.testing.assert_array_equal(a, b)


def test_checkpoints_are_written_at_most_once_per_interval_and_always_at_the_end(ssub, tmp_path):
  every_epoch = checkpoint.TrainingCheckpoints(tmp_path / 'every', every=1, seconds=0.0)
  _fit(ssub, [0], epochs=3, save=every_epoch.save)
  hourly = checkpoint.TrainingCheckpoints(tmp_path / 'hourly', every=1, seconds=3600.0)
  states, _, progress = _fit(ssub, [0], epochs=3, save=hourly.save)[1]
  assert every_epoch.latest_epoch() == 3 and hourly.latest_epoch() is None  # 3 epochs take less than an hour
  assert hourly.save(states, states.params, progress, force=True) and hourly.latest_epoch() == 3
  hourly.close()
  every_epoch.close()
  assert sorted(p.name for p in (tmp_path / 'every').iterdir()) == ['2', '3']  # the last two kept
  assert sorted(p.name for p in (tmp_path / 'hourly').iterdir()) == ['3']


def test_fits_that_differ_only_in_rate_share_their_compiled_programs(ssub):
  _, (_, fast, _) = _fit(ssub, [0], epochs=1, learning_rate=1e-3)  # compiles the epoch and the validation programs
  before = timing.compile_count()
  _, (_, slow, _) = _fit(ssub, [0], epochs=1, learning_rate=1e-5)  # a new model, optimizer and rate
  assert timing.compile_count() == before
  first = jax.tree.leaves(fast)[0]  # the same start, trained at its own rate
  assert not np.array_equal(first, jax.tree.leaves(slow)[0])


def test_moving_average_trails_the_weights_and_is_what_validation_scores(ssub):
  model, optimizer = ElemNet(CONFIG), make_optimizer(1e-3)
  state = train.init_state(model, optimizer, 86, 0, moving_average=True)
  step = jax.jit(train.make_train_step(model, optimizer, 'mae', ema_decay=0.9))
  x, y = ssub['train'][0][:32], ssub['train'][1][:32]
  expected = state.params
  for _ in range(3):
    state, _ = step(state, x, y, np.ones(32, bool))
    expected = jax.tree.map(lambda a, p: 0.9 * a + 0.1 * p, expected, state.params)
  for a, b in zip(jax.tree.leaves(state.average), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # In `fit` the average does not feed back into training, but validation and the best model use it.
  _, (plain, _, _) = _fit(ssub, [0], epochs=3)
  _, (averaged, best, progress) = _fit(ssub, [0], epochs=3, ema_decay=0.9)
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(averaged.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def val_mae(params):
    predicted = train.predict_in_batches(train.make_predict(model), params, ssub['val'][0])
    return np.abs(predicted[0] - ssub['val'][1]).mean()

  last_epoch = progress.history[-1]['val_mae'][0]
  assert last_epoch == pytest.approx(val_mae(averaged.average), rel=1e-5)
  assert last_epoch != pytest.approx(val_mae(averaged.params), rel=1e-3)
  assert val_mae(best) == pytest.approx(progress.best_val[0], rel=1e-5)


@pytest.mark.parametrize('ema_decay', [0.0, 0.9])
def test_retraining_for_the_chosen_epochs_gives_each_member_its_early_stopped_weights(ssub, ema_decay):
  # The study's retraining runs each member again for the epochs its early stopping chose; on the
  # same rows from the same start it must land on the weights (or moving average) early stopping kept.
  kwargs = dict(epochs=12, learning_rate=2e-2, patience=2, ema_decay=ema_decay)
  model, (_, best, progress) = _fit(ssub, [0, 1, 2], **kwargs)
  assert len(set(progress.best_epoch)) > 1, progress.best_epoch  # members stop at different epochs
  optimizer = make_optimizer(2e-2)
  states = train.stack_members(
    [train.init_state(model, optimizer, 86, seed, None, ema_decay > 0) for seed in [0, 1, 2]]
  )
  options = FitOptions(FitConfig(batch_size=50, ema_decay=ema_decay))
  phases, members = timing.Phases(), train.Members(model, optimizer, states)
  again = fit_epochs(members, ssub['train'], progress.best_epoch, options, phases=phases)
  assert set(phases.seconds) == {'train'} and phases.seconds['train'] > 0  # a study's retraining counts as training
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(best)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # bit for bit on CPU; GPU reductions may differ
  with pytest.raises(ValueError, match='give each a count >= 0'):
    fit_epochs(train.Members(model, optimizer, states), ssub['train'], [3, 3], options)


def test_non_finite_loss_stops_with_epoch_and_step(ssub):
  with pytest.raises(train.TrainingDiverged, match=r'non-finite loss at epoch 1, step \d+'):
    _fit(ssub, [0], epochs=2, learning_rate=1e35)


def test_early_stopping_keeps_the_best_epoch(ssub):
  _, (_, _, progress) = _fit(ssub, [0], epochs=60, learning_rate=3e-2, patience=3)
  history = [h['val_mae'][0] for h in progress.history]
  assert progress.stopped and len(history) < 60
  assert len(history) == progress.best_epoch[0] + 3  # stopped after 3 epochs without improvement
  assert progress.best_val[0] == min(history)
  assert progress.best_epoch[0] == int(np.argmin(history)) + 1
