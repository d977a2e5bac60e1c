"""Writing outputs so that a crash or kill never leaves a half-written file, nor loses a run being replaced."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from elemnet_jax.errors import UserError


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike, mode: str = 'w') -> Iterator[IO]:
  """Opens a sibling temporary file; renames it over `path` only when the block succeeds.

  The temporary name is hidden and ours (`.out.csv.elemnet_jax.tmp`), so that no file of the user's
  (an `out.csv.tmp`, say) is overwritten, and the same each time, so that one left by a kill is reused.
  """
  path = Path(path)
  temporary = path.with_name(f'.{path.name}.elemnet_jax.tmp')
  try:  # closed by the `with` below, before the rename
    stream = open(temporary, mode) if 'b' in mode else open(temporary, mode, newline='')
  except OSError as error:  # named by the path the user gave, not the temporary one
    raise UserError(f'{path}: cannot be written ({error.strerror or error})') from None
  try:
    with stream:
      yield stream
    try:
      os.replace(temporary, path)
    except OSError as error:
      raise UserError(f'{path}: cannot be written ({error.strerror or error})') from None
  finally:
    temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  with open_for_writing(path) as stream:
    stream.write(text)


def save_figure(figure, path: Path) -> None:
  """A matplotlib figure as PNG, through a temporary sibling as the text files are."""
  with open_for_writing(path, 'wb') as stream:
    figure.savefig(stream, format='png', dpi=120)


REPLACED = 'replaced'


def set_aside(directory: Path, names: tuple[str, ...], finished: bool = False) -> Path | None:
  """Moves the named outputs of an earlier run into ``directory/replaced/``; None when there are none.

  They stay there until the run replacing them finishes (`discard_set_aside`), so a replacement that
  diverges or is killed loses nothing. Where ``replaced/`` exists already, the outputs present are
  those of such an unfinished replacement: they are deleted and the older run stays set aside,
  unless they are `finished` (then they replace it). The moves go through ``replaced.partial/``,
  which a set-aside cut short leaves to be completed by the next.
  """
  present = [directory / name for name in names if (directory / name).exists()]
  aside, partial = directory / REPLACED, directory / (REPLACED + '.partial')
  if aside.exists() and not finished:
    for path in present:
      shutil.rmtree(path) if path.is_dir() else path.unlink()
    return aside
  _delete(aside)  # an older run set aside, displaced by a finished one
  if not (present or partial.exists()):
    return None
  partial.mkdir(exist_ok=True)
  for path in present:
    os.replace(path, partial / path.name)
  os.replace(partial, aside)
  return aside


def discard_set_aside(directory: Path) -> None:
  """Deletes ``replaced/``, and a ``replaced.partial/`` that a kill left behind."""
  _delete(directory / REPLACED)
  _delete(directory / (REPLACED + '.partial'))


def _delete(folder: Path) -> None:
  """Renamed first, so that a kill midway never leaves a part of it under its name."""
  discarded = folder.with_name(folder.name + '.discarded')
  shutil.rmtree(discarded, ignore_errors=True)
  if folder.exists():
    os.replace(folder, discarded)
    shutil.rmtree(discarded, ignore_errors=True)
