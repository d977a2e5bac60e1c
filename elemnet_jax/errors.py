"""One error type for user mistakes, reported as one line without a traceback."""

from __future__ import annotations


class UserError(Exception):
  """A mistake in the user's input (file, column, value, flag, workdir).

  Entry points print ``error: <message>`` and exit with status 2; no traceback.
  """


def format_rows(problems: list[tuple[int, str, str]], what: str, path: str, limit: int = 10) -> str:
  """One line listing up to `limit` offending rows as ``row N ('value'): reason``."""
  shown = '; '.join(f'row {row} ({value!r}): {reason}' for row, value, reason in problems[:limit])
  more = f'; ... and {len(problems) - limit} more' if len(problems) > limit else ''
  return (
    f'{path}: {len(problems)} invalid {what} row(s): {shown}{more} (fix them or set skip_invalid=True to drop them)'
  )
