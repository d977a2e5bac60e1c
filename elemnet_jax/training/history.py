"""history.csv: what each epoch of a fit did, one row per epoch."""

from __future__ import annotations

import csv
from pathlib import Path

from elemnet_jax import workdir
from elemnet_jax.training.fit import Progress


def write_history(path: Path, progress: Progress) -> None:
  """history.csv: one row per epoch; train loss and validation MAE per member, in target units."""
  members = len(progress.best_epoch)
  with workdir.open_for_writing(path) as stream:
    writer = csv.writer(stream)
    writer.writerow(
      ['epoch']
      + [f'train_loss_{k}' for k in range(members)]
      + [f'val_mae_{k}' for k in range(members)]
      + ['learning_rate', 'seconds']
    )
    for entry in progress.history:
      writer.writerow(
        [entry['epoch']]
        + [f'{v:.6g}' for v in entry['train_loss'] + entry['val_mae']]
        + ['' if entry.get('learning_rate') is None else f'{entry["learning_rate"]:.6g}', entry.get('seconds', '')]
      )
