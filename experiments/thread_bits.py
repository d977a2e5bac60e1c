"""`python -m experiments.thread_bits`: which of a training step's programs give other bits on fewer cores.

  python -m experiments.thread_bits --output=workdirs/thread_bits.json

For each XLA:CPU library setting (`--fusion_types`: values of the compiler option
`xla_cpu_experimental_ynn_fusion_type`, 'default' for XLA's own choice), one process per core set
(`taskset`: every core this process has, then one) computes, each compiled with that setting:
the column sums `x.sum(0)` of float32 arrays [R, 1024] for several R, and the paper network's
forward pass and its weight gradients (MAE loss) at batch 32, from fixed random inputs. It prints,
per setting, which of them differ in any bit between the core sets.
"""

import hashlib
import json
import subprocess
import sys

from absl import app, flags

from experiments import pinnable_cores

FLAGS = flags.FLAGS
flags.DEFINE_list(
  'fusion_types',
  ['default', 'LIBRARY_FUSION_TYPE_DOT', ''],
  "Values of xla_cpu_experimental_ynn_fusion_type to try ('default': not set; '': no library fusions).",
)
flags.DEFINE_string('output', '', 'JSON report path ("": print only).')
flags.DEFINE_string('worker', None, 'Internal: compute the digests with this setting in this process.')

ROWS = (32, 64, 256, 1315)  # rows of the summed arrays: a batch's or a validation set's
BATCH = 32


def _digest(array) -> str:
  import numpy as np

  return hashlib.sha256(np.asarray(array).tobytes()).hexdigest()[:16]


def digests(fusion_type: str) -> dict[str, str]:
  """Digests of the sums, the forward pass and each weight gradient, compiled with `fusion_type`."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from elemnet_jax.benchmark import PAPER_FEATURES, default_model
  from elemnet_jax.models import build_model

  options = {} if fusion_type == 'default' else {'xla_cpu_experimental_ynn_fusion_type': fusion_type}
  rng = np.random.default_rng(0)
  found = {}
  for rows in ROWS:
    x = jnp.asarray(rng.standard_normal((rows, 1024)), jnp.float32)
    found[f'sum of [{rows}, 1024]'] = _digest(jax.jit(lambda a: a.sum(0), compiler_options=options)(x))
  model = build_model(default_model())
  x = jnp.asarray(rng.random((BATCH, PAPER_FEATURES)), jnp.float32)
  y = jnp.asarray(rng.random(BATCH), jnp.float32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x[:1])
  found['forward'] = _digest(jax.jit(model.apply, compiler_options=options)(params, x))
  loss = lambda p: jnp.abs(model.apply(p, x) - y).mean()  # noqa: E731
  gradient = jax.jit(jax.grad(loss), compiler_options=options)(params)
  for path, leaf in jax.tree_util.tree_flatten_with_path(gradient)[0]:
    found['gradient ' + '/'.join(str(getattr(key, 'key', key)) for key in path[1:])] = _digest(leaf)
  return found


def run_worker(cores: list[int], fusion_type: str) -> dict[str, str]:
  argv = ['taskset', '--cpu-list', ','.join(map(str, cores)), sys.executable, '-m', 'experiments.thread_bits']
  done = subprocess.run([*argv, f'--worker={fusion_type}'], capture_output=True, text=True, check=False)
  if done.returncode != 0:
    lines = (done.stderr or done.stdout).strip().splitlines() or ['no output']
    raise SystemExit(f'error: the process on cores {cores} with {fusion_type!r} failed: {lines[-1]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.worker is not None:
    print(json.dumps(digests(FLAGS.worker)))
    return
  available = pinnable_cores()
  if len(available) < 2:
    raise SystemExit('error: this process has one core; there is nothing to compare it with')
  report = {}
  for fusion_type in FLAGS.fusion_types:
    every, one = run_worker(available, fusion_type), run_worker(available[:1], fusion_type)
    differ = [name for name in every if every[name] != one[name]]
    report[fusion_type] = {'compared': len(every), 'differ': differ}
    print(f'{fusion_type!r}: {len(differ)} of {len(every)} differ between {len(available)} cores and 1: {differ}')
  if FLAGS.output:
    from elemnet_jax import machine
    from elemnet_jax import workdir as files

    files.write_text(FLAGS.output, json.dumps({'machine': machine.describe(), 'settings': report}, indent=1))
    print(f'wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
