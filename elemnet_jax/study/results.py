"""What a study records: results.json, rewritten with the report after every run, so an interrupted study resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from elemnet_jax import workdir
from elemnet_jax.configs.study_schema import StudySection
from elemnet_jax.errors import UserError
from elemnet_jax.study.plan import Arm
from elemnet_jax.study.report import write_report
from elemnet_jax.training import timing

FORMAT = 2  # of results.json


@dataclasses.dataclass
class Results:
  """What results.json holds; every recorded run is written at once, with the report."""

  path: Path
  study: StudySection
  notes: dict
  leakage: dict
  sources: dict[str, str]
  context: dict  # for the report: quantity, unit, source and target dataset names, the machine
  runs: list[dict] = dataclasses.field(default_factory=list)
  parity: dict = dataclasses.field(default_factory=lambda: {'target': None, 'predictions': {}, 'val_mae': {}})
  phases: timing.Phases = dataclasses.field(default_factory=timing.Phases)  # where this process's time went

  def done(self) -> set[tuple]:
    return {_key(Arm.of(row), row['train_fraction'], row['fold']) for row in self.runs}

  def save(self, finished: bool = False) -> None:
    record = {
      'format': FORMAT,
      'target': self.notes,
      'leakage': self.leakage,
      'sources': self.sources,
      'runs': self.runs,
      'parity': self.parity,
      'seconds': self.phases.summary(),  # of this process (a resumed study: since it resumed)
      'machine': self.context.get('machine'),  # of this process, as `seconds`
      'finished': finished,
    }
    workdir.write_text(self.path / 'results.json', json.dumps(record, indent=1))

  def record(self, rows: list[dict]) -> None:
    self.runs.extend(rows)
    self.save()
    self.report(echo=False)

  def report(self, echo: bool = True) -> str:
    return write_report(self.path, self.runs, self.leakage, self.parity, self.study, self.context, echo)


def _key(arm: Arm, fraction: float, fold: int) -> tuple:
  return (arm.method, arm.freeze_layers, arm.layer, fraction, fold)


def _previous_runs(study_dir: workdir.Workdir) -> dict:
  """The record of the interrupted study being resumed ({} when starting afresh)."""
  if not study_dir.resume:
    return {}
  try:
    previous = workdir.read_json(study_dir.path / 'results.json', 'the study did not start')
  except UserError as error:  # cut short by a full disk or by hand: its runs cannot be resumed
    raise UserError(f'{error}; pass --overwrite to start the study over') from None
  if previous.get('format') != FORMAT:
    raise UserError(
      f'{study_dir.path}/results.json: written in another format; pass --overwrite to start the study over'
    )
  return previous
