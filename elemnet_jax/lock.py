"""One process per workdir: a lock file holding the owner's pid and host, taken over when its owner is gone.

The file is created with O_EXCL, so of two processes starting at once exactly one gets it. A lock
whose process no longer runs on this host (killed, or the machine restarted) is stale and taken
over; a lock from another host is honoured, since no process there can be checked from here.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from elemnet_jax.errors import UserError

LOCK_FILE = '.elemnet_jax.lock'


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # runs, as another user
    return True
  return True


def holder(directory: str | os.PathLike) -> dict | None:
  """Who holds the lock of `directory` ({'pid', 'host', 'since'}); None when free, stale or held by this process."""
  return holder_of(Path(directory) / LOCK_FILE)


def holder_of(path: Path) -> dict | None:
  try:
    owner = json.loads(path.read_text())
    pid, host = int(owner['pid']), str(owner['host'])
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError):  # cut short while being written: read as stale
    return None
  if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
    return None
  return owner


def describe(owner: dict) -> str:
  return f'process {owner["pid"]} on {owner["host"]} (since {owner.get("since", "?")})'


def check(directory: str | os.PathLike, kind: str = 'run') -> None:
  """Refuses a workdir another live process holds: one line naming it."""
  owner = holder(directory)
  if owner:
    here = owner['host'] == socket.gethostname()  # a process on another host cannot be checked from here
    elsewhere = '' if here else f'; if none runs there any more, delete {Path(directory) / LOCK_FILE}'
    raise UserError(
      f'{directory}: in use by {describe(owner)} (a {kind}); wait for it to end or choose another --workdir{elsewhere}'
    )


_HELD: set[Path] = set()


def acquire(directory: str | os.PathLike, kind: str = 'run') -> None:
  """Takes the lock of `directory` (created if needed) for this process, until `release` or exit."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / LOCK_FILE
  record = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.strftime('%Y-%m-%d %H:%M:%S')})
  for _ in range(3):
    try:
      descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      check(directory, kind)  # held by a live process: refused
      _take_over(path, directory, kind)
      continue
    with os.fdopen(descriptor, 'w') as stream:
      stream.write(record)
    _HELD.add(path)
    return
  check(directory, kind)
  raise UserError(f'{directory}: its lock ({LOCK_FILE}) cannot be taken; another run is starting there')


def _take_over(path: Path, directory: Path, kind: str) -> None:
  """Moves a stale lock aside; one that turns out live (taken meanwhile by another process) is put back."""
  aside = directory / f'{LOCK_FILE}.{os.getpid()}'
  try:
    os.replace(path, aside)
  except FileNotFoundError:
    return
  owner = holder_of(aside)
  if owner:
    os.replace(aside, path)
    check(directory, kind)
  aside.unlink(missing_ok=True)


def release(directory: str | os.PathLike) -> None:
  """Removes the lock of `directory` if this process holds it."""
  path = Path(directory) / LOCK_FILE
  if path not in _HELD:
    return
  _HELD.discard(path)
  try:
    owner = json.loads(path.read_text())
  except (OSError, ValueError):
    return
  if owner.get('pid') == os.getpid() and owner.get('host') == socket.gethostname():
    path.unlink(missing_ok=True)


@atexit.register
def release_all() -> None:
  """Removes every lock this process holds (at exit, or before a process ends without its exit handlers)."""
  for path in list(_HELD):
    release(path.parent)
