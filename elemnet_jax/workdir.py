"""Workdirs: one lifecycle for training runs and studies, and writes that a kill never half-does.

A workdir is new, interrupted (its config and progress are there: it resumes when started again
with the same config and sources) or finished (refused unless `overwrite`). The outputs of a run
being replaced are set aside in ``replaced/`` until the replacement finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging as python_logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from elemnet_jax import lock, migrations
from elemnet_jax.errors import UserError, listing
from elemnet_jax.outputs import open_for_writing, replaces, save_figure, write_text  # noqa: F401 - used here and by callers


def differences(saved: Any, current: Any, prefix: str = '') -> list[str]:
  """Dotted names of the fields in which two JSON trees differ (a field only one of them has differs)."""
  if isinstance(saved, dict) and isinstance(current, dict):
    return [
      name
      for key in sorted(saved.keys() | current.keys())
      for name in differences(saved.get(key, _ABSENT), current.get(key, _ABSENT), f'{prefix}{key}.')
    ]
  return [] if saved == current else [prefix.rstrip('.')]


_ABSENT = object()


def read_config(path: Path, missing: str = 'the run did not finish') -> dict:
  """A recorded config (config.json, study_config.json) in the current layout (`migrations`)."""
  try:
    return migrations.migrate(read_json(path, missing), str(path))
  except ValueError as error:
    raise UserError(str(error)) from None


def config_differences(saved_path: Path, config: dict) -> list[str]:
  """The fields in which the config saved at `saved_path` differs from `config`: 'train.max_epochs: 3, now 5'."""
  try:
    saved = migrations.migrate(json.loads(Path(saved_path).read_text()))
  except (OSError, ValueError, AttributeError):
    return [f'{Path(saved_path).name} unreadable']
  current = json.loads(json.dumps(config))
  return [f'{name}: {_at(saved, name)}, now {_at(current, name)}' for name in differences(saved, current)]


def _at(tree: Any, dotted: str) -> str:
  for key in dotted.split('.'):
    tree = tree.get(key, 'absent') if isinstance(tree, dict) else 'absent'
  return json.dumps(tree)


def read_json(path: Path, missing: str) -> dict:
  """A JSON record (config.json, metrics.json); missing or corrupted: one line naming the file."""
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f'{path}: missing; {missing}') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise UserError(f'{path}: corrupted ({error})') from None


def digests(run_dirs: Sequence[str | os.PathLike]) -> dict[str, str]:
  """Each finished run named -> the SHA-256 of its metrics.json, which training it again rewrites."""
  for name in run_dirs:  # a run without its record did not finish: one line, not a traceback
    read_json(Path(name) / 'metrics.json', 'the run did not finish')
  return {str(name): hashlib.sha256((Path(name) / 'metrics.json').read_bytes()).hexdigest() for name in run_dirs}


@dataclasses.dataclass(frozen=True)
class Layout:
  """What one kind of workdir holds."""

  kind: str  # 'run' or 'study', for messages
  config: str  # the file the config is recorded in
  progress: str  # what an interrupted one resumes from
  record: str  # JSON written last; finished unless it says "finished": false
  outputs: tuple[str, ...]  # set aside when replaced; the config file last


SOURCES = 'sources.json'


RECORD = 'workdir.json'  # written first by every run or study: the folder is ours, and what it writes


class Workdir:
  """The lifecycle of one workdir: `check_*` before any work, `start` once inputs are valid, `finish` at the end.

  A folder holding files but no record of a run or study (``workdir.json``, or the config and
  progress an earlier version wrote) is refused: nothing in it is moved or deleted. One process at
  a time writes a workdir (`lock`).
  """

  def __init__(self, path: str | os.PathLike, layout: Layout, config: dict, overwrite: bool = False):
    self.path, self.layout, self.config, self.overwrite = Path(path), layout, config, overwrite
    self.data_digest: str | None = None
    self.resume = self._examine()

  def _examine(self) -> bool:
    """Whether to resume; refuses a folder of someone else's files, one in use, or one that cannot be reused."""
    layout, path = self.layout, self.path
    if path.exists() and not path.is_dir():
      raise UserError(f'{path}: not a folder; choose another --workdir')
    lock.check(path, layout.kind)
    foreign = self.foreign_files()
    if foreign:
      raise UserError(
        f'{path}: holds files that no {layout.kind} wrote ({listing(foreign, 5)}); nothing there is moved or '
        'deleted: choose a new or empty --workdir'
      )
    if self.finished():
      if not self.overwrite:
        raise UserError(
          f'{path}: holds a finished {layout.kind} ({layout.record}); choose another --workdir or pass '
          '--overwrite to replace it'
        )
      return False
    saved = path / layout.config
    if self.overwrite or not (saved.exists() and (path / layout.progress).exists()):
      return False
    changed = config_differences(saved, self.config)
    if changed:
      raise UserError(
        f'{path}: holds an interrupted {layout.kind} with a different config ({", ".join(changed)}); resume it '
        'with the same flags, choose another --workdir, or pass --overwrite'
      )
    return True

  def foreign_files(self) -> list[str]:
    """The entries of a folder that holds no record of ours (those of a run of ours inside it excepted)."""
    if not self.path.is_dir() or self.record() is not None or self._recorded_by_earlier_version():
      return []
    ours = {lock.LOCK_FILE, RECORD}
    return sorted(
      entry.name
      for entry in self.path.iterdir()
      if entry.name not in ours and not (entry.is_dir() and (entry / RECORD).is_file())
    )

  def record(self) -> dict | None:
    try:
      found = json.loads((self.path / RECORD).read_text())
    except (OSError, ValueError):
      return None
    return found if isinstance(found, dict) else None

  def _recorded_by_earlier_version(self) -> bool:
    """A workdir written before workdir.json existed: its config (a JSON object) and its progress or record."""
    layout = self.layout
    if not ((self.path / layout.progress).exists() or (self.path / layout.record).exists()):
      return False
    try:
      return isinstance(json.loads((self.path / layout.config).read_text()), dict)
    except (OSError, ValueError):
      return False

  def finished(self) -> bool:
    try:
      return bool(json.loads((self.path / self.layout.record).read_text()).get('finished', True))
    except (OSError, ValueError, AttributeError):  # absent or cut short: not finished
      return False

  def check_data(self, digest: str) -> None:
    """An interrupted workdir resumes only on the data it started on (the SHA-256 `digest` of it)."""
    self.data_digest = digest
    before = (self.record() or {}).get('data_sha256')
    if self.resume and before and before != digest:
      raise UserError(
        f'{self.path}: the training data changed since this {self.layout.kind} started; pass --overwrite to '
        'start over on the data as it is now, or restore the data to resume'
      )

  def check_sources(self, sources: dict[str, str]) -> None:
    """An interrupted workdir resumes only from the source runs it started from, as they were then."""
    record = self.path / SOURCES
    if not self.resume or not record.exists():
      return
    started = list(read_json(record, 'the run did not finish').values())  # by position: names may differ
    if len(started) != len(sources):
      raise UserError(
        f'{self.path}: holds an interrupted {self.layout.kind} started from {len(started)} source run(s), not '
        f'{len(sources)}; pass --overwrite to start over'
      )
    for name, digest, before in zip(sources, sources.values(), started):
      if digest != before:
        raise UserError(
          f'{self.path}: holds an interrupted {self.layout.kind} started from {name} as it was before it was trained '
          'again; pass --overwrite to start over from the run it holds now'
        )

  def start(self, sources: dict[str, str] | None = None) -> None:
    """Takes the lock, records the workdir, sets earlier outputs aside unless resuming, records the config."""
    lock.acquire(self.path, self.layout.kind)
    if self._examine() != self.resume:  # another process changed it since it was examined
      raise UserError(f'{self.path}: changed while this {self.layout.kind} was starting; run the command again')
    outputs = (SOURCES,) + self.layout.outputs
    record = {'kind': self.layout.kind, 'writes': [RECORD, *outputs, REPLACED]}
    if self.data_digest:
      record['data_sha256'] = self.data_digest
    write_text(self.path / RECORD, json.dumps(record, indent=1))
    if not self.resume:
      aside = set_aside(self.path, outputs, finished=self.finished())
      if aside:
        logging.warning(
          '%s: the %s it replaces is kept in %s until this one finishes', self.path, self.layout.kind, aside
        )
    write_text(self.path / self.layout.config, json.dumps(migrations.record(self.config), indent=2))
    if sources and not self.resume:
      write_text(self.path / SOURCES, json.dumps(sources, indent=1))
    _STARTED.append(self)

  def finish(self) -> None:
    discard_set_aside(self.path)
    if self in _STARTED:
      _STARTED.remove(self)
    lock.release(self.path)

  def where_interrupted(self) -> str:
    """'at epoch N' (the latest checkpoint, for a run), or '' when the progress is not counted in epochs."""
    progress = self.path / self.layout.progress
    if not progress.is_dir():
      return ''
    epochs = [int(entry.name) for entry in progress.iterdir() if entry.name.isdigit()]
    return f' at epoch {max(epochs, default=0)}'


_STARTED: list[Workdir] = []  # started and not finished, innermost last


def started() -> list[Workdir]:
  """The workdirs this process started and has not finished, innermost last."""
  return list(_STARTED)


def interruption_message() -> str:
  """What a Ctrl-C or SIGTERM leaves: the line the command ends with."""
  if not _STARTED:
    return 'interrupted; this process wrote nothing'
  return f'interrupted{_STARTED[-1].where_interrupted()}; run the same command to resume'


_NOISY = ('/orbax/', '/etils/')


class QuietLibraries(python_logging.Filter):
  """Drops INFO chatter of orbax and friends, and their threads' and asyncio tasks' reports of errors raised again
  in ours (asyncio's "Task exception was never retrieved" for orbax's other writes of a failed save)."""

  def filter(self, record: python_logging.LogRecord) -> bool:
    orbax_task = record.name == 'asyncio' and any(n in str(record.msg) for n in _NOISY)
    if not (orbax_task or any(n in record.pathname for n in _NOISY)):
      return True
    if record.exc_info or 'raised an exception' in str(record.msg):
      return False  # an orbax thread's error, raised again where we report it (an asynchronous save's at the next)
    return record.levelno >= python_logging.WARNING


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
  """Appends the absl log (INFO and up) to `path` while the block runs."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handler = python_logging.FileHandler(path)
  handler.setFormatter(python_logging.Formatter('%(asctime)s %(levelname)s %(message)s', '%Y-%m-%d %H:%M:%S'))
  handler.setLevel(python_logging.INFO)
  handler.addFilter(QuietLibraries())
  logger = python_logging.getLogger('absl')
  level = logger.level
  logger.addHandler(handler)
  if logger.getEffectiveLevel() > python_logging.INFO:  # the file gets INFO whatever the console shows
    logger.setLevel(python_logging.INFO)
  try:
    yield
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)
    handler.close()


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
