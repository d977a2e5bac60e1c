"""What a run's numbers depend on besides its config and data: library versions, device, CPU and cores.

XLA:CPU shares some reductions and matmuls among the threads a process has, so the same run on
another CPU or with another number of cores can differ in the last bits (docs/results.md,
Reproducibility). Runs on one machine whose `describe()` agree, on the same config and data, are
the ones to compare to the last digit.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata


def _cpuinfo(field: str) -> str | None:
  """The first value of `field` in /proc/cpuinfo (Linux), or None."""
  try:
    with open('/proc/cpuinfo') as stream:
      return next((line.split(':', 1)[1].strip() for line in stream if line.startswith(field)), None)
  except OSError:  # not Linux
    return None


def cpu_model() -> str:
  """The CPU's model name ('model name' in /proc/cpuinfo on Linux), or what `platform` knows."""
  return _cpuinfo('model name') or platform.processor() or platform.machine() or 'unknown'


def cpu_flags() -> str:
  """The instruction set extensions the CPU reports ('flags' in /proc/cpuinfo on Linux), or ''."""
  return _cpuinfo('flags') or ''


def cores() -> int:
  """The cores this process may run on (its affinity, where the OS has one)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def _package_version() -> str:
  try:
    return metadata.version('elemnet_jax')
  except metadata.PackageNotFoundError:  # run from a source tree that was not installed
    return 'not installed'


def describe() -> dict:
  """This process's versions, devices, CPU, cores and XLA flags, as a run records them."""
  import flax  # here, so that `cores()` costs a featurizer's worker processes no imports
  import jax
  import jaxlib
  import numpy as np
  import optax

  device = jax.devices()[0]
  return {
    'elemnet_jax': _package_version(),
    'jax': jax.__version__,
    'jaxlib': jaxlib.__version__,
    'flax': flax.__version__,
    'optax': optax.__version__,
    'numpy': np.__version__,
    'platform': device.platform,
    'device_kind': device.device_kind,
    'devices': jax.device_count(),
    'processes': jax.process_count(),
    'cpu': cpu_model(),
    'cores': cores(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
