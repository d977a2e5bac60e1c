"""`python -m experiments.compare_pytorch`: the paper's ElemNet trained by this package and by PyTorch eager.

  python -m experiments.compare_pytorch --batch_size=32 --rounds=5 --output=workdirs/compare_pytorch.json

The same network (the paper's widths, ReLU, no dropout, one output), the same synthetic compositions
(`benchmark.synthetic`), Adam at 1e-3, MAE loss, a new shuffle every epoch. JAX runs the
benchmark's epoch mode (one compiled `lax.scan` per epoch); PyTorch runs the usual eager loop
(`zero_grad`, forward, `backward`, `Adam.step` with its default implementation) at its default
thread settings. Each round starts one process per framework, one after the other, with the order
swapped every round, so neither takes cores from the other and a change of load falls on both; a
process warms up (JAX compiles), times `--repeats` epochs of `--steps` minibatches and reports the
median. The ratio is PyTorch's step time over JAX's, per round; the report gives their median.

PyTorch is not a dependency of the package: install it beside it for this comparison
(`pip install torch==2.13.0`, the CPU build this was measured with).
"""

import json
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer('batch_size', 32, 'Minibatch size.')
flags.DEFINE_integer('steps', 50, 'Minibatches per timed epoch.')
flags.DEFINE_integer('repeats', 5, 'Timed epochs per process, after one untimed epoch; the median is kept.')
flags.DEFINE_integer('rounds', 5, 'Rounds of one process per framework.')
flags.DEFINE_integer('seed', 0, 'Seed of the synthetic data.')
flags.DEFINE_string('output', 'workdirs/compare_pytorch.json', 'JSON report path ("": print only).')
flags.DEFINE_enum('worker', '', ['', 'jax', 'torch'], 'Internal: time one framework in this process.')

FRAMEWORKS = ('jax', 'torch')
LEARNING_RATE = 1e-3


def jax_step_seconds() -> dict:
  import jax

  from elemnet_jax import benchmark

  options = benchmark.BenchmarkOptions(steps=FLAGS.steps, repeats=FLAGS.repeats, seed=FLAGS.seed)
  seconds = benchmark.epoch_seconds(options, benchmark.default_model(), FLAGS.batch_size)
  return {'version': jax.__version__, 'epoch_seconds': seconds}


def torch_step_seconds() -> dict:
  try:
    import torch
  except ImportError:
    raise SystemExit('error: PyTorch is not installed beside the package: pip install torch==2.13.0') from None

  from elemnet_jax.benchmark import PAPER_FEATURES, default_model
  from elemnet_jax.benchmark.synthetic import synthetic_arrays

  torch.manual_seed(FLAGS.seed)
  layers, width = [], PAPER_FEATURES
  for next_width in default_model().hidden_sizes():
    layers += [torch.nn.Linear(width, next_width), torch.nn.ReLU()]
    width = next_width
  model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
  optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
  x, y = (torch.from_numpy(a) for a in synthetic_arrays(FLAGS.batch_size * FLAGS.steps, PAPER_FEATURES, FLAGS.seed))

  def epoch() -> None:
    order = torch.randperm(x.shape[0])
    for step in range(FLAGS.steps):
      index = order[step * FLAGS.batch_size : (step + 1) * FLAGS.batch_size]
      optimizer.zero_grad(set_to_none=True)
      loss = (model(x[index])[:, 0] - y[index]).abs().mean()
      loss.backward()
      optimizer.step()

  epoch()
  seconds = []
  for _ in range(FLAGS.repeats):
    tic = time.perf_counter()
    epoch()
    seconds.append(time.perf_counter() - tic)
  return {'version': torch.__version__, 'threads': torch.get_num_threads(), 'epoch_seconds': seconds}


def run_worker(framework: str) -> dict:
  """One process of `framework`; its report, with the median step time."""
  argv = [sys.executable, '-m', 'experiments.compare_pytorch', f'--worker={framework}']
  argv += [f'--{name}={FLAGS[name].value}' for name in ('batch_size', 'steps', 'repeats', 'seed')]
  done = subprocess.run(argv, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    lines = (done.stderr or done.stdout).strip().splitlines() or ['no output']
    raise SystemExit(f'{framework} worker failed: {lines[-1]}')
  report = json.loads(done.stdout.strip().splitlines()[-1])
  report['step_seconds'] = statistics.median(report['epoch_seconds']) / FLAGS.steps
  return report


def main(argv):
  del argv
  if FLAGS.worker:
    print(json.dumps(jax_step_seconds() if FLAGS.worker == 'jax' else torch_step_seconds()))
    return
  rounds = []
  for number in range(FLAGS.rounds):
    order = FRAMEWORKS if number % 2 == 0 else FRAMEWORKS[::-1]
    reports = {framework: run_worker(framework) for framework in order}
    rounds.append(reports)
    ratio = reports['torch']['step_seconds'] / reports['jax']['step_seconds']
    print(
      f'round {number + 1}/{FLAGS.rounds}: jax {1e3 * reports["jax"]["step_seconds"]:.2f} ms/step, '
      f'torch {1e3 * reports["torch"]["step_seconds"]:.2f} ms/step, ratio {ratio:.2f}',
      flush=True,
    )
  summary = {
    framework: {
      'version': rounds[0][framework]['version'],
      'step_ms': 1e3 * statistics.median(r[framework]['step_seconds'] for r in rounds),
      'samples_per_second': FLAGS.batch_size / statistics.median(r[framework]['step_seconds'] for r in rounds),
    }
    for framework in FRAMEWORKS
  }
  summary['torch']['threads'] = rounds[0]['torch']['threads']
  ratios = [r['torch']['step_seconds'] / r['jax']['step_seconds'] for r in rounds]
  report = {
    'batch_size': FLAGS.batch_size,
    'steps': FLAGS.steps,
    'summary': summary,
    'ratios': ratios,
    'rounds': rounds,
  }
  print(
    '| framework | version | ms per step | samples/s |\n|---|---|---:|---:|\n'
    + ''.join(
      f'| {f} | {summary[f]["version"]} | {summary[f]["step_ms"]:.2f} | {summary[f]["samples_per_second"]:,.0f} |\n'
      for f in FRAMEWORKS
    )
    + f'JAX is {statistics.median(ratios):.2f}x faster (median of {len(ratios)} rounds; '
    f'{min(ratios):.2f}-{max(ratios):.2f})'
  )
  if FLAGS.output:
    from elemnet_jax import workdir

    workdir.write_text(FLAGS.output, json.dumps(report, indent=1))
    print(f'wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
