"""`python -m experiments.reproducibility`: one short fine-tune on several core sets and vector instructions.

  python -m experiments.reproducibility --output=workdirs/reproducibility.json

Runs `elemnet-jax finetune --pretrained=oqmd_fe --config.train.max_epochs=3` (SSUB, the shipped model,
3 epochs) once per setting, each in its own process: pinned to the given cores (`taskset`) and with
XLA allowed the given instructions at most (`--xla_cpu_max_isa`, 'native' for the machine's own).
Each process compiles its own programs (no persistent compilation cache). Prints, per setting, the
test MAE to the last digit and a digest of the test predictions, and says which settings agree.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from absl import app, flags

from elemnet_jax import machine
from experiments import pinnable_cores

FLAGS = flags.FLAGS
flags.DEFINE_list('cores', ['all', '1'], "Core sets to pin to: 'all' (every core this process may use) or a count.")
flags.DEFINE_list('isas', ['native', 'AVX2'], "XLA's widest instructions: 'native' or an --xla_cpu_max_isa value.")
flags.DEFINE_integer('epochs', 3, 'Fine-tuning epochs.')
flags.DEFINE_string('output', '', 'JSON report path ("": print only).')

COMMAND = [sys.executable, '-c', 'from elemnet_jax.cli import main; main()']


def core_sets() -> list[list[int]]:
  """The cores of each `--cores` entry, from this process's own; one-line errors for what cannot be pinned."""
  available = pinnable_cores()
  sets = []
  for entry in FLAGS.cores:
    if entry == 'all':
      sets.append(available)
    elif entry.isdigit() and 1 <= int(entry) <= len(available):
      sets.append(available[: int(entry)])
    else:
      raise SystemExit(f"error: --cores={entry}: use 'all' or a count from 1 to {len(available)} (the cores it has)")
  return sets


def run_once(pinned: list[int], isa: str, workdir: Path) -> dict:
  """One fine-tune pinned to the cores `pinned`, XLA limited to `isa`; its test MAE and a digest of its predictions."""
  env = {**os.environ, 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  flags_kept = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith('--xla_cpu_max_isa')]
  env['XLA_FLAGS'] = ' '.join(flags_kept + ([] if isa == 'native' else [f'--xla_cpu_max_isa={isa}']))
  argv = ['taskset', '--cpu-list', ','.join(map(str, pinned)), *COMMAND, 'finetune', '--pretrained=oqmd_fe']
  argv += [f'--workdir={workdir}', f'--config.train.max_epochs={FLAGS.epochs}']
  done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    lines = (done.stderr or done.stdout).strip().splitlines() or ['no output']
    raise SystemExit(f'error: the run on cores {pinned} with {isa} failed: {lines[-1]}')
  metrics = json.loads((workdir / 'metrics.json').read_text())
  predictions = (workdir / 'predictions_test.csv').read_bytes()
  return {
    'cores': len(pinned),
    'isa': isa,
    'test_mae': metrics['test']['mae'],
    'predictions_sha256': hashlib.sha256(predictions).hexdigest(),
  }


def _setting(row: dict) -> str:
  return f'{row["cores"]} core{"s" if row["cores"] > 1 else ""}, {row["isa"]}'


def main(argv):
  del argv
  rows = []
  sets = core_sets()
  with tempfile.TemporaryDirectory() as scratch:
    for pinned in sets:
      for isa in FLAGS.isas:
        row = run_once(pinned, isa, Path(scratch) / f'{len(pinned)}_{isa}')
        rows.append(row)
        print(f'{_setting(row)}: test MAE {row["test_mae"]!r}, predictions {row["predictions_sha256"][:12]}')
  groups = {}
  for row in rows:
    groups.setdefault(row['predictions_sha256'], []).append(_setting(row))
  print(
    f'CPU: {machine.cpu_model()}; {len(groups)} distinct result(s): '
    + '; '.join(' = '.join(g) for g in groups.values())
  )
  if FLAGS.output:
    from elemnet_jax import workdir as files

    report = {'machine': machine.describe(), 'epochs': FLAGS.epochs, 'rows': rows}
    files.write_text(FLAGS.output, json.dumps(report, indent=1))
    print(f'wrote {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
