"""Experiments beside the package: each module is a `python -m experiments.NAME` command."""

import os
import shutil


def pinnable_cores() -> list[int]:
  """This process's cores, which `taskset` can pin a child to; a one-line error where it cannot."""
  if not hasattr(os, 'sched_getaffinity') or shutil.which('taskset') is None:
    raise SystemExit('error: pinning to cores needs Linux and taskset (util-linux)')
  return sorted(os.sched_getaffinity(0))
