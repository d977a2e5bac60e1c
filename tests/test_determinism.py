"""A run gives the same bits in every process on the same cores, whichever vector instructions XLA may emit.

The number of cores is not free: XLA:CPU shares some reductions and matmuls among the threads it has
when a program runs, so on some CPUs the same program on one core and on two differs in the last
bits (docs/results.md, Reproducibility; `experiments/thread_bits.py`).
"""

import json
import os
import subprocess

from conftest import require_dataset
from test_cli import COMMAND


def _numbers(workdir) -> dict:
  metrics = json.loads((workdir / 'metrics.json').read_text())
  metrics.pop('seconds')  # wall times are allowed to differ
  metrics['machine'].pop('xla_flags')  # and the record of the XLA flags; versions, CPU and cores must agree
  return {'metrics': metrics, 'predictions': (workdir / 'predictions_test.csv').read_text()}


def test_a_run_in_another_process_limited_to_avx2_gives_the_same_bits(pretrained, tmp_path):
  require_dataset('qmpy_legacy')
  # The same run as the `pretrained` fixture (this process, the machine's widest vectors), in a
  # process on the same cores whose XLA may use AVX2 at most. It compiles its own programs: the test
  # run's shared compilation cache is not read.
  env = {**os.environ, 'XLA_FLAGS': '--xla_cpu_max_isa=AVX2', 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  args = ['train', '--config=test', '--config.dataset.name=qmpy_legacy', '--config.train.batch_size=256']
  subprocess.run([*COMMAND, *args, f'--workdir={tmp_path / "narrow"}'], env=env, check=True, timeout=600)
  assert _numbers(tmp_path / 'narrow') == _numbers(pretrained)
