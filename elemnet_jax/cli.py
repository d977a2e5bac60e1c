"""What every entry point shares: quiet library logs, and user errors as one line."""

from __future__ import annotations

import logging as python_logging
import re
import sys
from collections.abc import Callable

import jax
from absl import app, flags

from elemnet_jax.errors import UserError

_NOISY = ('/orbax/', '/etils/')
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() first (several hosts; the coordinator '
  'comes from the environment, e.g. on Cloud TPU or SLURM). Combine with --config.train.data_parallel.',
)


class _QuietLibraries(python_logging.Filter):
  """Drops INFO chatter of orbax and friends; their warnings and errors still show."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    return record.levelno >= python_logging.WARNING or not any(n in record.pathname for n in _NOISY)


def _drop_closed_loop_reports(unraisable) -> None:
  """Drops what tensorstore reads left running by a failed orbax restore report to its closed event
  loop (`RuntimeError: Event loop is closed`, dozens of tracebacks around the one-line error)."""
  error = unraisable.exc_value
  if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
    sys.__unraisablehook__(unraisable)


def _fail(message: str) -> None:
  """Ends the program with one line and status 2; a message that carries a traceback keeps its first and last lines."""
  lines = str(message).strip().splitlines() or ['']
  print(f'error: {lines[0]}' + (f' {lines[-1]}' if len(lines) > 1 else ''), file=sys.stderr)
  sys.exit(2)


def _unknown_field(error: Exception, argv: list[str]) -> str:
  """ml_collections' error for an override of a field the config lacks, as the flag the user gave."""
  text = error
  while isinstance(text, BaseException):  # the KeyError may come wrapped in an AttributeError
    text = text.args[0] if text.args else ''
  field = re.search(r"'([^']+)'", str(text))
  given = [arg for arg in argv[1:] if field and f'.{field.group(1)}.' in arg.split('=')[0] + '.']
  if not given:  # not an override's field (e.g. an error inside a config file's own code)
    return f'{type(error).__name__}: {text}'
  hint = re.search(r'Did you mean "([^"]+)"', str(text))
  return f'{given[0]}: the config has no field {field.group(1)!r}' + (
    f' (did you mean {hint.group(1)!r}?)' if hint else ''
  )


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its mistakes reported as one line and status 2 like the rest."""
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, ValueError, OSError) as error:  # e.g. a config file's unknown variant (NAME.py:kind) or path
    _fail(str(error))
  except (AttributeError, KeyError) as error:
    _fail(_unknown_field(error, argv))
  if 'workdir' in flags.FLAGS and flags.FLAGS['workdir'].present and not flags.FLAGS.workdir:
    _fail('--workdir is empty')  # it would mean the current folder
  return rest


def run(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)`, but a UserError ends the program with ``error: ...`` and status 2."""

  def wrapped(argv):
    python_logging.getLogger('absl').addFilter(_QuietLibraries())
    sys.unraisablehook = _drop_closed_loop_reports
    if _DISTRIBUTED.value:
      jax.distributed.initialize()
    try:
      return main(argv)
    except (UserError, OSError) as error:  # OSError: a path the user gave (unwritable, missing, disk full)
      _fail(str(error))

  app.run(wrapped, flags_parser=_parse_flags)
