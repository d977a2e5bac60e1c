"""What each epoch leaves in the workdir: history.csv, TensorBoard scalars and, on request, a profiler trace.

The scalars go to ``WORKDIR/tensorboard/`` through tensorboardX, a TensorBoard event writer that needs
only protobuf (no TensorFlow): per epoch, the training loss and validation MAE of each member (target
units), the learning rate and the training throughput. ``tensorboard --logdir WORKDIR/tensorboard``
shows them, and a `jax.profiler` trace of at least `profile_steps` steps written beside them
(``plugins/profile/``; a Perfetto trace too). With several processes, process 0 alone writes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import jax
import numpy as np
from absl import logging

from elemnet_jax.training import distributed
from elemnet_jax.training.fit import Progress
from elemnet_jax.training.history import write_history

FOLDER = 'tensorboard'


class EpochRecords:
  """Writes history.csv and the TensorBoard scalars after each epoch; traces `profile_steps` steps once.

  The trace starts after the first epoch of this process (which compiles) and stops at the end of
  the epoch in which `profile_steps` steps have run: in epoch mode an epoch is one call, so the trace
  holds whole epochs.
  """

  def __init__(self, workdir: Path, samples_per_epoch: int, profile_steps: int = 0):
    self.workdir, self.samples_per_epoch = Path(workdir), samples_per_epoch
    self.profile_steps, self.trace_from = max(int(profile_steps), 0), None
    self.writer = None
    self.enabled = distributed.is_writer()

  def epoch(self, progress: Progress, step: int) -> None:
    """Records the last epoch of `progress`; `step` is the members' optimizer step count after it."""
    if not self.enabled:
      return
    write_history(self.workdir / 'history.csv', progress)
    entry = progress.history[-1]
    if self.writer is None:  # after a resume, events of later epochs that an earlier process wrote are dropped
      from tensorboardX import SummaryWriter

      self.writer = SummaryWriter(str(self.workdir / FOLDER), purge_step=entry['epoch'], flush_secs=30)
    epoch = entry['epoch']
    for k, (loss, mae) in enumerate(zip(entry['train_loss'], entry['val_mae'])):
      self.writer.add_scalar(f'train_loss/member_{k}', loss, epoch)
      self.writer.add_scalar(f'val_mae/member_{k}', mae, epoch)
    if entry.get('learning_rate') is not None:
      self.writer.add_scalar('learning_rate', entry['learning_rate'], epoch)
    if entry.get('seconds'):
      self.writer.add_scalar('samples_per_second', self.samples_per_epoch / entry['seconds'], epoch)
    self.writer.flush()
    self._profile(step)

  def history(self, progress: Progress) -> None:
    if self.enabled:
      write_history(self.workdir / 'history.csv', progress)

  def _profile(self, step: int) -> None:
    if not self.profile_steps:
      return
    if self.trace_from is None:
      jax.profiler.start_trace(str(self.workdir / FOLDER), create_perfetto_trace=True)
      self.trace_from = step
    elif step - self.trace_from >= self.profile_steps:
      self._stop_trace(step)

  def _stop_trace(self, step: int) -> None:
    jax.profiler.stop_trace()
    logging.info('profiled steps %d to %d in %s/plugins/profile', self.trace_from + 1, step, self.workdir / FOLDER)
    self.profile_steps = 0

  def close(self) -> None:
    """Ends a trace still running (training stopped first) and closes the event file."""
    if self.profile_steps and self.trace_from is not None:
      self._stop_trace(-1)
    if self.writer is not None:
      self.writer.close()
      self.writer = None


def read_scalars(directory: Path) -> list[tuple[int, str, float]]:
  """(step, tag, value) of every scalar in the event files of `directory`, in file and write order."""
  from tensorboardX.proto import event_pb2

  found = []
  for path in sorted(Path(directory).glob('events.out.tfevents.*')):
    data, offset = path.read_bytes(), 0
    while offset + 12 <= len(data):  # TFRecord: length (8 bytes), its CRC (4), the record, its CRC (4)
      (length,) = struct.unpack('<Q', data[offset : offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += 12 + length + 4
      found += [(event.step, value.tag, float(np.float32(value.simple_value))) for value in event.summary.value]
  return found
