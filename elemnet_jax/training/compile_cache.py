"""Compiled XLA programs kept between commands: JAX's persistent compilation cache, on by default.

A command compiles each training, evaluation and prediction program once per shape. Run again on the
same CPU and number of cores, with the same model, batch size, data size, jax version and XLA flags, it
reads the compiled programs back from `xla/` in the data cache instead of compiling them again. They
are the programs XLA compiled for this CPU, so the numbers are the same.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import sys
import warnings
from pathlib import Path

from absl import logging

from elemnet_jax import machine
from elemnet_jax.data.fetch import default_cache_dir

ENV = 'ELEMNET_JAX_XLA_CACHE'
_OFF = ('', 'off', 'none', 'false', '0')
_JAX_DIR = 'JAX_COMPILATION_CACHE_DIR'
_JAX_MIN_SECONDS = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'
_UNREADABLE = re.compile(r"Error reading persistent compilation cache entry for '([^']+)'")
_UNWRITABLE = 'Error writing persistent compilation cache entry'


def directory() -> Path | None:
  """Where commands keep compiled programs: $ELEMNET_JAX_XLA_CACHE ('off': nowhere), else `xla/` in the data
  cache ($ELEMNET_JAX_CACHE, default ~/.cache/elemnet_jax)."""
  chosen = os.environ.get(ENV)
  if chosen is not None:
    return None if chosen.strip().lower() in _OFF else Path(chosen).expanduser().absolute()
  return default_cache_dir().absolute() / 'xla'


def cpu_folder() -> str:
  """The subfolder of this CPU's programs: XLA compiles for the CPU it runs on, and JAX's key does not name it."""
  return 'cpu-' + hashlib.sha256(f'{machine.cpu_model()}\n{machine.cpu_flags()}'.encode()).hexdigest()[:12]


def _chosen_elsewhere() -> bool:
  """A cache folder already set, or the cache turned off, through JAX's own settings."""
  if _JAX_DIR in os.environ or os.environ.get('JAX_ENABLE_COMPILATION_CACHE', '').lower() in ('false', '0'):
    return True
  jax = sys.modules.get('jax')
  return jax is not None and (jax.config.jax_compilation_cache_dir or not jax.config.jax_enable_compilation_cache)


def enable() -> Path | None:
  """Turns the cache on, in this CPU's folder of `directory()`, for this process and the ones it starts;
  the folder, or None.

  Every program is kept, however fast it compiled (the many small ones add up to about a second per
  command). Left alone: a cache JAX_COMPILATION_CACHE_DIR (or `jax_compilation_cache_dir`) already
  chooses, and one turned off by ELEMNET_JAX_XLA_CACHE=off or JAX_ENABLE_COMPILATION_CACHE=false. A
  folder that cannot be made or written leaves it off: the programs are then compiled, as without a cache.
  """
  if _chosen_elsewhere():
    return None
  try:
    path = directory()
    if path is None:
      return None
    path = path / cpu_folder()
    path.mkdir(parents=True, exist_ok=True)
  except (OSError, RuntimeError, KeyError):  # RuntimeError, KeyError: no home folder to expand
    return None
  if not os.access(path, os.W_OK | os.X_OK):
    return None
  os.environ[_JAX_DIR] = str(path)  # for the processes this one starts
  os.environ.setdefault(_JAX_MIN_SECONDS, '0')
  jax = sys.modules.get('jax')
  if jax is not None:  # imported already (by the command's modules): it read its environment then
    jax.config.update('jax_compilation_cache_dir', str(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', float(os.environ[_JAX_MIN_SECONDS]))
  _quiet_cache_warnings(path)
  return path


def _quiet_cache_warnings(path: Path) -> None:
  """JAX's warnings about its cache become one log line each.

  JAX writes an entry in place and never replaces one: an entry cut off (its writer killed) would be
  compiled again, with a library warning, by every later command. Such entries of the program named
  are removed (by process 0, the one that writes), so that this command writes them whole again. A
  folder that cannot be written (a full disk) is said once, and this command writes no more entries
  there; the programs are still compiled.
  """
  show, unwritable_said = warnings.showwarning, []

  def showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    unreadable = _UNREADABLE.search(text)
    if unreadable:
      removed = _remove_unreadable(path, f'{glob.escape(unreadable[1])}-*-cache')
      logging.warning(
        '%s: the compiled program %s could not be read; compiled again (%d cut-off entries removed)',
        path,
        unreadable[1],
        removed,
      )
    elif _UNWRITABLE in text:
      if not unwritable_said:
        unwritable_said.append(True)
        _stop_writing(path)
        logging.warning('%s: compiled programs cannot be kept there (%s)', path, text.split(': ', 2)[-1])
    else:
      show(message, category, filename, lineno, file, line)

  warnings.showwarning = showwarning


def _stop_writing(path: Path) -> None:
  """After a failed write (a full disk): no more entries from this process, and the one cut off removed."""
  import jax

  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 1 << 62)  # larger than any program
  _remove_unreadable(path, '*-cache')


def _remove_unreadable(path: Path, pattern: str) -> int:
  """Removes the entries matching `pattern` that do not decompress whole; how many."""
  import jax
  from jax._src import compilation_cache  # how JAX reads an entry: the check matches its own

  if jax.process_index() != 0:
    return 0
  removed = 0
  for entry in path.glob(pattern):
    try:
      compilation_cache.decompress_executable(entry.read_bytes())
    except OSError:
      continue
    except Exception:  # noqa: BLE001 - cut off or corrupt, whatever the decompressor raises
      with contextlib.suppress(OSError):  # another user's entry, say: left, and compiled again each time
        entry.unlink()
        removed += 1
  return removed
