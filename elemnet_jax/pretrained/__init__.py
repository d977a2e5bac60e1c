"""Pretrained models that ship with the package, by name (`--pretrained=oqmd_fe`, `--models=oqmd_fe`).

Each is a finished run's folder, `elemnet_jax/pretrained/<name>/`: config.json (how it was trained),
metrics.json (its scores), model/meta.json and model/params.npz (float32, or float16 where that keeps the
validation and test MAE within 0.0005 of float32: `python -m experiments.export_pretrained`). `resolve` checks every
file against the SHA-256 below before the folder is used as a workdir.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from absl import logging

from elemnet_jax.errors import UserError
from elemnet_jax.training import checkpoint

HERE = Path(__file__).parent
FILES = ('config.json', 'metrics.json', 'model/meta.json', 'model/params.npz')

# name -> SHA-256 of each file in FILES
SHIPPED: dict[str, dict[str, str]] = {
  # elemnet-jax train --config=oqmd --config.train.target_scaling=none --config.dataset.resplit=True
  #   "--config.dataset.split=(0.98,0.01,0.01)"
  'oqmd_fe': {
    'config.json': '687098a39dc78f8fcdd7d7c8e613d94390fcb0bea186516785c0b46bdb002d35',
    'metrics.json': '80cc9747423aecf22e5121a19525284b4ef0d27897d23c99fa9e40ec3f6103ce',
    'model/meta.json': '10d4a5312dfc8c2e9896e60fb1b6a1af5523f61c130082e6e8ca3d24eb552e6f',
    'model/params.npz': 'e84c612b7a3f7eaa43af67bef06ff0511e20751021554f870475c09015065b9e',
  },
  # elemnet-jax train --config=oqmd:transformer --config.train.target_scaling=none, then
  # python -m experiments.export_pretrained --dtype=float16 (validation and test MAE within 0.000001 of float32)
  'oqmd_fe_transformer': {
    'config.json': '1f4858c9e752a8f8d0cbadd2af4e726fa0c9ee5a5a57fdb614c1bcbf4813ff19',
    'metrics.json': 'c7e7dfbc8c5636824d18b326cd9cf004f9a81d18c2e7c71882b7001c6eb53551',
    'model/meta.json': 'af672f95e0e8aebb1d58d2083080f237c18b04835e2259010d799854955b4145',
    'model/params.npz': 'f3e7cd393f39fec2915fbcb37c1daefeea520bf7f031c68f78585f91a90d54fd',
  },
  # elemnet-jax train --config=oqmd:residual, then python -m experiments.export_pretrained --dtype=float16
  # (validation and test MAE within 0.000002 of float32)
  'oqmd_fe_residual': {
    'config.json': 'c72b44c768627c4a938daf01471b6b22885baa66a0aaf32cfe8b01741dd3ba7b',
    'metrics.json': '49f1e57473cf385426026991fb2835f11bca579e7f18658ae3a143113e69ac5b',
    'model/meta.json': 'a487a7aa0e2cef7ae24da81674346858e97b61edca7364d4c356263a121e757b',
    'model/params.npz': 'bc939f9eaa6fb8e0ce7b34e966e0f621c923eba3925625cfa1e219c1dcee56ee',
  },
}


def listed() -> str:
  return ', '.join(sorted(SHIPPED)) or 'none'


def digests_of(folder: Path) -> dict[str, str]:
  return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES if (folder / name).exists()}


def verify(folder: Path, expected: dict[str, str]) -> None:
  """Raises UserError naming the first file of `folder` that is missing or differs from its checksum."""
  found = digests_of(folder)
  for name, digest in expected.items():
    if name not in found:
      raise UserError(f'{folder / name}: missing from the shipped model; reinstall elemnet_jax')
    if found[name] != digest:
      raise UserError(
        f'{folder / name}: SHA-256 {found[name][:12]}... differs from the shipped {digest[:12]}...; '
        'the file is corrupted, reinstall elemnet_jax'
      )


def resolve(name: str) -> Path:
  """The verified folder of the shipped model `name`."""
  if name not in SHIPPED:
    raise UserError(f'{name!r}: no such shipped model; the shipped models are {listed()}')
  folder = HERE / name
  verify(folder, SHIPPED[name])
  return folder


def workdir_of(name: str | os.PathLike) -> str:
  """A workdir as named: a shipped model's folder for its name unless a path of that name exists."""
  if Path(name).exists():
    if str(name) in SHIPPED:
      logging.warning('%s: the folder of that name is used, not the shipped model', name)
    return str(name)
  if str(name) in SHIPPED:
    return str(resolve(str(name)))
  raise UserError(f'{name}: no such workdir, nor a shipped model ({listed()})')


def export(workdir: str | os.PathLike, destination: str | os.PathLike, dtype: str = 'float32') -> dict[str, str]:
  """Writes the finished run `workdir` as a shipped model's folder; returns the digests to put in SHIPPED.

  `dtype` is how params.npz stores the parameters ('float32' or 'float16'); they are float32 again when loaded.
  """
  if dtype not in ('float32', 'float16'):
    raise UserError(f'dtype {dtype!r}: a shipped model stores float32 or float16 parameters')
  workdir, destination = Path(workdir), Path(destination)
  _, params, meta = checkpoint.load_trained(workdir)
  (destination / checkpoint.MODEL_DIR).mkdir(parents=True, exist_ok=False)
  for name in ('config.json', 'metrics.json'):
    shutil.copyfile(workdir / name, destination / name)
  checkpoint.save_portable(destination / checkpoint.MODEL_DIR, params, dtype)
  (destination / checkpoint.MODEL_DIR / checkpoint.META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
  return digests_of(destination)
