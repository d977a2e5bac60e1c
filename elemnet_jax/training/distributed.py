"""Several processes, one data-parallel run: JAX's runtime joins them and process 0 alone writes.

`jax.distributed.initialize` joins the processes (one per host, or per GPU) into one set of devices,
which `train.data_mesh` spans. Every process loads the same data and runs the same compiled programs;
device d of D computes rows [d*B/D, (d+1)*B/D) of every global minibatch of B rows, and the gradients
are summed over the mesh, so the result is that of one process with the same global batch. Only
process 0 writes files; what it reads back (a checkpoint being resumed) reaches the others by a broadcast.
A process that is done waits at its exit (`jax.distributed.shutdown`) until every other one is; so do
the processes that a SIGTERM stopped together (`preempted`, then `leave`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from elemnet_jax.errors import UserError


def initialize(
  coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, timeout: int = 100
) -> None:
  """Joins this process to the others: with the arguments given, else as the environment says (SLURM, Cloud TPU...).

  A process that hears nothing from another for `timeout` seconds (killed, or failed) ends, and so does one
  whose exit waits that long for the others.
  """
  try:
    jax.distributed.initialize(
      coordinator, num_processes, process_id, heartbeat_timeout_seconds=timeout, shutdown_timeout_seconds=timeout
    )
  except (RuntimeError, ValueError, TypeError) as error:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(
      f'--distributed: cannot join the other processes ({first}); give --coordinator=HOST:PORT, '
      '--num_processes and --process_id, or run under a cluster manager JAX knows (SLURM, Open MPI)'
    ) from None
  logging.info(
    'process %d of %d: %d of %d devices (%s)',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.default_backend(),
  )


def count() -> int:
  return jax.process_count()


def is_writer() -> bool:
  """Whether this process writes the files: process 0."""
  return jax.process_index() == 0


def holds_sigterm() -> bool:
  """Whether JAX's preemption notifier catches SIGTERM: `jax.distributed.initialize` installs it (with its
  preemption service on), for any number of processes."""
  return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


def preempted(epoch: int) -> bool:
  """True on every process of a joined run at the same `epoch` once any of them was sent SIGTERM.

  JAX's coordination service catches SIGTERM (a preemption notice) and agrees on the epoch at which
  all stop; every process must call this after every epoch. False when the processes are not joined.
  """
  return holds_sigterm() and multihost_utils.reached_preemption_sync_point(epoch)


def leave() -> None:
  """Disconnects from the others, waiting until every process does (process 0 hosts the service: it must
  not go first)."""
  if jax.distributed.is_initialized():
    jax.distributed.shutdown()


def barrier(name: str) -> None:
  """Waits until every process gets here (nothing to wait for with one process)."""
  if count() > 1:
    multihost_utils.sync_global_devices(name)


def check_same(what: str, text: str, hint: str) -> None:
  """Refuses, with one line on every process, a `text` (a config, a data fingerprint) that differs between processes."""
  if count() == 1:
    return
  mine = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
  every = np.asarray(multihost_utils.process_allgather(mine))  # [processes, 32]
  differ = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
  if differ:
    raise UserError(
      f'processes disagree on the {what}: process {differ[0]} has sha256 {every[differ[0]].tobytes().hex()[:12]}, '
      f'process 0 {every[0].tobytes().hex()[:12]}; {hint}'
    )


def check_config(config_json: str, data_parallel: bool) -> None:
  """Every process runs the same config, data parallel when there are several: one line otherwise."""
  check_same('config', config_json, 'start every process with the same flags and config file')
  if count() > 1 and not data_parallel:
    raise UserError(f'{count()} processes train one model only data parallel: pass --config.train.data_parallel=True')


def from_writer(tree: Any) -> Any:
  """Process 0's `tree` (arrays of one shape on every process) on every process, as NumPy arrays."""
  return multihost_utils.broadcast_one_to_all(tree) if count() > 1 else tree


def from_writer_json(value: Any) -> Any:
  """Process 0's JSON-serialisable `value` on every process."""
  if count() == 1:
    return value
  data = np.frombuffer(json.dumps(value).encode(), np.uint8) if is_writer() else np.zeros(0, np.uint8)
  size = int(from_writer(np.int64(data.size)))
  padded = np.zeros(size, np.uint8)
  padded[: min(size, data.size)] = data[:size]
  return json.loads(from_writer(padded).tobytes().decode())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`tree` on every device of `mesh` (all processes'): each process gives its own copy of the same values."""
  if count() > 1:  # a global array is made from host values; a process's device arrays are copied out first
    tree = jax.tree.map(lambda a: np.asarray(a) if isinstance(a, jax.Array) and a.is_fully_addressable else a, tree)
  return jax.device_put(tree, NamedSharding(mesh, P()))


def local(tree: Any) -> Any:
  """A replicated tree's copy on one device of this process: what each process evaluates and saves."""

  def one(a):
    if isinstance(a, jax.Array) and len(a.sharding.device_set) > 1 and a.sharding.is_fully_replicated:
      return a.addressable_data(0)
    return a

  return jax.tree.map(one, tree)


@contextlib.contextmanager
def writer_only(context: contextlib.AbstractContextManager) -> Iterator[None]:
  """`context` (e.g. a log file) entered on process 0; a no-op on the others."""
  with context if is_writer() else contextlib.nullcontext():
    yield
