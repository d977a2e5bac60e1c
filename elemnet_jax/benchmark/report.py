"""The benchmark's report: one row's figures, ratios between rows, a markdown table, and the JSON and table files."""

from __future__ import annotations

import json
import pathlib
import statistics

import numpy as np

from elemnet_jax import workdir

OQMD_TRAIN_ROWS = 239_121
# Parameter-sized float32 arrays one Adam training step must stream through memory at least:
# weights read by forward and backward (2), gradient written (1), Adam reads gradient, parameters,
# first and second moment (4) and writes parameters and both moments (3).
PARAMETER_PASSES = 10


def row(
  mode: str,
  batch_size: int,
  members: int,
  rows: int,
  seconds: list[float],
  flops: int,
  xla: float | None,
  peak: dict,
  bandwidth: dict,
  params: int,
  device: dict,
  **extra,
) -> dict:
  """One timed mode at one batch size: throughput, achieved FLOP/s and bytes/s, and the step's roofline bound.

  The bound of one step (all `members`) is its matmul FLOPs at the measured peak plus its
  PARAMETER_PASSES passes over the float32 parameters at the measured bandwidth; `fraction_of_bound`
  is bound / measured step time.
  """
  epoch_seconds = statistics.median(seconds)
  steps = -(-rows // batch_size)
  step_seconds = epoch_seconds / steps
  samples = members * rows / epoch_seconds
  achieved = samples * flops
  parameter_bytes = PARAMETER_PASSES * 4 * params * members
  bound = flops * batch_size * members / peak['flops_per_second'] + parameter_bytes / bandwidth['bytes_per_second']
  return {
    'mode': mode,
    'batch_size': batch_size,
    'members': members,
    'rows': rows,
    'steps': steps,
    'device_kind': device['kind'],
    'device_count': device['count'],
    'platform': device['platform'],
    'samples_per_second': samples,
    'step_seconds': step_seconds,
    'epoch_seconds': epoch_seconds,
    'seconds': seconds,
    'flops_per_sample': flops,
    'xla_flops_per_sample': xla,
    'achieved_flops_per_second': achieved,
    'fraction_of_peak': achieved / peak['flops_per_second'],
    'parameter_bytes_per_second': parameter_bytes / step_seconds,
    'fraction_of_bandwidth': parameter_bytes / step_seconds / bandwidth['bytes_per_second'],
    'bound_step_seconds': bound,
    'fraction_of_bound': bound / step_seconds,
    **extra,
  }


def _by(rows: list[dict], mode: str) -> dict[int, dict]:
  return {row['batch_size']: row for row in rows if row['mode'] == mode}


def derived(rows: list[dict], schedules: list[dict] = ()) -> dict:
  """Ratios between rows that exist, keyed by batch size (as a string, for JSON).

  `schedules`: the ensemble rows of each schedule `fit` can run (their `schedule` field names it).
  """
  step, epoch = _by(rows, 'step'), _by(rows, 'epoch')
  ensemble, sequential = _by(rows, 'ensemble'), _by(rows, 'sequential')

  def speedup(fast, slow):
    return {str(b): fast[b]['samples_per_second'] / slow[b]['samples_per_second'] for b in fast if b in slow}

  by_schedule: dict[str, dict] = {}
  for r in schedules:
    if r['batch_size'] in sequential:
      ratio = r['samples_per_second'] / sequential[r['batch_size']]['samples_per_second']
      by_schedule.setdefault(str(r['batch_size']), {})[r['schedule']] = ratio
  out = {
    'epoch_over_step': speedup(epoch, step),
    'ensemble_over_sequential': speedup(ensemble, sequential),
    'ensemble_schedule': {str(b): r['schedule'] for b, r in ensemble.items() if 'schedule' in r},
    'ensemble_schedules_over_sequential': by_schedule,
    'epoch_fraction_of_peak': {},
    'bound_step_seconds': {str(b): r['bound_step_seconds'] for b, r in epoch.items()},
    'fraction_of_bound': {m: {str(b): r['fraction_of_bound'] for b, r in _by(rows, m).items()} for m in _modes(rows)},
    'full_epoch_seconds': {str(b): r['epoch_seconds'] for b, r in _by(rows, 'full_epoch').items()},
  }
  if epoch:
    largest = max(epoch)
    out['epoch_fraction_of_peak'] = {str(largest): epoch[largest]['fraction_of_peak']}
  return out


def _modes(rows: list[dict]) -> list[str]:
  return list(dict.fromkeys(r['mode'] for r in rows))


def format_report(report: dict) -> str:
  """A markdown table of the rows, then one line per derived ratio."""
  peak = report['matmul_peak']
  lines = [
    '| device | mode | K | batch | samples/s | step ms | epoch s | MFLOP/sample | GFLOP/s | % of peak '
    '| param GB/s | % of bandwidth | bound ms | % of bound |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in report['rows']:
    lines.append(
      f'| {r["device_kind"]} x{r["device_count"]} | {r["mode"]} | {r["members"]} | {r["batch_size"]} '
      f'| {r["samples_per_second"]:,.0f} | {1e3 * r["step_seconds"]:.3f} | {r["epoch_seconds"]:.3f} '
      f'| {r["flops_per_sample"] / 1e6:.2f} | {r["achieved_flops_per_second"] / 1e9:.1f} '
      f'| {100 * r["fraction_of_peak"]:.1f} | {r["parameter_bytes_per_second"] / 1e9:.1f} '
      f'| {100 * r["fraction_of_bandwidth"]:.1f} | {1e3 * r["bound_step_seconds"]:.3f} '
      f'| {100 * r["fraction_of_bound"]:.1f} |'
    )
  bandwidth = report['memory_bandwidth']
  lines += [
    '',
    f'Matmul peak: {peak["flops_per_second"] / 1e9:,.1f} GFLOP/s (float32, n={peak["size"]}, '
    f'fastest of {peak["calls"]} calls); memory bandwidth: {bandwidth["bytes_per_second"] / 1e9:,.1f} GB/s '
    f'({bandwidth["mib"]} MiB in place, fastest of {bandwidth["calls"]} calls); '
    f'jax {report["jax_version"]}, {report["timestamp"]}. '
    f'"param GB/s": {PARAMETER_PASSES} passes over the {report["model"]["params"]:,} float32 parameters per step; '
    '"bound ms": a step\'s matmul FLOPs at the peak plus those passes at the bandwidth; "% of bound": bound / step ms.',
  ]
  lines += _derived_lines(report)
  return '\n'.join(lines) + '\n'


def _derived_lines(report: dict) -> list[str]:
  d, members, lines = report['derived'], report['options']['members'], []
  for b, ratio in d['epoch_over_step'].items():
    lines.append(f'- epoch mode (lax.scan) at batch {b}: {ratio:.2f}x the samples/s of step mode (Python loop)')
  for b, fraction in d['epoch_fraction_of_peak'].items():
    lines.append(f'- epoch mode at batch {b}: {100 * fraction:.1f}% of the matmul peak')
  for b, fraction in d['fraction_of_bound'].get('epoch', {}).items():
    lines.append(f"- epoch mode at batch {b}: {100 * fraction:.1f}% of the step's roofline bound")
  for b, ratio in d['ensemble_over_sequential'].items():
    schedule = d['ensemble_schedule'].get(b, '?')
    others = ', '.join(f'{name} {r:.2f}x' for name, r in d['ensemble_schedules_over_sequential'].get(b, {}).items())
    lines.append(
      f'- ensemble of {members} at batch {b}, as `fit` trains it on {report["device"]["platform"]} '
      f'(schedule {schedule}): {ratio:.2f}x the samples/s of {members} sequential runs'
      + (f' (each schedule: {others})' if others else '')
    )
  rows = report['options']['full_epoch_rows']
  what = ' (OQMD training split)' if rows == OQMD_TRAIN_ROWS else ''
  for b, seconds in d['full_epoch_seconds'].items():
    lines.append(f'- full epoch of {rows:,} rows{what} at batch {b}: {seconds:.1f} s')
  return lines


def write_report(report: dict, path: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes the report as JSON at `path` and its table beside it as `.md`; returns both paths."""
  json_path = pathlib.Path(path)
  md_path = json_path.with_suffix('.md') if json_path.suffix == '.json' else json_path.with_name(json_path.name + '.md')
  json_path.parent.mkdir(parents=True, exist_ok=True)
  workdir.write_text(json_path, json.dumps(report, indent=2, default=_jsonable) + '\n')
  workdir.write_text(md_path, format_report(report))
  return json_path, md_path


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'{type(value).__name__} is not JSON serializable')
