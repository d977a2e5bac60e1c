"""Training throughput: samples/s, step time and achieved FLOP/s against a measured matmul peak.

Modes, each timed per batch size on synthetic data of N = batch_size * steps rows:
  step: `fit`'s per-step path (`FitOptions(FitConfig(mode='step'))`): a Python loop of one compiled call per
    minibatch, each gathering its shuffled rows from the data on the device.
  epoch: one jitted `lax.scan` over the epoch (`make_train_epoch`); step time = epoch time / steps.
  ensemble: `fit`'s epoch of K members (`epoch_runner`), timed on each schedule it can run
    (`ENSEMBLE_SCHEDULES`: vmapped over a stacked state, or the members one after another with the
    single-member program); the row is the schedule `fit` picks on this backend (its `schedule`),
    the report's `ensemble_schedules` has one row per schedule. `sequential`: the same K members
    as K separate runs of the `epoch` function. A step counts all K members and samples/s counts
    K * N per epoch.
  full_epoch: with `full_epoch_rows > 0`, one epoch over that many rows (239,121 = the OQMD
    training split) in epoch mode; compiled ahead of time, so no warm-up epoch is run.
The modes of one batch size take turns (`time_interleaved`), so their ratios hold under a load
that changes while the benchmark runs.

FLOPs per sample are analytic (training = 3 x forward, forward = 2 x sum of in x out over the
dense layers); XLA's count for one compiled step, which also counts the optimizer's elementwise
work, is reported beside it when the backend gives one. The peak is a float32 square matmul at
the default matmul precision, timed in the same run on the same device (the fastest of PEAK_CALLS calls).

Arithmetic is not the only roof at small batch sizes: every step also streams arrays the size of
the parameters whatever the batch size (forward and backward read the weights, the backward pass
writes their gradient, Adam reads gradient, parameters and both moments and writes the last
three: PARAMETER_PASSES passes of 4-byte floats). Each row reports that traffic per second against
a memory bandwidth measured in the same run (a donated elementwise update of a large array), so
the table shows how close a batch size is to either roof. The step's roofline bound adds the two:
its matmul FLOPs at the peak plus those passes at the bandwidth; each row gives bound / step time.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import logging

from elemnet_jax import machine
from elemnet_jax.benchmark.report import (
  derived,
  row,
)
from elemnet_jax.benchmark.synthetic import synthetic_data
from elemnet_jax.configs.schema import FitConfig
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, build_model, config_from_dict, count_params
from elemnet_jax.training.fit import FitOptions, ensemble_schedule, epoch_runner
from elemnet_jax.training.optimizer import make_optimizer
from elemnet_jax.training.train import (
  Members,
  compiler_options,
  init_state,
  make_train_epoch,
  make_train_step,
  stack_members,
)

MODES = ('step', 'epoch', 'ensemble')
ENSEMBLE_SCHEDULES = ('vmap', 'sequential')  # the schedules `fit` can train an ensemble on
PAPER_FEATURES = 86
MATMUL_SIZES = {'cpu': 2048}  # any other platform (gpu, tpu): DEFAULT_MATMUL_SIZE
DEFAULT_MATMUL_SIZE = 8192
BANDWIDTH_MIB = {'cpu': 256}  # any other platform: DEFAULT_BANDWIDTH_MIB
DEFAULT_BANDWIDTH_MIB = 2048
# Timed calls of the peak measurements (at least): a peak is the fastest call, since on a shared
# machine a slower call measures the load, not the device.
PEAK_CALLS = 20


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
  """What to time; the defaults take a few minutes on two CPU cores."""

  batch_sizes: tuple[int, ...] = (32, 1024)
  modes: tuple[str, ...] = MODES
  steps: int = 50  # minibatches per timed epoch
  repeats: int = 5  # timed calls per row, the median reported (the peaks: the fastest of max(repeats, PEAK_CALLS))
  warmup: int = 1  # untimed calls first (the first one compiles)
  members: int = 8  # K of the ensemble mode
  ensemble_max_batch: int = 256  # ensemble/sequential only at batch sizes up to this; 0: all
  full_epoch_rows: int = 0  # > 0: also time one epoch over this many rows
  full_epoch_batch_sizes: tuple[int, ...] = (32, 1024)
  full_epoch_repeats: int = 1
  features: int = PAPER_FEATURES
  matmul_size: int = 0  # 0: 2048 on CPU, 8192 elsewhere
  bandwidth_mib: int = 0  # array size of the bandwidth measurement; 0: 256 MiB on CPU, 2048 elsewhere
  learning_rate: float = 1e-3
  seed: int = 0

  def validate(self) -> None:
    unknown = [m for m in self.modes if m not in MODES]
    if unknown or not self.modes:
      raise UserError(f'unknown or no modes {list(self.modes)}; use some of {", ".join(MODES)}')
    for name in ('batch_sizes', 'full_epoch_batch_sizes'):
      values = getattr(self, name)
      if not values or any(b < 1 for b in values):
        raise UserError(f'{name} must be positive integers, not {list(values)}')
    for name in ('steps', 'repeats', 'members', 'features', 'full_epoch_repeats'):
      if getattr(self, name) < 1:
        raise UserError(f'{name} must be at least 1, not {getattr(self, name)}')
    for name in ('warmup', 'ensemble_max_batch', 'full_epoch_rows', 'matmul_size', 'bandwidth_mib'):
      if getattr(self, name) < 0:
        raise UserError(f'{name} must not be negative, not {getattr(self, name)}')


def time_interleaved(runs: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
  """Seconds of `repeats` calls of each run (each waited for), after `warmup` untimed calls of each.

  The runs take turns, one call each per repeat, so a change of load on a shared machine falls on
  all of them alike rather than on whichever was timed at the time.
  """
  for run in runs.values():
    for _ in range(warmup):
      jax.block_until_ready(run())
  seconds = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      tic = time.perf_counter()
      jax.block_until_ready(run())
      seconds[name].append(time.perf_counter() - tic)
  return seconds


def time_calls(run: Callable[[], object], repeats: int, warmup: int) -> list[float]:
  """Seconds of `repeats` calls of `run` (each waited for), after `warmup` untimed calls."""
  return time_interleaved({'run': run}, repeats, warmup)['run']


def matmul_peak(size: int = 0, repeats: int = PEAK_CALLS, warmup: int = 1) -> dict:
  """Float32 `a @ b` of [n, n] matrices on the default device; peak = 2 n^3 / the fastest call's time."""
  n = size or MATMUL_SIZES.get(jax.devices()[0].platform, DEFAULT_MATMUL_SIZE)
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32)
  b = jax.random.normal(key_b, (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  seconds = time_calls(lambda: matmul(a, b), max(repeats, 1), max(warmup, 1))
  precision = str(jax.config.jax_default_matmul_precision or 'default')
  return {
    'size': n,
    'dtype': 'float32',
    'precision': precision,
    'seconds': min(seconds),
    'median_seconds': statistics.median(seconds),
    'calls': len(seconds),
    'flops_per_second': 2 * n**3 / min(seconds),
  }


def memory_bandwidth(mib: int = 0, repeats: int = PEAK_CALLS, warmup: int = 1) -> dict:
  """Bytes/s of `x <- 0.5 * x + 1` on a float32 array of `mib` MiB (read once, written once, in place); fastest call."""
  mib = mib or BANDWIDTH_MIB.get(jax.devices()[0].platform, DEFAULT_BANDWIDTH_MIB)
  n = mib * 2**20 // 4
  update = jax.jit(lambda x: 0.5 * x + 1.0, donate_argnums=0)
  x = jnp.zeros(n, jnp.float32)

  def run():
    nonlocal x
    x = update(x)
    return x

  seconds = time_calls(run, max(repeats, 1), max(warmup, 1))
  return {
    'mib': mib,
    'seconds': min(seconds),
    'median_seconds': statistics.median(seconds),
    'calls': len(seconds),
    'bytes_per_second': 2 * 4 * n / min(seconds),
  }


def xla_flops(jitted, *args) -> float | None:
  """XLA's FLOP count of one call of `jitted` on `args`, or None if the backend gives none."""
  try:
    analysis = jitted.lower(*args).compile().cost_analysis()
  except Exception as error:  # noqa: BLE001 (an optional number; any backend failure means none)
    logging.warning('no XLA cost analysis: %s', error)
    return None
  if isinstance(analysis, list | tuple):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None and flops >= 0 else None


class _Bench:
  """Builds states, data and compiled functions of one run; each mode method returns the call to time."""

  def __init__(self, options: BenchmarkOptions, config: ModelConfig):
    self.options = options
    self.model = build_model(config)
    self.optimizer = make_optimizer(options.learning_rate)
    self.train_step = make_train_step(self.model, self.optimizer, 'mae')
    self.flops = config.train_flops_per_sample(options.features)
    self.epoch_fns: dict[int, Callable] = {}
    self.xla_flops: dict[int, float | None] = {}

  def state(self, member: int = 0):
    return init_state(self.model, self.optimizer, self.options.features, self.options.seed + member)

  def epoch_fn(self, batch_size: int):
    if batch_size not in self.epoch_fns:
      epoch = make_train_epoch(self.train_step, batch_size)
      self.epoch_fns[batch_size] = jax.jit(epoch, donate_argnums=0, compiler_options=compiler_options())
    return self.epoch_fns[batch_size]

  def xla_flops_per_sample(self, batch_size: int) -> float | None:
    if batch_size not in self.xla_flops:
      f = self.options.features
      flops = xla_flops(
        jax.jit(self.train_step),
        self.state(),
        jnp.zeros((batch_size, f)),
        jnp.zeros(batch_size),
        jnp.ones(batch_size, bool),
      )
      self.xla_flops[batch_size] = None if flops is None else flops / batch_size
    return self.xla_flops[batch_size]

  def step(self, batch_size: int, x, y) -> Callable[[], object]:
    options = FitOptions(FitConfig(batch_size=batch_size, mode='step'))
    members = Members(self.model, self.optimizer, stack_members([self.state()]))
    run_epoch, states, x, y = epoch_runner(members, (x, y), options)

    def run():
      nonlocal states
      states, losses = run_epoch(states, x, y)
      return states, losses

    return run

  def epoch(self, batch_size: int, x, y) -> Callable[[], object]:
    epoch_fn, state = self.epoch_fn(batch_size), self.state()

    def run():
      nonlocal state
      state, losses = epoch_fn(state, x, y)
      return state, losses

    return run

  def ensemble(self, batch_size: int, x, y, schedule: str = 'auto') -> Callable[[], object]:
    """`fit`'s epoch of K members (`epoch_runner`) on `schedule`."""
    options = FitOptions(FitConfig(batch_size=batch_size, ensemble_schedule=schedule))
    members = Members(self.model, self.optimizer, stack_members([self.state(k) for k in range(self.options.members)]))
    run_epoch, states, x, y = epoch_runner(members, (x, y), options)

    def run():
      nonlocal states
      states, losses = run_epoch(states, x, y)
      return states, losses

    return run

  def sequential(self, batch_size: int, x, y) -> Callable[[], object]:
    epoch_fn, states = self.epoch_fn(batch_size), [self.state(k) for k in range(self.options.members)]

    def run():
      for k, state in enumerate(states):
        states[k], _ = epoch_fn(state, x, y)
      return states

    return run

  def full_epoch(self, batch_size: int, x, y) -> tuple[list[float], float]:
    """Seconds of the timed epochs, and of the ahead-of-time compilation."""
    state = self.state()
    tic = time.perf_counter()
    compiled = self.epoch_fn(batch_size).lower(state, x, y).compile()
    compile_seconds = time.perf_counter() - tic

    def run():
      nonlocal state
      state, losses = compiled(state, x, y)
      return state, losses

    return time_calls(run, self.options.full_epoch_repeats, 0), compile_seconds


def epoch_seconds(options: BenchmarkOptions, config: ModelConfig, batch_size: int) -> list[float]:
  """Seconds of `options.repeats` epochs of `options.steps` minibatches in epoch mode (the `epoch` rows' timing)."""
  options.validate()
  bench = _Bench(options, config)
  x, y = synthetic_data(batch_size * options.steps, options.features, options.seed)
  return time_calls(bench.epoch(batch_size, x, y), options.repeats, options.warmup)


def device_info() -> dict:
  device = jax.devices()[0]
  return {'platform': device.platform, 'kind': device.device_kind, 'count': jax.device_count()}


def _runs(bench: _Bench, batch_size: int, x, y) -> dict[str, Callable[[], object]]:
  """The calls to time at one batch size: the modes asked for; the ensemble as 'ensemble:<schedule>' per schedule."""
  options = bench.options
  runs = {mode: getattr(bench, mode)(batch_size, x, y) for mode in ('step', 'epoch') if mode in options.modes}
  if 'ensemble' in options.modes:
    if options.ensemble_max_batch and batch_size > options.ensemble_max_batch:
      logging.info('skipping ensemble at batch %d > ensemble_max_batch %d', batch_size, options.ensemble_max_batch)
    else:
      runs.update(
        {f'ensemble:{schedule}': bench.ensemble(batch_size, x, y, schedule) for schedule in ENSEMBLE_SCHEDULES}
      )
      runs['sequential'] = bench.sequential(batch_size, x, y)
  return runs


def _log_row(row: dict) -> None:
  logging.info(
    '%s%s K=%d batch %d: %.0f samples/s, %.3f ms/step, %.1f%% of matmul peak, %.1f%% of memory bandwidth, '
    '%.1f%% of the roofline bound',
    row['mode'],
    f' ({row["schedule"]})' if 'schedule' in row else '',
    row['members'],
    row['batch_size'],
    row['samples_per_second'],
    1e3 * row['step_seconds'],
    100 * row['fraction_of_peak'],
    100 * row['fraction_of_bandwidth'],
    100 * row['fraction_of_bound'],
  )


def default_model(name: str = 'elemnet') -> ModelConfig:
  """The family `name` at its defaults, without dropout (as trained here)."""
  try:
    return config_from_dict({'name': name, 'use_dropout': False} if name in ('elemnet', 'residual') else {'name': name})
  except ValueError as error:
    raise UserError(f'--model={name}: {error}') from None


def run_benchmark(options: BenchmarkOptions = BenchmarkOptions(), config: ModelConfig | None = None) -> dict:
  """Times every requested mode and batch size of the model `config` (default: the paper's ElemNet); the report."""
  options.validate()
  config = config or default_model()
  bench = _Bench(options, config)
  device = device_info()
  logging.info('device %s x%d (%s); timing the matmul peak', device['kind'], device['count'], device['platform'])
  peak = matmul_peak(options.matmul_size, max(options.repeats, PEAK_CALLS), options.warmup)
  logging.info('matmul peak %.1f GFLOP/s (n=%d)', peak['flops_per_second'] / 1e9, peak['size'])
  bandwidth = memory_bandwidth(options.bandwidth_mib, max(options.repeats, PEAK_CALLS), options.warmup)
  logging.info('memory bandwidth %.1f GB/s (%d MiB)', bandwidth['bytes_per_second'] / 1e9, bandwidth['mib'])
  params = count_params(bench.state().params)
  rows, schedules, picked = [], [], ensemble_schedule('auto')

  def make(mode, batch_size, members, n, seconds, xla, **extra):
    return row(mode, batch_size, members, n, seconds, bench.flops, xla, peak, bandwidth, params, device, **extra)

  def add(mode, batch_size, members, n, seconds, xla, **extra):
    rows.append(make(mode, batch_size, members, n, seconds, xla, **extra))
    if mode != 'ensemble':  # logged with its schedule
      _log_row(rows[-1])

  for batch_size in options.batch_sizes:
    n = batch_size * options.steps
    x, y = synthetic_data(n, options.features, options.seed)
    xla = bench.xla_flops_per_sample(batch_size)
    # Every run's state lives until the turns are over: at batch 32 with K = 8, 26 models' parameters
    # and Adam moments (about 1.5 GB for the paper's network).
    timed = time_interleaved(_runs(bench, batch_size, x, y), options.repeats, options.warmup)
    for schedule in ENSEMBLE_SCHEDULES:
      if f'ensemble:{schedule}' in timed:
        seconds = timed[f'ensemble:{schedule}']
        schedules.append(make('ensemble', batch_size, options.members, n, seconds, xla, schedule=schedule))
        _log_row(schedules[-1])
    for mode in ('step', 'epoch', 'ensemble', 'sequential'):
      name = f'ensemble:{picked}' if mode == 'ensemble' else mode
      if name in timed:
        extra = {'schedule': picked} if mode == 'ensemble' else {}
        add(mode, batch_size, 1 if mode in ('step', 'epoch') else options.members, n, timed[name], xla, **extra)
    del timed, x, y
  if options.full_epoch_rows:
    x, y = synthetic_data(options.full_epoch_rows, options.features, options.seed)
    for batch_size in options.full_epoch_batch_sizes:
      seconds, compile_seconds = bench.full_epoch(batch_size, x, y)
      xla = bench.xla_flops_per_sample(batch_size)
      add('full_epoch', batch_size, 1, options.full_epoch_rows, seconds, xla, compile_seconds=compile_seconds)

  report = {
    'timestamp': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    'jax_version': jax.__version__,
    'device': device,
    'machine': machine.describe(),
    'matmul_peak': peak,
    'memory_bandwidth': bandwidth,
    'model': {**config.to_dict(), 'features': options.features, 'params': params},
    'options': dataclasses.asdict(options),
    'rows': rows,
    'ensemble_schedules': schedules,  # the ensemble timed on each schedule; `rows` has fit's pick
  }
  report['derived'] = derived(rows, schedules)
  return report
