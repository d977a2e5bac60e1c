"""`python -m experiments.export_pretrained`: a finished run as a shipped model's folder, checked on its own split.

  python -m experiments.export_pretrained --workdir=workdirs/oqmd_transformer \
    --destination=elemnet_jax/pretrained/oqmd_fe_transformer --dtype=float16

Writes the folder, then predicts the run's validation and test rows (split.csv) with the run as trained and
with the exported folder, and prints both MAEs. Stored as float16, the export is kept only when each MAE
moves by at most --tolerance (else the folder is removed and the command fails). Prints the SHA-256 digests
to enter in `elemnet_jax/pretrained/__init__.py`.
"""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from absl import app, flags

from elemnet_jax import predict, pretrained

flags.DEFINE_string('workdir', None, 'Finished run to export.', required=True)
flags.DEFINE_string('destination', None, 'Folder to write (must not exist).', required=True)
flags.DEFINE_enum('dtype', 'float32', ['float32', 'float16'], 'How params.npz stores the parameters.')
flags.DEFINE_float('tolerance', 0.0005, 'Largest change of the validation or test MAE the export may cause.')


def _split_rows(workdir: Path) -> dict[str, tuple[list[str], np.ndarray]]:
  rows: dict[str, tuple[list[str], list[float]]] = {}
  with open(workdir / 'split.csv', newline='') as stream:
    for row in csv.DictReader(stream):
      inputs, targets = rows.setdefault(row['split'], ([], []))
      inputs.append(row['input'])
      targets.append(float(row['target']))
  return {split: (inputs, np.asarray(targets)) for split, (inputs, targets) in rows.items() if split != 'train'}


def main(argv):
  del argv
  workdir, destination = Path(flags.FLAGS.workdir), Path(flags.FLAGS.destination)
  digests = pretrained.export(workdir, destination, flags.FLAGS.dtype)
  report = {}
  for split, (inputs, targets) in sorted(_split_rows(workdir).items()):
    as_trained = predict.predict_inputs([str(workdir)], inputs).mean
    exported = predict.predict_inputs([str(destination)], inputs).mean
    report[split] = {
      'rows': len(inputs),
      'mae_as_trained': float(np.nanmean(np.abs(as_trained - targets))),
      f'mae_{flags.FLAGS.dtype}': float(np.nanmean(np.abs(exported - targets))),
      'largest_prediction_change': float(np.nanmax(np.abs(exported - as_trained))),
    }
  print(json.dumps({'splits': report, 'digests': digests}, indent=1))
  moved = max(abs(r[f'mae_{flags.FLAGS.dtype}'] - r['mae_as_trained']) for r in report.values())
  if moved > flags.FLAGS.tolerance:
    shutil.rmtree(destination)
    raise SystemExit(f'error: the export moves an MAE by {moved:.5f} > {flags.FLAGS.tolerance}; {destination} removed')


if __name__ == '__main__':
  app.run(main)
