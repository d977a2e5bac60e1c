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


_PATH_FLAGS = ('workdir', 'pretrained', 'models', 'input')  # given empty, a path would mean the current folder


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with its mistakes reported as one line and status 2 like the rest."""
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, ValueError) as error:  # ValueError: e.g. a config file's unknown variant, NAME.py:kind
    lines = str(error).strip().splitlines()  # a config file's own error comes with its traceback: keep the last line
    _fail(lines[0] if len(lines) == 1 else f'{lines[0]} {lines[-1]}')
  except (AttributeError, KeyError) as error:  # ml_collections: an override of a field the config lacks
    text = error
    while isinstance(text, BaseException):  # the KeyError may come wrapped in an AttributeError
      text = text.args[0] if text.args else ''
    field = re.search(r"'([^']+)'", str(text))
    field = field.group(1) if field else str(text)
    given = [arg for arg in argv[1:] if f'.{field}.' in arg.split('=')[0] + '.']
    hint = re.search(r'Did you mean "([^"]+)"', str(text))
    _fail(
      f'{given[0] if given else field}: the config has no field {field!r}'
      + (f' (did you mean {hint.group(1)!r}?)' if hint else '')
    )
  for name in _PATH_FLAGS:
    if name in flags.FLAGS and flags.FLAGS[name].present and not flags.FLAGS[name].value:
      _fail(f'--{name} is empty')
  return rest


def run(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)`, but a UserError ends the program with ``error: ...`` and status 2."""

  def wrapped(argv):
    python_logging.getLogger('absl').addFilter(_QuietLibraries())
    if _DISTRIBUTED.value:
      jax.distributed.initialize()
    try:
      return main(argv)
    except (UserError, OSError) as error:  # OSError: a path the user gave (unwritable, missing, disk full)
      _fail(str(error))

  app.run(wrapped, flags_parser=_parse_flags)
