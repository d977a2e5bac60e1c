"""A run's numbers do not depend on how many cores XLA:CPU uses or which vector instructions it may emit."""

import json
import os
import subprocess

from conftest import require_dataset
from test_cli import COMMAND


def _numbers(workdir) -> dict:
  metrics = json.loads((workdir / 'metrics.json').read_text())
  metrics.pop('seconds')  # wall times are the one thing allowed to differ
  return {'metrics': metrics, 'predictions': (workdir / 'predictions_test.csv').read_text()}


def test_one_core_and_avx2_give_the_bits_of_two_cores_and_the_native_instructions(pretrained, tmp_path):
  require_dataset('qmpy_legacy')
  # The same run as the `pretrained` fixture (this process: every core, the machine's widest vectors),
  # in a process pinned to one core whose XLA may use AVX2 at most.
  # It compiles its own programs: the test run's shared compilation cache is not read.
  env = {**os.environ, 'XLA_FLAGS': '--xla_cpu_max_isa=AVX2', 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  args = ['train', '--config=test', '--config.dataset.name=qmpy_legacy', '--config.train.batch_size=256']
  one_core = ['taskset', '--cpu-list', str(min(os.sched_getaffinity(0)))]  # util-linux
  subprocess.run([*one_core, *COMMAND, *args, f'--workdir={tmp_path / "narrow"}'], env=env, check=True, timeout=600)
  assert _numbers(tmp_path / 'narrow') == _numbers(pretrained)
