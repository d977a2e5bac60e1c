"""How a command ends on Ctrl-C or SIGTERM: one line, status 130 or 143, the last checkpoint kept.

Python runs a signal's handler in the main thread, in whatever Python code runs there. When that code is
a garbage collector callback (JAX registers one) or an object's finalizer, Python reports the exception
the handler raised as unraisable and drops it, and the signal with it: `redeliver` sends such a signal
again.
"""

from __future__ import annotations

import _thread
import contextlib
import logging as python_logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

from elemnet_jax import lock


class Terminated(BaseException):
  """SIGTERM, raised where the program is so that it ends like Ctrl-C does."""


class Preempted(Terminated):
  """SIGTERM to a joined run of several processes, raised on all of them after the same epoch."""


def _terminate(signum, frame) -> None:
  raise Terminated()


def catch_sigterm() -> None:
  """From now on SIGTERM raises Terminated in the main thread, as SIGINT raises KeyboardInterrupt."""
  signal.signal(signal.SIGTERM, _terminate)


def redeliver(error: BaseException | None) -> bool:
  """Sends the signal behind `error`, an interruption Python dropped, to this process again; False for any other
  error. A new thread sends it a moment later, once the code that dropped it has returned (a handler that ran
  inside it would be dropped again); this returns at once, without waiting for that thread."""
  if isinstance(error, Terminated):
    signum = signal.SIGTERM
  elif isinstance(error, KeyboardInterrupt):
    signum = signal.SIGINT
  else:
    return False
  _thread.start_new_thread(_send_later, (signum,))
  return True


def _send_later(signum: int) -> None:
  time.sleep(_REDELIVERY_DELAY_S)
  os.kill(os.getpid(), signum)


_REDELIVERY_DELAY_S = 0.05


@contextlib.contextmanager
def held(*signums: int) -> Iterator[None]:
  """Holds the signals `signums` back until the block ends, then delivers the first that came (nothing is held
  outside the main thread, where Python runs no handler)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  arrived, previous = [], {signum: signal.getsignal(signum) for signum in signums}
  for signum in previous:
    signal.signal(signum, lambda signum, frame: arrived.append(signum))
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    if arrived:
      handler = previous[arrived[0]]
      if callable(handler):
        handler(arrived[0], None)
      elif handler != signal.SIG_IGN:
        os.kill(os.getpid(), arrived[0])


def end(
  interrupt: BaseException, describe: Callable[[], str], before_exit: Callable[[], None] | None = None
) -> NoReturn:
  """Prints `describe()` and ends the process with 143 (SIGTERM) or 130 (Ctrl-C) without the interpreter's teardown.

  A signal interrupts the wait for an XLA compile, not the compile on XLA's own threads; tearing the runtime
  down under it crashes the process. What must be complete is by then: training waits for the checkpoint
  being written when it stops; here the log is flushed, the workdir's lock removed and `before_exit` run.
  Further signals are ignored from the start.
  """
  for name in (signal.SIGINT, signal.SIGTERM):
    signal.signal(name, signal.SIG_IGN)
  print(describe(), file=sys.stderr)
  lock.release_all()
  if before_exit is not None:
    before_exit()
  python_logging.shutdown()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
      pass
  os._exit(143 if isinstance(interrupt, Terminated) else 130)
