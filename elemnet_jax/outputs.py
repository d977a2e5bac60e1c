"""Writing an output file so that a kill, a full disk or an odd path never loses what was there."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from elemnet_jax.errors import UserError


def replaces(path: str | os.PathLike) -> bool:
  """Whether writing `path` replaces an existing file (a link's target counts); not so for '-', devices and fifos."""
  return str(path) != '-' and Path(path).is_file()


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike, mode: str = 'w') -> Iterator[IO]:
  """Opens a sibling temporary file; renames it over `path` only when the block succeeds.

  The temporary name is hidden and ours (`.out.csv.elemnet_jax.tmp`), so that no file of the user's
  (an `out.csv.tmp`, say) is overwritten, and the same each time, so that one left by a kill is reused.
  A symbolic link is followed: its target is replaced, the link stays. `-` is standard output, and a
  path that exists but is not a regular file (a device such as /dev/null, a fifo) is written
  through, never replaced.
  """
  if str(path) == '-':
    stream = sys.stdout.buffer if 'b' in mode else sys.stdout
    yield stream
    stream.flush()
    return
  path = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
  if path.is_dir():
    raise UserError(f'{path}: is a folder, not a file')
  if path.exists() and not path.is_file():
    with _opened(path, path, mode) as stream:
      yield stream
    return
  temporary = path.with_name(f'.{path.name}.elemnet_jax.tmp')
  try:
    with _opened(temporary, path, mode) as stream:
      yield stream
    try:
      os.replace(temporary, path)
    except OSError as error:
      raise UserError(f'{path}: cannot be written ({error.strerror or error})') from None
  finally:
    temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def _opened(path: Path, named: Path, mode: str) -> Iterator[IO]:
  """`path` open for writing; an OSError (disk full, say) is one line naming `named`, the path the user gave."""
  try:
    stream = open(path, mode) if 'b' in mode else open(path, mode, newline='')
  except OSError as error:
    raise UserError(f'{named}: cannot be written ({error.strerror or error})') from None
  try:
    with stream:
      yield stream
  except OSError as error:  # raised by a write or by the close that flushes
    raise UserError(f'{named}: cannot be written ({error.strerror or error})') from None


def write_text(path: str | os.PathLike, text: str) -> None:
  with open_for_writing(path) as stream:
    stream.write(text)


def save_figure(figure, path: Path) -> None:
  """A matplotlib figure as PNG at `path` and as SVG beside it, each through a temporary sibling."""
  with open_for_writing(path, 'wb') as stream:
    figure.savefig(stream, format='png', dpi=120)
  with open_for_writing(path.with_suffix('.svg'), 'wb') as stream:
    figure.savefig(stream, format='svg')
