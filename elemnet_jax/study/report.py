"""A study's report: results.md (mean +- std per method and training-set size) and its two figures."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from elemnet_jax import workdir
from elemnet_jax.metrics import expected_coverage
from elemnet_jax.study.plan import Arm

# The score a study's tables lead with, its name, and whether higher is better: by the target's task.
METRICS = {'regression': ('mae', 'MAE', False), 'classification': ('roc_auc', 'ROC-AUC', True)}


def summarise(rows: list[dict], ensembles: bool = False, key: str = 'mae') -> dict:
  """Arm -> train_fraction -> (mean, std of the score `key` (MAE), runs, median train_size).

  Single runs by default; with `ensembles`, the rows that score the mean prediction of the seeds.
  """
  table: dict = {}
  for row in rows:
    if row.get('ensemble', False) != ensembles:
      continue
    table.setdefault(Arm.of(row), {}).setdefault(row['train_fraction'], []).append((row[key], row['train_size']))
  return {
    arm: {
      f: (
        float(np.mean([m for m, _ in v])),
        float(np.std([m for m, _ in v])),
        len(v),
        int(np.median([s for _, s in v])),
      )
      for f, v in cells.items()
    }
    for arm, cells in table.items()
  }


def _table(summary: dict, fractions, sizes, higher_better: bool = False) -> list[str]:
  arms = [arm for arm in summary if arm.method != 'direct']
  pick = max if higher_better else min
  lines = ['| share of target train (n) | ' + ' | '.join(a.label for a in arms) + ' |', '|---' * (len(arms) + 1) + '|']
  for f in fractions:
    cells = []
    best = pick((summary[a][f][0] for a in arms if f in summary[a]), default=None)
    for arm in arms:
      if f not in summary[arm]:
        cells.append('')
        continue
      mean, std, _, _ = summary[arm][f]
      text = f'{mean:.4f} +- {std:.4f}'
      cells.append(f'**{text}**' if mean == best else text)
    lines.append(f'| {f:.0%} ({sizes[f]}) | ' + ' | '.join(cells) + ' |')
  return lines


def _members(count: int) -> str:
  if count < 2:
    return ''
  return (
    f'an ensemble of {count} pretrained members, the k-th seed fine-tuned from member k mod {count}, '
    'the frozen featurizer reads member 0; '
  )


def _source_test(leakage: dict) -> str:
  runs = leakage.get('source_runs', 1)
  score = f'test MAE {leakage["source_test_mae"]:.4f} on {leakage["source_test_n"]:,} examples'
  if leakage['source_test_mae'] != leakage['source_test_mae']:  # NaN: a source of several targets
    score = f'several targets, {leakage["source_test_n"]:,} test values'
  return score if runs < 2 else f'pretrained as {runs} separate runs, ensemble {score}'


def _protocol(study, leakage: dict, runs_per_cell: int, has_ridge: bool, task: str = 'regression') -> str:
  ridge = ', ridge one per fold' if has_ridge else ''  # it has no seeds
  criterion = 'log-loss' if task == 'classification' else 'MAE'  # what early stopping and the rate minimise
  text = (
    f'\nTest {METRICS[task][1]}, mean +- std over {runs_per_cell} runs per cell (folds x seeds{ridge}; '
    f'study.folds={study.folds}, study.seeds={study.seeds}'
  )
  if study.rotate_validation:
    text += (
      '; rotated validation: seed k >= 1 of scratch, fine-tuning and the head network stops on a random '
      "block of the fold's training rows and trains on the rest and the validation rows"
    )
  if study.learning_rates:
    rates = ', '.join(f'{rate:g}' for rate in study.learning_rates)
    text += f'; each network at the learning rate of ({rates}) with the lowest mean validation {criterion} of its seeds'
  if study.retrain_with_validation:
    text += (
      '; retrained: each model trained again from the same start on its training and validation rows '
      '(n counts both) for the epochs early stopping chose, ridge with the alpha validation chose'
    )
  kept = 'REMOVED from' if leakage['target_excluded_from_source'] else 'KEPT in'
  return (
    text + f'). Source: {leakage["source_dataset"]} '
    f'({_members(leakage.get("source_members", 1))}{_source_test(leakage)}); target inputs {kept} the source data '
    f'({leakage["excluded_count"]} removed; {leakage["target_in_source_train"]} of the target inputs are among the '
    'rows the source trained on).'
  )


def _machine_line(machine: dict) -> str:
  cores = f'{machine["cores"]} core{"s" if machine["cores"] != 1 else ""}'
  return (
    f'Run on {machine["cpu"]}, {cores}, {machine["platform"]}, jax {machine["jax"]}: the last digits can differ '
    'on another CPU or number of cores (docs/results.md, Reproducibility).'
  )


def write_report(path: Path, rows: list[dict], leakage: dict, parity: dict, study, context: dict, echo=True) -> str:
  """results.md, learning_curve.{png,svg} and parity.{png,svg}; returns the markdown.

  `context`: the target's 'quantity' and 'unit', the 'source' and 'target' dataset names, and the 'machine'
  (`elemnet_jax.machine.describe()`) the study ran on.
  """
  task = context.get('task', 'regression')
  key, label, higher = METRICS[task]
  summary = summarise(rows, key=key)
  fractions = sorted({r['train_fraction'] for r in rows if r['method'] != 'direct'})
  arms = [arm for arm in summary if arm.method != 'direct']
  sizes = {f: max(v[f][3] for v in summary.values() if f in v) for f in fractions}
  unit = f' ({context["unit"]})' if context.get('unit') and task == 'regression' else ''
  lines = [f'# {context["source"]} -> {context["target"]}: {context["quantity"]}, test {label}{unit}', '']
  lines += _table(summary, fractions, sizes, higher)
  for arm, cells in summary.items():
    if arm.method == 'direct':
      mean, std, runs, _ = cells[0.0]
      lines.append(f'\nPretrained model applied directly (no target training): {mean:.4f} +- {std:.4f} ({runs} folds).')
  runs_per_cell = max((v[2] for cells in summary.values() for v in cells.values()), default=0)
  lines.append(_protocol(study, leakage, runs_per_cell, any(arm.method == 'featurizer' for arm in summary), task))
  lines += [f'Source: {verdict}.' for verdict in leakage.get('source_verdicts', [])]  # against the training median
  scratch = summary.get(Arm('scratch'), {})
  transfer_arms = [a for a in arms if a.method in ('finetune', 'featurizer', 'head')]
  if scratch and transfer_arms:
    shared = [f for f in fractions if f in scratch and any(f in summary[a] for a in transfer_arms)]
    pick, sign = (max, -1) if higher else (min, 1)
    wins = all(
      sign * pick(summary[a][f][0] for a in transfer_arms if f in summary[a]) < sign * scratch[f][0] for f in shared
    )
    lines.append(f'Transfer beats scratch at every training-set size: {"yes" if wins else "no"}.')
  if context.get('machine'):
    lines.append(_machine_line(context['machine']))
  ensembles = summarise(rows, ensembles=True, key=key)
  if ensembles:
    lines += ['', f'Mean prediction of the {study.seeds} seeds (an ensemble), test {label} (+- std over folds):', '']
    lines += _table(ensembles, fractions, sizes, higher)
  for other, name in (('accuracy', 'accuracy at 0.5'), ('log_loss', 'log-loss')) if task == 'classification' else ():
    lines += ['', f'Test {name}, mean +- std over the runs of each cell:', '']
    lines += _table(summarise(rows, key=other), fractions, sizes, other == 'accuracy')
  lines += _calibration(rows, fractions, sizes, study.seeds) + _calibrated(rows, fractions, sizes)
  lines += _rates(rows, fractions, sizes)
  text = '\n'.join(lines) + '\n'
  workdir.write_text(path / 'results.md', text)
  colours = _colours(summary)
  _plot_learning_curve(path, summary, fractions, sizes, context, colours, label)
  _plot_parity(path, parity, context, colours)
  if echo:
    print(text)
  return text


def _cells(rows: list[dict], value, fractions, sizes, header: str) -> list[str]:
  """A table of `value(rows of one arm and size)` per arm (columns) and training-set size (rows)."""
  arms = list(dict.fromkeys(Arm.of(row) for row in rows))
  lines = [f'| {header} | ' + ' | '.join(a.label for a in arms) + ' |', '|---' * (len(arms) + 1) + '|']
  for f in fractions:
    cells = [value([r for r in rows if Arm.of(r) == arm and r['train_fraction'] == f]) for arm in arms]
    lines.append(f'| {f:.0%} ({sizes[f]}) | ' + ' | '.join(cells) + ' |')
  return lines


def _calibration(rows: list[dict], fractions, sizes, members: int) -> list[str]:
  """How often the test target lies within 1 and 2 std of the seeds' spread, per arm and size."""
  rows = [row for row in rows if row.get('ensemble') and 'within_1std' in row]
  if not rows:
    return []

  def share(cell):
    return (
      f'{np.mean([r["within_1std"] for r in cell]):.2f} / {np.mean([r["within_2std"] for r in cell]):.2f}'
      if cell
      else ''
    )

  expected = [expected_coverage(members, width) for width in (1, 2)]
  within = [float(np.mean([r[f'within_{k}std'] for r in rows])) for k in (1, 2)]
  verdict = 'roughly calibrated'
  if within[1] < expected[1] - 0.1:
    verdict = 'over-confident (too narrow)'
  elif within[1] > expected[1] + 0.1:
    verdict = 'under-confident (too wide)'
  return [
    '',
    f"Calibration of the {members} seeds' spread: share of test targets within 1 / 2 std of the ensemble mean, "
    f"mean over folds ({expected[0]:.2f} / {expected[1]:.2f} if each target were one more draw from the seeds' "
    'Gaussian):',
    '',
    *_cells(rows, share, fractions, sizes, 'share of target train (n)'),
    '',
    f"Over all cells {within[0]:.2f} / {within[1]:.2f} of the targets lie within 1 / 2 std: the seeds' spread is "
    f'{verdict} as an uncertainty.',
  ]


def _calibrated(rows: list[dict], fractions, sizes) -> list[str]:
  """Test coverage of the 68% and 90% intervals calibrated on validation, and the 90% width, per method."""
  rows = [row for row in rows if row.get('ensemble') and row.get('calibrated')]
  if not rows:
    return []
  lines = [
    '',
    "The seeds' spread calibrated on the validation rows: share of test targets inside the 68% / 90% "
    'intervals and the mean width of the 90% interval (sharpness), mean over folds; z-scaling (a Gaussian '
    'interval of the rescaled std) and split-conformal (quantiles of |error| / std):',
  ]
  for method, name in (('z', 'z-scaling'), ('conformal', 'split-conformal')):

    def cell(group, method=method):
      if not group:
        return ''
      low, high, width = (
        np.mean([r['calibrated'][f'{method}_{k}'][what] for r in group])
        for k, what in ((68, 'coverage'), (90, 'coverage'), (90, 'width'))
      )
      return f'{low:.2f} / {high:.2f} ({width:.3f})'

    lines += ['', *_cells(rows, cell, fractions, sizes, f'{name}: share of target train (n)')]
  return lines


def _rates(rows: list[dict], fractions, sizes) -> list[str]:
  """The learning rate validation chose per arm and size: each fold's choice, with its count when folds differ."""
  rows = [row for row in rows if any(k.endswith('_by_rate') for k in row) and not row.get('ensemble')]
  if not rows:
    return []
  first = min(row['seed'] for row in rows)
  rows = [row for row in rows if row['seed'] == first]  # the seeds of a fold share their rate

  def chosen(cell):
    counts = collections.Counter(f'{row["learning_rate"]:g}' for row in cell)
    return ', '.join(f'{rate} ({n})' if len(counts) > 1 else rate for rate, n in counts.most_common())

  title = 'Learning rate chosen on validation (folds per rate when they differ):'
  return ['', title, ''] + _cells(rows, chosen, fractions, sizes, 'share of target train (n)')


_CYCLE = ('tab:blue', 'tab:orange', 'tab:green', 'tab:purple', 'tab:brown', 'tab:pink', 'tab:olive', 'tab:cyan')


def _colours(arms) -> dict[str, str]:
  """One colour per method label, the same in both figures: scratch red, the source as is grey."""
  others = [arm.label for arm in arms if arm.method not in ('scratch', 'direct')]
  colours = {label: _CYCLE[i % len(_CYCLE)] for i, label in enumerate(sorted(others))}
  return {**colours, Arm('scratch').label: 'tab:red', Arm('direct').label: 'grey'}


def _pyplot():
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def _axis(context: dict, what: str) -> str:
  unit = f' ({context["unit"]})' if context.get('unit') else ''
  return f'{what} {context["quantity"]}{unit}'


def _plot_learning_curve(path: Path, summary: dict, fractions, sizes, context: dict, colours: dict, label='MAE'):
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(6, 4.2))
  for arm, cells in summary.items():
    if arm.method == 'direct':
      axes.axhline(cells[0.0][0], color=colours[arm.label], linestyle='--', label=arm.label)
      continue
    present = [f for f in fractions if f in cells]
    axes.errorbar(
      [sizes[f] for f in present],
      [cells[f][0] for f in present],
      yerr=[cells[f][1] for f in present],
      marker='o',
      capsize=3,
      color=colours[arm.label],
      label=arm.label,
    )
  axes.set_xscale('log')
  axes.set_xticks([sizes[f] for f in fractions], [f'{sizes[f]}\n({f:.0%})' for f in fractions])
  axes.minorticks_off()
  axes.set_xlabel(f'{context["target"]} training-set size')
  axes.set_ylabel(_axis(context, f'test {label} of') if label == 'MAE' else f'test {label}, {context["quantity"]}')
  axes.set_title(f'{context["source"]} -> {context["target"]}', fontsize=10)
  axes.legend(fontsize=8)
  axes.grid(alpha=0.3)
  figure.tight_layout()
  workdir.save_figure(figure, path / 'learning_curve.png')
  plt.close(figure)


def _plot_parity(path: Path, parity: dict, context: dict, colours: dict) -> None:
  """Scratch against the transfer arm with the best validation MAE (never chosen on test)."""
  target, predictions = parity.get('target'), parity.get('predictions', {})
  candidates = [label for label in predictions if label != Arm('scratch').label]
  if target is None or Arm('scratch').label not in predictions or not candidates:
    return
  target = np.asarray(target)
  best = min(candidates, key=lambda label: parity['val_mae'][label])
  plt = _pyplot()
  figure, axes = plt.subplots(figsize=(4.8, 4.8))
  for label in (Arm('scratch').label, best):
    values, color = np.asarray(predictions[label]), colours.get(label, 'tab:blue')
    mae = np.abs(values - target).mean()
    axes.scatter(target, values, s=9, alpha=0.6, color=color, label=f'{label} (MAE {mae:.3f})')
  shown = np.concatenate([target] + [np.asarray(predictions[label]) for label in (Arm('scratch').label, best)])
  low, high = float(shown.min()), float(shown.max())
  axes.plot([low, high], [low, high], color='black', linewidth=0.8)
  axes.set_aspect('equal')
  axes.set_xlabel(_axis(context, 'target'))
  axes.set_ylabel(_axis(context, 'predicted'))
  axes.set_title(f'{context["target"]} test split, fold 0 ({context["source"]} source)', fontsize=10)
  axes.legend(fontsize=8)
  figure.tight_layout()
  workdir.save_figure(figure, path / 'parity.png')
  plt.close(figure)
