"""One error type for user mistakes, reported as one line without a traceback."""

from __future__ import annotations


class UserError(Exception):
  """A mistake in the user's input (file, column, value, flag, workdir).

  Entry points print ``error: <message>`` and exit with status 2; no traceback.
  """


def listing(items: list[str], limit: int) -> str:
  """The first `limit` items joined by '; ', then how many more there are."""
  more = f'; ... and {len(items) - limit} more' if len(items) > limit else ''
  return '; '.join(items[:limit]) + more


SKIP_HINT = 'fix them or pass --config.dataset.skip_invalid=True to drop them'


def format_rows(problems: list[tuple[int, str, str]], what: str, path: str, hint: str = SKIP_HINT, limit=10) -> str:
  """One line listing up to `limit` offending rows as ``row N ('value'): reason``, then `hint`."""
  shown = listing([f'row {row} ({value!r}): {reason}' for row, value, reason in problems], limit)
  return f'{path}: {len(problems)} invalid {what} row(s): {shown} ({hint})'
