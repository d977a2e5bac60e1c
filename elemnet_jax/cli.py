"""What every entry point shares: quiet library logs, and user errors as one line."""

from __future__ import annotations

import logging as python_logging
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


def run(main: Callable[[list[str]], object]) -> None:
  """`absl.app.run(main)`, but a UserError ends the program with ``error: ...`` and status 2."""

  def wrapped(argv):
    python_logging.getLogger('absl').addFilter(_QuietLibraries())
    if _DISTRIBUTED.value:
      jax.distributed.initialize()
    try:
      return main(argv)
    except UserError as error:
      print(f'error: {error}', file=sys.stderr)
      sys.exit(2)
    except OSError as error:  # a path the user gave: unwritable folder, missing directory, full disk
      print(f'error: {error}', file=sys.stderr)
      sys.exit(2)

  app.run(wrapped)
