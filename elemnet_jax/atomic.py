"""Writing output files so that a crash or kill never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from elemnet_jax.errors import UserError


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike) -> Iterator[TextIO]:
  """Opens a sibling temporary file; renames it over `path` only when the block succeeds."""
  path = Path(path)
  temporary = path.with_name(path.name + '.tmp')
  try:
    stream = open(temporary, 'w', newline='')  # closed by the `with` below, before the rename
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
