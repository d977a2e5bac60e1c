"""Where a run's wall time goes: named phases, with lowering and XLA compilation counted apart wherever they happen."""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

import jax

# JAX reports how long each lowering to MLIR and each backend compile took (a compile that loads the program
# from a persistent compilation cache, JAX_COMPILATION_CACHE_DIR, included); their sum is a run's compile time.
# (Tracing is left to the phase it happens in: traces nest, and their reported durations would overlap.)
_COMPILE_EVENTS = (
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
  '/jax/core/compile/backend_compile_duration',
)
_compiled = [0.0, 0, 0]  # in this process so far: seconds compiling, backend compilations, of them read from a cache


def _count_compiles(event: str, duration: float, **_) -> None:
  if event in _COMPILE_EVENTS:
    _compiled[0] += duration
  if event == _COMPILE_EVENTS[-1]:
    _compiled[1] += 1


def _count_cache_hits(event: str, **_) -> None:
  if event == '/jax/compilation_cache/cache_hits':
    _compiled[2] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compiles)
jax.monitoring.register_event_listener(_count_cache_hits)


def compile_seconds() -> float:
  """Seconds this process has spent lowering and compiling JAX programs."""
  return _compiled[0]


def compile_count() -> int:
  """XLA programs compiled, or loaded from a persistent compilation cache, in this process so far.

  A program already compiled in this process is neither compiled nor loaded again."""
  return _compiled[1]


def cache_hits() -> int:
  """Of `compile_count()`, the programs read back from a persistent compilation cache instead of compiled."""
  return _compiled[2]


def untimed(name: str):
  """A stand-in for `Phases` that times nothing."""
  return contextlib.nullcontext()


class Phases:
  """Wall time by phase since creation: `with phases('train'):` adds to 'train' all but the compiling inside.

  Phases do not nest. `summary()` adds 'compile' and 'other' (what no phase covered) and the total.
  """

  def __init__(self):
    self.start, self.compile_start = time.perf_counter(), compile_seconds()
    self.programs_start = (compile_count(), cache_hits())
    self.seconds: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    tic, compiled = time.perf_counter(), compile_seconds()
    try:
      yield
    finally:
      self.seconds[name] += (time.perf_counter() - tic) - (compile_seconds() - compiled)

  def add(self, summary: dict[str, float]) -> None:
    """Adds the phases of another `summary()` (a run this one waited for); what `summary` derives itself
    (compile, counted process-wide already; other; total) is left out."""
    for name, seconds in summary.items():
      if name not in ('compile', 'other', 'total'):
        self.seconds[name] += seconds

  def summary(self) -> dict[str, float]:
    """Seconds per phase, 'compile', 'other' and 'total', rounded to milliseconds."""
    total = time.perf_counter() - self.start
    seconds = {**self.seconds, 'compile': compile_seconds() - self.compile_start}
    seconds['other'] = max(total - sum(seconds.values()), 0.0)
    return {name: round(value, 3) for name, value in {**seconds, 'total': total}.items()}

  def describe(self) -> str:
    """'train 91% (180.2 s), compile 2% (3.1 s), ...; 12 programs compiled, 40 read from the compilation cache'
    of the time so far, largest first."""
    summary = self.summary()
    total = max(summary.pop('total'), 1e-9)
    parts = sorted(summary.items(), key=lambda item: -item[1])
    loaded, read = compile_count() - self.programs_start[0], cache_hits() - self.programs_start[1]
    phases = ', '.join(f'{name} {100 * value / total:.0f}% ({value:.1f} s)' for name, value in parts)
    return f'{phases}; {loaded - read} programs compiled, {read} read from the compilation cache'
