"""Data-parallel training on 4 (virtual CPU) devices matches the single-device run."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
  import dataclasses
  import json
  import jax
  import numpy as np
  from elemnet_jax import data
  from elemnet_jax.data import datasets
  from elemnet_jax.training import train
  from elemnet_jax.configs.schema import FitConfig
  from elemnet_jax.training.fit import FitOptions, epoch_runner, fit
  from elemnet_jax.training.optimizer import make_optimizer
  from elemnet_jax.featurizers.composition import CompositionFeaturizer
  from elemnet_jax.models.elemnet import ElemNet, ElemNetConfig

  assert jax.device_count() == 4, jax.devices()
  table, spec = datasets.load_table('ssub')
  examples = data.prepare(table, spec, CompositionFeaturizer())
  parts = data.split_examples(examples, data.assign_splits(examples, (0.8, 0.1, 0.1), seed=0))
  model = ElemNet(ElemNetConfig(widths=(64, 64, 32), use_dropout=False, dropout_after=(), dropout_rates=()))
  optimizer = make_optimizer(1e-3)
  settings = FitConfig(batch_size=64, max_epochs=3, patience=3)
  result = {}
  for name, mesh, members, mode in (('single', None, 1, 'epoch'), ('sharded', train.data_mesh(4), 1, 'epoch'),
                                    ('sharded_ensemble', train.data_mesh(4), 2, 'epoch'),
                                    ('sharded_step', train.data_mesh(4), 1, 'step')):
    states = train.stack_members([train.init_state(model, optimizer, 86, s) for s in range(members)])
    states, _, progress = fit(train.Members(model, optimizer, states), (parts['train'].x, parts['train'].y),
                              (parts['val'].x, parts['val'].y),
                              FitOptions(dataclasses.replace(settings, mode=mode)), mesh=mesh)
    shardings = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(states.params)} if mesh else set()
    result[name] = {'history': progress.history, 'devices': len(jax.tree.leaves(states.params)[0].devices()),
                    'specs': sorted(shardings)}
  # Each device computes the gradient of its quarter of the batch: the compiled epoch, and the
  # per-step loop's compiled step, sum them.
  for name, mesh in (('single', None), ('sharded', train.data_mesh(4))):
    states = train.stack_members([train.init_state(model, optimizer, 86, 0)])
    run_epoch, states, x, y = epoch_runner(train.Members(model, optimizer, states),
                                           (parts['train'].x, parts['train'].y), FitOptions(settings), mesh=mesh)
    result[name]['all_reduce'] = 'all-reduce' in run_epoch.lower(states, x, y).compile().as_text()
    step = jax.jit(train.make_indexed_step(train.make_train_step(model, optimizer), mesh))
    state = jax.tree.map(lambda a: a[0], states)
    _, index, mask = train.epoch_order(state.rng, x.shape[0], settings.batch_size)
    compiled = step.lower(state, x, y, index, mask, np.int32(0)).compile()
    result[name]['step_all_reduce'] = 'all-reduce' in compiled.as_text()
  print(json.dumps(result))
""")


def test_data_parallel_matches_single_device():
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'JAX_PLATFORMS': 'cpu'}
  done = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  single, sharded = result['single'], result['sharded']
  assert sharded['devices'] == 4 and sharded['specs'] in (['P()'], ['PartitionSpec()'])  # state replicated
  for a, b in zip(single['history'], sharded['history']):
    assert abs(a['train_loss'][0] - b['train_loss'][0]) <= 1e-4 * abs(a['train_loss'][0])
    assert abs(a['val_mae'][0] - b['val_mae'][0]) <= 1e-4 * abs(a['val_mae'][0])
  assert sharded['all_reduce'] and not single['all_reduce']  # the batch, not only the state, is on 4 devices
  assert sharded['step_all_reduce'] and not single['step_all_reduce']
  # The first member of a sharded, vmapped ensemble is the same seed-0 run, and so is the sharded per-step loop.
  for other in ('sharded_ensemble', 'sharded_step'):
    for a, b in zip(single['history'], result[other]['history']):
      assert abs(a['val_mae'][0] - b['val_mae'][0]) <= 1e-4 * abs(a['val_mae'][0])
