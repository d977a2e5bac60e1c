"""A quick smoke test of the throughput benchmark on a tiny network."""

import json

import pytest

from elemnet_jax import benchmark
from elemnet_jax.benchmark import report as benchmark_report
from elemnet_jax.benchmark import synthetic
from elemnet_jax.models import config_from_dict
from elemnet_jax.models.elemnet import ElemNetConfig
from elemnet_jax.training.fit import ensemble_schedule

KEYS = {
  'mode',
  'batch_size',
  'members',
  'rows',
  'steps',
  'device_kind',
  'device_count',
  'samples_per_second',
  'step_seconds',
  'epoch_seconds',
  'flops_per_sample',
  'xla_flops_per_sample',
  'achieved_flops_per_second',
  'fraction_of_peak',
  'parameter_bytes_per_second',
  'fraction_of_bandwidth',
}


def test_benchmark_rows_and_report(tmp_path):
  config = ElemNetConfig(widths=(16, 8), dropout_after=(), dropout_rates=())
  options = benchmark.BenchmarkOptions(
    batch_sizes=(8,),
    steps=2,
    repeats=1,
    members=2,
    matmul_size=64,
    bandwidth_mib=1,
    full_epoch_rows=20,
    full_epoch_batch_sizes=(8,),
  )
  report = benchmark.run_benchmark(options, config)

  rows = report['rows']
  assert [r['mode'] for r in rows] == ['step', 'epoch', 'ensemble', 'sequential', 'full_epoch']
  for row in rows:
    assert KEYS <= row.keys()
    assert row['samples_per_second'] > 0 and row['step_seconds'] > 0
    assert 0 < row['bound_step_seconds'] and 0 < row['fraction_of_bound']
  assert [r['members'] for r in rows] == [1, 1, 2, 2, 1]
  assert rows[-1]['steps'] == 3  # 20 rows at batch 8, the last batch masked
  assert report['matmul_peak']['flops_per_second'] > 0 and report['matmul_peak']['calls'] == benchmark.PEAK_CALLS
  assert report['memory_bandwidth']['bytes_per_second'] > 0
  assert report['model']['params'] == 86 * 16 + 16 + 16 * 8 + 8 + 8 + 1
  assert set(report['derived']['epoch_over_step']) == {'8'}
  assert set(report['derived']['ensemble_over_sequential']) == {'8'}
  # the ensemble is timed on both schedules; its row is the one fit picks on this backend
  picked = ensemble_schedule('auto')
  assert [r['schedule'] for r in report['ensemble_schedules']] == ['vmap', 'sequential']
  assert rows[2]['schedule'] == report['derived']['ensemble_schedule']['8'] == picked
  assert set(report['derived']['ensemble_schedules_over_sequential']['8']) == {'vmap', 'sequential'}
  assert set(report['derived']['fraction_of_bound']['epoch']) == {'8'}

  json_path, md_path = benchmark_report.write_report(report, tmp_path / 'bench.json')
  assert json.loads(json_path.read_text())['rows'][0]['mode'] == 'step'
  table = md_path.read_text()
  assert md_path.name == 'bench.md' and '| ensemble | 2 | 8 |' in table and 'sequential runs' in table
  assert '% of bound' in table and f'(schedule {picked})' in table and 'roofline bound' in table


@pytest.mark.parametrize(
  'model',
  [
    {'name': 'elemnet', 'widths': (256, 128), 'dropout_after': (), 'dropout_rates': ()},
    {'name': 'transformer', 'd_model': 64, 'layers': 2, 'ffn_width': 128, 'head_widths': (64,), 'vector_width': 32},
  ],
)
def test_each_family_counts_the_flops_xla_counts_for_its_train_step(model):
  # The benchmark's roofline uses the family's own count of matmul FLOPs; XLA's cost analysis of the
  # compiled step also counts the elementwise work (activations, norms, softmax, Adam), so it is a
  # little higher, never lower.
  options = benchmark.BenchmarkOptions(
    batch_sizes=(64,), modes=('step',), steps=2, repeats=1, matmul_size=64, bandwidth_mib=1
  )
  row = benchmark.run_benchmark(options, config_from_dict(model))['rows'][0]
  assert 1.0 <= row['xla_flops_per_sample'] / row['flops_per_sample'] < 1.5


def test_modes_take_turns_so_a_change_of_load_falls_on_all_of_them():
  calls = []
  seconds = benchmark.time_interleaved({m: lambda m=m: calls.append(m) for m in ('step', 'epoch')}, repeats=2, warmup=1)
  assert calls == ['step', 'epoch'] + ['step', 'epoch'] * 2  # warm-ups, then one timed call of each per repeat
  assert {m: len(s) for m, s in seconds.items()} == {'step': 2, 'epoch': 2}


def test_epoch_seconds_times_the_epoch_mode_on_the_synthetic_compositions():
  # what experiments.compare_pytorch times on the JAX side, on the data its PyTorch side trains on
  x, y = synthetic.synthetic_arrays(40, benchmark.PAPER_FEATURES, seed=0)
  assert x.dtype == y.dtype == 'float32' and x.shape == (40, 86) and y.shape == (40,)
  assert ((x > 0).sum(axis=1) >= 2).all() and ((x > 0).sum(axis=1) <= 5).all()
  assert abs(x.sum(axis=1) - 1).max() < 1e-5
  config = ElemNetConfig(widths=(16, 8), dropout_after=(), dropout_rates=())
  seconds = benchmark.epoch_seconds(benchmark.BenchmarkOptions(steps=2, repeats=3), config, batch_size=8)
  assert len(seconds) == 3 and min(seconds) > 0
