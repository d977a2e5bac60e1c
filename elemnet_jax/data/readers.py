"""Readers: a data file's text -> `RawTable`. Row numbers count lines of the file, the header being row 1."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
from collections.abc import Callable, Sequence
from pathlib import Path

from elemnet_jax.errors import UserError, listing


@dataclasses.dataclass
class RawTable:
  """Rows as read from a file: input strings, target strings, 1-based row numbers in the file.

  Read with several target columns, each row's target is a tuple of strings, one per column.
  """

  path: str
  inputs: list[str]
  targets: list[str]
  rows: list[int]
  split: list[str] | None = None
  header: list[str] | None = None  # a CSV's columns, and each row's cells, when read with keep_cells
  cells: list[list[str]] | None = None


def open_text(path: Path) -> io.TextIOBase:
  if path.suffix == '.gz':
    return io.TextIOWrapper(gzip.open(path, 'rb'), encoding='utf-8-sig', newline='')
  return open(path, encoding='utf-8-sig', newline='')


def read_csv(
  path: Path,
  input_column: str,
  target_column: str | tuple[str, ...],
  split: str | None = None,
  split_column: str | None = None,
  keep_cells: bool = False,
) -> RawTable:
  """Reads a CSV with a header; a missing column is an error listing the columns present.

  With `keep_cells`, the table also holds the header and every row's cells (padded to the header).
  A tuple of target columns gives each row a tuple of their cells.
  """
  try:
    table = _read_csv(path, input_column, target_column, split, split_column, keep_cells)
  except (UnicodeDecodeError, EOFError, OSError, csv.Error) as error:
    raise UserError(f'{path}: cannot be read as UTF-8 CSV text ({type(error).__name__}: {error})') from None
  return table


def _read_csv(path, input_column, target_column, split, split_column, keep_cells) -> RawTable:
  with open_text(path) as stream:
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
      raise UserError(f'{path}: the file is empty (expected a header row)')
    header = [name.strip() for name in header]
    several = isinstance(target_column, tuple)
    target_columns = target_column if several else (target_column,)
    for role, column in [('input', input_column)] + [('target', column) for column in target_columns]:
      if not column:
        raise UserError(f'{path}: the {role} column name is empty; give one of {", ".join(map(repr, header))}')
    wanted = list(dict.fromkeys(c for c in (input_column, *target_columns, split_column) if c))
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
    i, columns = header.index(input_column), [header.index(column) for column in target_columns]
    s = header.index(split_column) if split_column else None
    table = RawTable(str(path), [], [], [], [] if (split or s is not None) else None)
    if keep_cells:
      table.header, table.cells = header, []
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
      cells = tuple(row[t].strip() if t < len(row) else '' for t in columns)
      table.targets.append(cells if several else cells[0])
      table.rows.append(row_number)
      if keep_cells:
        table.cells.append([cell.strip() for cell in row[: len(header)]] + [''] * (len(header) - len(row)))
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
  with open_text(path) as stream:
    for row_number, line in enumerate(stream, start=1):
      if (has_header and row_number == 1) or not line.strip():
        continue
      parts = line.split()
      table.inputs.append(parts[0])
      table.targets.append(parts[1] if len(parts) > 1 else '')
      table.rows.append(row_number)
  return table


def concatenate(tables: Sequence[RawTable]) -> RawTable:
  joined = RawTable(', '.join(t.path for t in tables), [], [], [], [])
  for table in tables:
    joined.inputs += table.inputs
    joined.targets += table.targets
    joined.rows += table.rows
    joined.split += table.split
  return joined


def read_split_csvs(paths: Sequence[Path], target: str, input_column: str = 'formula') -> RawTable:
  names = ('train', 'val', 'test')
  return concatenate([read_csv(p, input_column, target, split=n) for p, n in zip(paths, names)])


def single_csv_reader(input_column: str) -> Callable[[Sequence[Path], str], RawTable]:
  return lambda paths, target: read_csv(paths[0], input_column, target)
