"""Two processes on localhost (one CPU device each, gloo collectives) train one data-parallel run.

Checked against one process with the same global batch: on one device the parameters agree to float
tolerance; on two devices (the same mesh) the workdir is byte-for-byte the same except timings. Only
process 0 writes; a run whose processes are killed mid-training resumes from its last checkpoint to the same result.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elemnet_jax.training import checkpoint, events

_SCRIPT = Path(sys.executable).parent / 'elemnet-jax'
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, '-c', 'from elemnet_jax.cli import main; main()']
FLAGS = ['train', '--config=test', '--config.train.data_parallel=True']
TIMEOUT = 240


@pytest.fixture(scope='module', autouse=True)
def _ssub():
  from conftest import require_dataset

  require_dataset('ssub')


def _env(devices: int = 1) -> dict:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  env['XLA_FLAGS'] = f'{env.get("XLA_FLAGS", "")} --xla_force_host_platform_device_count={devices}'.strip()
  return env


def _start(workdir: Path, *flags: str, devices: int = 1) -> subprocess.Popen:
  return subprocess.Popen(
    [*COMMAND, *FLAGS, f'--workdir={workdir}', *flags],
    env=_env(devices),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )


def _port() -> int:
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    return probe.getsockname()[1]


def _start_two(workdirs: tuple[Path, Path], *flags: str) -> list[subprocess.Popen]:
  """Process 0 and 1 of one run; each is given its own --workdir, so a write by process 1 would show."""
  joined = ['--distributed', f'--coordinator=localhost:{_port()}', '--num_processes=2', '--distributed_timeout=15']
  return [_start(workdirs[i], *joined, f'--process_id={i}', *flags) for i in range(2)]


ENDLESS = ['--config.train.max_epochs=100000', '--config.train.patience=100000', '--config.train.guard_epochs=0']


def _wait_for_checkpoint(workdir: Path, epoch: int, process: subprocess.Popen) -> None:
  """Waits until process 0 has saved `epoch` in `workdir`, or `process` has ended."""
  deadline = time.monotonic() + TIMEOUT
  while not (workdir / 'checkpoints' / str(epoch)).is_dir() and process.poll() is None:
    assert time.monotonic() < deadline, 'no checkpoint was written'
    time.sleep(0.05)


def _wait(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
  return [(p.wait(TIMEOUT), p.stderr.read()) for p in processes]


def _ok(results: list[tuple[int, str]]) -> None:
  for code, stderr in results:
    assert code == 0, stderr[-3000:]


@pytest.fixture(scope='module')
def one_process(tmp_path_factory) -> dict[int, Path]:
  """Workdirs of one process on 1 and on 2 devices, trained side by side."""
  root = tmp_path_factory.mktemp('one')
  workdirs = {devices: root / str(devices) / 'run' for devices in (1, 2)}
  _ok(_wait([_start(workdir, devices=devices) for devices, workdir in workdirs.items()]))
  return workdirs


def _params(workdir: Path) -> list[np.ndarray]:
  import jax

  return jax.tree.leaves(checkpoint.load_trained(workdir)[1])


_TIMINGS = (
  (re.compile(r'^\S+ \S+ '), ''),  # the time stamp of a line
  (re.compile(r'\d+(\.\d+)?( ?s\b|%| samples/s|s/epoch)'), 'T'),
  (re.compile(r'ETA \S+'), 'ETA T'),
)


def _without_timings(path: Path) -> object:
  """A file's content with its timing fields left out (metrics 'seconds', history 'seconds', log times), and the
  metrics' 'machine' (the count of processes)."""
  if path.name == 'metrics.json':
    return {key: value for key, value in json.loads(path.read_text()).items() if key not in ('seconds', 'machine')}
  if path.name == 'history.csv':
    return [line.rsplit(',', 1)[0] for line in path.read_text().splitlines()]
  if path.name == 'log.txt':
    lines = []
    for line in path.read_text().splitlines():
      for pattern, replacement in _TIMINGS:
        line = pattern.sub(replacement, line)
      lines.append(line)
    return [line for line in lines if not line.startswith('INFO time:')]
  if path.parent.name == events.FOLDER:
    return [scalar for scalar in events.read_scalars(path.parent) if scalar[1] != 'samples_per_second']
  return path.read_bytes()


def _files(workdir: Path) -> dict[str, object]:
  """Every file of a workdir without its timings; orbax folders (random data file names) by what they restore."""
  found = {}
  for path in sorted(workdir.rglob('*')):
    relative = path.relative_to(workdir)
    if relative.parts[0] == 'checkpoints':
      found['checkpoints'] = sorted(entry.name for entry in (workdir / 'checkpoints').iterdir())
    elif relative.parts[:2] == ('model', 'params'):
      found['model/params'] = [leaf.tobytes() for leaf in _params(workdir)]
    elif relative.parts[0] == events.FOLDER and path.is_file():
      found[events.FOLDER] = _without_timings(path)
    elif path.is_file():
      found[str(relative)] = _without_timings(path)
  return found


def test_two_processes_write_what_one_process_writes(one_process, tmp_path):
  workdirs = (tmp_path / 'p0' / 'run', tmp_path / 'p1' / 'run')
  _ok(_wait(_start_two(workdirs)))
  assert not workdirs[1].parent.exists(), 'process 1 wrote files'
  assert json.loads((workdirs[0] / 'metrics.json').read_text())['machine']['processes'] == 2
  two, same_mesh = _files(workdirs[0]), _files(one_process[2])
  assert two.keys() == same_mesh.keys()
  assert ('3', 'val_mae/member_0') in [(str(step), tag) for step, tag, _ in two[events.FOLDER]]  # TensorBoard scalars
  for name in two:
    assert two[name] == same_mesh[name], name
  for mine, one_device in zip(_params(workdirs[0]), _params(one_process[1]), strict=True):
    np.testing.assert_allclose(mine, one_device, rtol=1e-4, atol=1e-6)


def test_a_killed_run_of_two_processes_resumes_to_the_same_result(one_process, tmp_path):
  workdirs = (tmp_path / 'p0' / 'run', tmp_path / 'p1' / 'run')
  first = _start_two(workdirs, '--config.train.max_epochs=3')
  _wait_for_checkpoint(workdirs[0], 1, first[1])
  first[1].send_signal(signal.SIGKILL)
  first[0].send_signal(signal.SIGKILL)  # the whole job killed: process 0 need not wait --distributed_timeout
  _wait(first)
  if (workdirs[0] / 'metrics.json').exists():
    pytest.skip('the run finished before its processes were killed')
  _ok(_wait(_start_two(workdirs)))
  assert 'resuming' in (workdirs[0] / 'log.txt').read_text()
  assert not workdirs[1].parent.exists(), 'process 1 wrote files'
  for mine, reference in zip(_params(workdirs[0]), _params(one_process[2]), strict=True):
    np.testing.assert_array_equal(mine, reference)
  assert _without_timings(workdirs[0] / 'history.csv') == _without_timings(one_process[2] / 'history.csv')


def test_a_sigterm_to_one_process_stops_both_at_the_same_epoch_in_one_line(tmp_path):
  # As a scheduler preempting one host: JAX's coordination service tells the others, and every process stops
  # after the same epoch, process 0 saving it.
  workdirs = (tmp_path / 'p0' / 'run', tmp_path / 'p1' / 'run')
  processes = _start_two(workdirs, *ENDLESS)
  _wait_for_checkpoint(workdirs[0], 1, processes[1])
  processes[1].send_signal(signal.SIGTERM)
  (code_0, stderr_0), (code_1, stderr_1) = _wait(processes)
  assert (code_0, code_1) == (143, 143), stderr_0[-2000:] + stderr_1[-2000:]
  assert 'Traceback' not in stderr_0 + stderr_1
  epoch = max(int(p.name) for p in (workdirs[0] / 'checkpoints').iterdir() if p.name.isdigit())
  assert stderr_0.strip().splitlines()[-1] == f'interrupted at epoch {epoch}; run the same command to resume'
  assert stderr_1.strip().splitlines()[-1] == 'interrupted; this process wrote nothing'
  assert not workdirs[1].parent.exists(), 'process 1 wrote files'


def test_a_sigterm_to_a_joined_run_of_one_process_stops_it_after_its_checkpoints_began(tmp_path):
  # Joined, JAX's preemption notifier catches SIGTERM, and orbax's background saves must not move the epoch
  # at which the run looks for the notice: signalled once it has saved a few epochs, it still stops.
  workdir = tmp_path / 'run'
  joined = ['--distributed', f'--coordinator=localhost:{_port()}', '--num_processes=1', '--process_id=0']
  process = _start(workdir, *joined, *ENDLESS)
  _wait_for_checkpoint(workdir, 20, process)
  process.send_signal(signal.SIGTERM)
  ((code, stderr),) = _wait([process])
  assert code == 143 and stderr.strip().splitlines()[-1].endswith('; run the same command to resume'), stderr[-2000:]


def test_processes_with_different_configs_end_with_one_line(tmp_path):
  workdirs = (tmp_path / 'p0' / 'run', tmp_path / 'p1' / 'run')
  joined = ['--distributed', f'--coordinator=localhost:{_port()}', '--num_processes=2', '--distributed_timeout=15']
  differing = [_start(workdirs[i], *joined, f'--process_id={i}', f'--config.seed={i}') for i in range(2)]
  for code, stderr in _wait(differing):
    assert code == 2, stderr[-2000:]
    assert 'error: processes disagree on the config: process 1 has sha256' in stderr
  assert not workdirs[0].exists() and not workdirs[1].exists()
