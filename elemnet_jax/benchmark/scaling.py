"""Data-parallel scaling: `fit`'s epoch on 1 process and on N processes (one device each) of this machine.

`run_scaling` starts the processes itself (`jax.distributed` on localhost, gloo collectives on CPU):
each trains the same epochs of the paper's ElemNet on the same synthetic data with the same global
batch, so N processes compute 1/N of every minibatch each. Reported per process count: samples/s
(median epoch) and the efficiency, samples/s over N times that of one process.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time

from elemnet_jax.errors import UserError

_WORKER = 'from elemnet_jax.benchmark.scaling import worker; worker()'


def worker() -> None:
  """One process of a timed run; argv: processes, process id, port, batch size, steps, repeats (process 0 prints)."""
  processes, process_id, port, batch_size, steps, repeats = (int(a) for a in sys.argv[1:7])
  import jax

  from elemnet_jax.benchmark import default_model, synthetic_data
  from elemnet_jax.configs.schema import FitConfig
  from elemnet_jax.models import build_model
  from elemnet_jax.training import distributed
  from elemnet_jax.training.fit import FitOptions, epoch_runner
  from elemnet_jax.training.optimizer import make_optimizer
  from elemnet_jax.training.train import Members, data_mesh, init_state, stack_members

  if processes > 1:
    distributed.initialize(f'localhost:{port}', processes, process_id, timeout=30)
  model, optimizer = build_model(default_model()), make_optimizer(1e-3)
  x, y = synthetic_data(batch_size * steps, 86, seed=0)
  members = Members(model, optimizer, stack_members([init_state(model, optimizer, 86, 0)]))
  run_epoch, states, x, y = epoch_runner(members, (x, y), FitOptions(FitConfig(batch_size=batch_size)), data_mesh())
  seconds = []
  for _ in range(repeats + 1):  # the first call compiles
    tic = time.perf_counter()
    states, losses = run_epoch(states, x, y)
    jax.block_until_ready(losses)
    seconds.append(time.perf_counter() - tic)
  if distributed.is_writer():
    print(json.dumps({'seconds': seconds[1:], 'devices': jax.device_count()}), flush=True)


def _port() -> int:
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    return probe.getsockname()[1]


def time_processes(processes: int, batch_size: int, steps: int, repeats: int) -> dict:
  """Median epoch seconds and samples/s of `processes` processes training together."""
  env = {**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')}
  port = _port()
  args = [str(v) for v in (processes, 0, port, batch_size, steps, repeats)]
  started = []
  for i in range(processes):
    args[1] = str(i)
    started.append(subprocess.Popen([sys.executable, '-c', _WORKER, *args], env=env, stdout=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=600)[0] for p in started]
  if any(p.returncode for p in started):
    raise UserError(f'benchmark with {processes} processes failed (exit statuses {[p.returncode for p in started]})')
  report = json.loads(outputs[0].strip().splitlines()[-1])
  median = statistics.median(report['seconds'])
  rate = batch_size * steps / median
  return {'processes': processes, 'devices': report['devices'], 'seconds': median, 'samples_per_s': rate}


def run_scaling(processes: int, batch_size: int = 1024, steps: int = 50, repeats: int = 5) -> list[dict]:
  """Rows for 1 and `processes` processes, each with its efficiency against 1 process."""
  if processes < 2:
    raise UserError(f'--processes must be at least 2, not {processes}')
  if batch_size % processes:
    raise UserError(f'the batch size {batch_size} must split evenly over {processes} processes')
  rows = [time_processes(n, batch_size, steps, repeats) for n in (1, processes)]
  for row in rows:
    row['efficiency'] = row['samples_per_s'] / (row['processes'] * rows[0]['samples_per_s'])
  return rows


def format_scaling(rows: list[dict], batch_size: int) -> str:
  lines = [
    '| processes (1 CPU device each) | global batch | samples/s | efficiency |',
    '|---|---|---|---|',
  ]
  lines += [f'| {r["processes"]} | {batch_size} | {r["samples_per_s"]:,.0f} | {r["efficiency"]:.0%} |' for r in rows]
  return '\n'.join(lines) + '\n'
