"""Several source models, one study each, and the source validation prefers (`study.choose_source=True`).

With `study.pretrained=A,B,C` a study normally joins the sources into one ensemble. Choosing instead
runs the whole study once per source, in WORKDIR/source_0, source_1, ... (each resumes on its own),
then, for every fine-tuning depth, training-set size and fold, keeps the source whose seeds have the
lowest mean validation MAE, as the cross-property transfer papers pick a source by hand. The test
MAE of the kept source is what the choice scores; test rows never take part in it. WORKDIR/choice.md
and choice.json hold the table.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import logging

from elemnet_jax import workdir
from elemnet_jax.configs.study_schema import StudyConfig
from elemnet_jax.errors import UserError

LAYOUT = workdir.Layout(
  kind='study',
  config='study_config.json',
  progress='choice.json',
  record='choice.json',
  outputs=('choice.md', 'log.txt', 'choice.json', 'study_config.json'),
)


def source_names(pretrained: str) -> list[str]:
  """The sources of `study.pretrained` (two or more, each once: `StudySection` checks)."""
  return [name.strip() for name in pretrained.split(',') if name.strip()]


def _scores(runs: list[dict]) -> dict[tuple, dict]:
  """Per (freeze_layers, train_fraction, fold) of the fine-tuned rows: mean validation and test MAE of the seeds."""
  seeds = collections.defaultdict(list)
  ensembles = {}
  for row in runs:
    if row['method'] != 'finetune':
      continue
    key = (row['freeze_layers'], row['train_fraction'], row['fold'])
    if row['ensemble']:
      ensembles[key] = row['mae']
    else:
      seeds[key].append((row['val_mae'], row['mae']))
  return {
    key: {
      'val_mae': float(np.mean([v for v, _ in rows])),
      'test_mae': float(np.mean([t for _, t in rows])),
      'ensemble_test_mae': ensembles.get(key),
    }
    for key, rows in seeds.items()
  }


def choose(per_source: dict[str, list[dict]]) -> list[dict]:
  """One row per (freeze_layers, train_fraction, fold): every source's scores and the one validation keeps."""
  scores = {name: _scores(runs) for name, runs in per_source.items()}
  keys = sorted(set.intersection(*(set(s) for s in scores.values())))
  if not keys:
    raise UserError("study.choose_source: the studies have no fine-tuned runs in common; include 'finetune'")
  rows = []
  for freeze, fraction, fold in keys:
    by_source = {name: s[(freeze, fraction, fold)] for name, s in scores.items()}
    chosen = min(by_source, key=lambda name: by_source[name]['val_mae'])
    rows.append(
      {
        'freeze_layers': freeze,
        'train_fraction': fraction,
        'fold': fold,
        'chosen': chosen,
        **{f'{key}': by_source[chosen][key] for key in ('val_mae', 'test_mae', 'ensemble_test_mae')},
        'by_source': by_source,
      }
    )
  return rows


def _mean(values) -> str:
  values = [v for v in values if v is not None]
  return f'{np.mean(values):.4f}' if values else ''


def report(rows: list[dict], names: list[str], scratch: dict[float, float]) -> str:
  """Markdown: per depth and size, the chosen source's test MAE (mean over folds), each source's, and scratch's."""
  lines = [
    '# Choosing the source on validation',
    '',
    "Test MAE per model, mean over folds; the choice is made per fold on the seeds' mean validation MAE.",
    '',
    '| freeze | train fraction | chosen (times) | chosen: test MAE | '
    + ' | '.join(f'{name}: val / test MAE' for name in names)
    + ' | scratch: test MAE |',
    '|' + '---|' * (5 + len(names)),
  ]
  groups = collections.defaultdict(list)
  for row in rows:
    groups[(row['freeze_layers'], row['train_fraction'])].append(row)
  for (freeze, fraction), group in sorted(groups.items()):
    counts = collections.Counter(row['chosen'] for row in group)
    chosen = ', '.join(f'{name} ({count})' for name, count in counts.most_common())
    per_source = [
      ' / '.join(_mean(r['by_source'][name][key] for r in group) for key in ('val_mae', 'test_mae')) for name in names
    ]
    cells = [str(freeze), f'{fraction:g}', chosen, f'**{_mean(r["test_mae"] for r in group)}**', *per_source]
    lines.append('| ' + ' | '.join(cells + [_mean([scratch.get(fraction)])]) + ' |')
  return '\n'.join(lines) + '\n'


def _scratch(runs: list[dict]) -> dict[float, float]:
  """Scratch's test MAE per training fraction (mean over folds and seeds), where the first study ran it."""
  by_fraction = collections.defaultdict(list)
  for row in runs:
    if row['method'] == 'scratch' and not row['ensemble']:
      by_fraction[row['train_fraction']].append(row['mae'])
  return {fraction: float(np.mean(values)) for fraction, values in by_fraction.items()}


def _finished_runs(path: Path, overwrite: bool) -> list[dict] | None:
  """The rows of a study that finished before the choice was interrupted (None: run it, or run it again)."""
  if overwrite or not (path / 'results.json').exists():
    return None
  record = workdir.read_json(path / 'results.json', 'the study did not start')
  return record['runs'] if record.get('finished') else None


def run_choice(config: StudyConfig, path: str | Path, overwrite: bool, run_study: Callable) -> list[dict]:
  """Runs the study from each source of `study.pretrained` in PATH/source_<i>; writes the choice; returns its rows."""
  names = source_names(config.study.pretrained)
  parent = workdir.Workdir(path, LAYOUT, config.to_dict(), overwrite)
  parent.start()
  per_source = {}
  for index, name in enumerate(names):
    methods = config.study.methods
    if index:  # scratch does not depend on the source: the first study runs it
      methods = tuple(m for m in methods if m != 'scratch') or ('finetune',)
    study = dataclasses.replace(config.study, pretrained=name, choose_source=False, methods=methods)
    one = dataclasses.replace(config, study=study)
    per_source[name] = _finished_runs(parent.path / f'source_{index}', overwrite) or run_study(
      one, parent.path / f'source_{index}', overwrite
    )
  with workdir.log_to(parent.path / 'log.txt'):
    rows = choose(per_source)
    text = report(rows, names, _scratch(per_source[names[0]]))
    workdir.write_text(parent.path / 'choice.md', text)
    record = {'sources': {f'source_{i}': name for i, name in enumerate(names)}, 'rows': rows, 'finished': True}
    workdir.write_text(parent.path / 'choice.json', json.dumps(record, indent=1))
    logging.info('source chosen on validation:\n%s', text)
  parent.finish()
  return rows
