"""Times training throughput: samples/s, step time, FLOP/s and parameter traffic against peaks of the same device.

  python -m experiments.benchmark --output=workdirs/benchmark.json
  python -m experiments.benchmark --batch_sizes=32 --modes=epoch,ensemble --members=8 \
      --full_epoch_rows=239121 --output=workdirs/benchmark_gpu.json

Prints a markdown table and writes the report as JSON at --output and the table beside it (.md).
Ensemble mode also times the same K members trained one after another ('sequential' rows).
"""

from absl import flags

from elemnet_jax import benchmark, cli
from elemnet_jax.errors import UserError

_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['32', '1024'], 'Batch sizes to time.')
_MODES = flags.DEFINE_list('modes', list(benchmark.MODES), f'Modes to time, some of {", ".join(benchmark.MODES)}.')
_STEPS = flags.DEFINE_integer('steps', 50, 'Minibatches per timed epoch (N = batch size * steps rows).')
_REPEATS = flags.DEFINE_integer(
  'repeats', 5, 'Timed calls per row after warm-up, the median reported (the peaks: the fastest of at least 20).'
)
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls before timing (the first one compiles).')
_MEMBERS = flags.DEFINE_integer('members', 8, 'Ensemble size K of the ensemble and sequential rows.')
_ENSEMBLE_MAX_BATCH = flags.DEFINE_integer(
  'ensemble_max_batch', 256, 'Time ensemble mode only at batch sizes up to this (0: at all of them).'
)
_FULL_EPOCH_ROWS = flags.DEFINE_integer(
  'full_epoch_rows',
  0,
  f'Also time one epoch over this many rows (0: off; {benchmark.OQMD_TRAIN_ROWS} = the OQMD training split).',
)
_FULL_EPOCH_BATCH_SIZES = flags.DEFINE_list('full_epoch_batch_sizes', ['32', '1024'], 'Batch sizes of the full epoch.')
_FULL_EPOCH_REPEATS = flags.DEFINE_integer('full_epoch_repeats', 1, 'Timed full epochs per batch size.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 0, 'Side of the peak matmul (0: 2048 on CPU, else 8192).')
_BANDWIDTH_MIB = flags.DEFINE_integer(
  'bandwidth_mib', 0, 'MiB of the array of the memory-bandwidth measurement (0: 256 on CPU, else 2048).'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data and the initial parameters.')
_OUTPUT = flags.DEFINE_string('output', 'workdirs/benchmark.json', 'JSON report path ("": print only).')


def _ints(flag) -> tuple[int, ...]:
  try:
    return tuple(int(value) for value in flag.value)
  except ValueError:
    raise UserError(f'--{flag.name} must be comma-separated integers, not {",".join(flag.value)}') from None


def main(argv):
  del argv
  options = benchmark.BenchmarkOptions(
    batch_sizes=_ints(_BATCH_SIZES),
    modes=tuple(_MODES.value),
    steps=_STEPS.value,
    repeats=_REPEATS.value,
    warmup=_WARMUP.value,
    members=_MEMBERS.value,
    ensemble_max_batch=_ENSEMBLE_MAX_BATCH.value,
    full_epoch_rows=_FULL_EPOCH_ROWS.value,
    full_epoch_batch_sizes=_ints(_FULL_EPOCH_BATCH_SIZES),
    full_epoch_repeats=_FULL_EPOCH_REPEATS.value,
    matmul_size=_MATMUL_SIZE.value,
    bandwidth_mib=_BANDWIDTH_MIB.value,
    seed=_SEED.value,
  )
  report = benchmark.run_benchmark(options)
  print(benchmark.format_report(report), end='')
  if _OUTPUT.value:
    json_path, md_path = benchmark.write_report(report, _OUTPUT.value)
    print(f'wrote {json_path} and {md_path}')


if __name__ == '__main__':
  cli.run(main)
