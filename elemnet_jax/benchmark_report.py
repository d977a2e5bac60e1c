"""The benchmark's report: ratios between its rows, a markdown table, and the JSON and table files."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from elemnet_jax import workdir

OQMD_TRAIN_ROWS = 239_121
# Parameter-sized float32 arrays one Adam training step must stream through memory at least:
# weights read by forward and backward (2), gradient written (1), Adam reads gradient, parameters,
# first and second moment (4) and writes parameters and both moments (3).
PARAMETER_PASSES = 10


def _by(rows: list[dict], mode: str) -> dict[int, dict]:
  return {row['batch_size']: row for row in rows if row['mode'] == mode}


def derived(rows: list[dict]) -> dict:
  """Ratios between rows that exist, keyed by batch size (as a string, for JSON)."""
  step, epoch = _by(rows, 'step'), _by(rows, 'epoch')
  ensemble, sequential = _by(rows, 'ensemble'), _by(rows, 'sequential')

  def speedup(fast, slow):
    return {str(b): fast[b]['samples_per_second'] / slow[b]['samples_per_second'] for b in fast if b in slow}

  out = {
    'epoch_over_step': speedup(epoch, step),
    'ensemble_over_sequential': speedup(ensemble, sequential),
    'epoch_fraction_of_peak': {},
    'full_epoch_seconds': {},
  }
  if epoch:
    largest = max(epoch)
    out['epoch_fraction_of_peak'] = {str(largest): epoch[largest]['fraction_of_peak']}
  out['full_epoch_seconds'] = {str(b): r['epoch_seconds'] for b, r in _by(rows, 'full_epoch').items()}
  return out


def format_report(report: dict) -> str:
  """A markdown table of the rows, then one line per derived ratio."""
  peak = report['matmul_peak']
  lines = [
    '| device | mode | K | batch | samples/s | step ms | epoch s | MFLOP/sample | GFLOP/s | % of peak '
    '| param GB/s | % of bandwidth |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for r in report['rows']:
    lines.append(
      f'| {r["device_kind"]} x{r["device_count"]} | {r["mode"]} | {r["members"]} | {r["batch_size"]} '
      f'| {r["samples_per_second"]:,.0f} | {1e3 * r["step_seconds"]:.3f} | {r["epoch_seconds"]:.3f} '
      f'| {r["flops_per_sample"] / 1e6:.2f} | {r["achieved_flops_per_second"] / 1e9:.1f} '
      f'| {100 * r["fraction_of_peak"]:.1f} | {r["parameter_bytes_per_second"] / 1e9:.1f} '
      f'| {100 * r["fraction_of_bandwidth"]:.1f} |'
    )
  lines += [
    '',
    f'Matmul peak: {peak["flops_per_second"] / 1e9:,.1f} GFLOP/s (float32, n={peak["size"]}, '
    f'fastest of {peak["calls"]} calls); memory bandwidth: '
    f'{report["memory_bandwidth"]["bytes_per_second"] / 1e9:,.1f} GB/s ({report["memory_bandwidth"]["mib"]} MiB '
    f'in place, fastest of {report["memory_bandwidth"]["calls"]} calls); '
    f'jax {report["jax_version"]}, {report["timestamp"]}. '
    f'"param GB/s": {PARAMETER_PASSES} passes over the {report["model"]["params"]:,} float32 parameters per step.',
  ]
  d, members = report['derived'], report['options']['members']
  rows = report['options']['full_epoch_rows']
  for b, ratio in d['epoch_over_step'].items():
    lines.append(f'- epoch mode (lax.scan) at batch {b}: {ratio:.2f}x the samples/s of step mode (Python loop)')
  for b, fraction in d['epoch_fraction_of_peak'].items():
    lines.append(f'- epoch mode at batch {b}: {100 * fraction:.1f}% of the matmul peak')
  for b, ratio in d['ensemble_over_sequential'].items():
    lines.append(f'- ensemble of {members} at batch {b}: {ratio:.2f}x the samples/s of {members} sequential runs')
  what = ' (OQMD training split)' if rows == OQMD_TRAIN_ROWS else ''
  for b, seconds in d['full_epoch_seconds'].items():
    lines.append(f'- full epoch of {rows:,} rows{what} at batch {b}: {seconds:.1f} s')
  return '\n'.join(lines) + '\n'


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
