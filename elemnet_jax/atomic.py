"""Writing output files so that a crash or kill never leaves a half-written one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def open_for_writing(path: str | os.PathLike) -> Iterator[TextIO]:
  """Opens a sibling temporary file; renames it over `path` only when the block succeeds."""
  path = Path(path)
  temporary = path.with_name(path.name + '.tmp')
  try:
    with open(temporary, 'w', newline='') as stream:
      yield stream
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
  with open_for_writing(path) as stream:
    stream.write(text)
