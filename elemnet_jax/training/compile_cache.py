"""Compiled XLA programs kept between commands: JAX's persistent compilation cache, on by default.

A command compiles each training, evaluation and prediction program once per shape. Run again with the
same model, batch size, data size, jax version and XLA flags, it reads the compiled programs back from
`xla/` in the data cache instead of compiling them again. They are the programs XLA compiled, so the
numbers are the same.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import warnings
from pathlib import Path

from absl import logging

from elemnet_jax.data.fetch import default_cache_dir

ENV = 'ELEMNET_JAX_XLA_CACHE'
_OFF = ('', 'off', 'none', 'false', '0')
_JAX_DIR = 'JAX_COMPILATION_CACHE_DIR'
_JAX_MIN_SECONDS = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'
_UNREADABLE = re.compile(r"Error reading persistent compilation cache entry for '([^']+)'")


def directory() -> Path | None:
  """Where commands keep compiled programs: $ELEMNET_JAX_XLA_CACHE ('off': nowhere), else `xla/` in the data
  cache ($ELEMNET_JAX_CACHE, default ~/.cache/elemnet_jax)."""
  chosen = os.environ.get(ENV)
  if chosen is not None:
    return None if chosen.strip().lower() in _OFF else Path(chosen).expanduser()
  return default_cache_dir() / 'xla'


def enable() -> Path | None:
  """Turns the cache on at `directory()` for this process and the ones it starts; the folder, or None.

  Every program is kept, however fast it compiled (the many small ones add up to about a second per
  command). Left alone: a cache JAX_COMPILATION_CACHE_DIR already chooses, and one turned off by
  ELEMNET_JAX_XLA_CACHE=off or JAX_ENABLE_COMPILATION_CACHE=false. A folder that cannot be created
  (or one this process may not write) leaves it off: the programs are then compiled, as without a cache.
  """
  if _JAX_DIR in os.environ:
    return None
  path = directory()
  if path is None:
    return None
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  if not os.access(path, os.W_OK | os.X_OK):
    return None
  os.environ[_JAX_DIR] = str(path)
  os.environ.setdefault(_JAX_MIN_SECONDS, '0')
  jax = sys.modules.get('jax')
  if jax is not None:  # already imported: JAX read its environment then
    jax.config.update('jax_compilation_cache_dir', str(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', float(os.environ[_JAX_MIN_SECONDS]))
  _repair_unreadable_entries(path)
  return path


def _repair_unreadable_entries(path: Path) -> None:
  """JAX writes an entry in place and never replaces one: an entry cut off (its writer killed) would be
  compiled again, with a library warning, by every later command. Instead the warning becomes one log
  line and that program's entries are removed, so that this command writes the program whole again."""
  show = warnings.showwarning

  def showwarning(message, category, filename, lineno, file=None, line=None):
    unreadable = _UNREADABLE.search(str(message))
    if unreadable is None:
      return show(message, category, filename, lineno, file, line)
    name = unreadable.group(1)
    for entry in path.glob(f'{glob.escape(name)}-*-cache'):
      entry.unlink(missing_ok=True)
    logging.warning('%s: the compiled program %s could not be read; compiled again and written anew', path, name)

  warnings.showwarning = showwarning
