"""SMILES -> Kier-Hall E-state fingerprint (79 atom types) plus metal-centre counts.

Columns, in order (see `EStateFeaturizer.column_names`):
  ``count_<type>``  79 atom-type counts        (parts 'counts' or 'both')
  ``sum_<type>``    79 atom-type E-state sums  (parts 'sums' or 'both')
  ``metal_<El>``    one atom count per element of `METALS`  (metals=True)
  ``fragments``     number of disconnected fragments        (metals=True)
  ``morgan_<i>``    Morgan (circular) substructure counts hashed into `morgan_bits` columns
                    (morgan_bits > 0; radius `morgan_radius`)
The 79 types are RDKit's, in the order `rdkit.Chem.EState.Fingerprinter.FingerprintMol` returns
them; molecules are hydrogen-suppressed, as `Chem.MolFromSmiles` gives them. E-state assigns metals
no type, and porphyrin SMILES carry the metal as a separate fragment (``...[N]5).[Zn]``), hence
the metal and fragment columns. The two pyrrole N written as radicals (``[N]``) match no type
either (they still perturb their neighbours' E-state), nor does a radical ``[O]`` on ``[Ti]``.

RDKit quirk, kept for fidelity: `FingerprintMol` counts substructure matches with
``uniquify=True``, so two same-type atoms whose patterns cover the same atom set count once
(ethane gives ``count_sCH3 == 1``, cyclopropane ``count_ssCH2 == 1``). It does not arise in the
porphyrin sets (checked against a per-atom count on PBDD and MpPD).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from absl import logging
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.EState import AtomTypes
from rdkit.Chem.EState.Fingerprinter import FingerprintMol

from elemnet_jax import machine

if AtomTypes.esPatterns is None:
  AtomTypes.BuildPatts()
# The 79 Hall-Kier atom types ('sCH3', 'aaCH', 'dO', ...), in FingerprintMol's column order.
ESTATE_TYPES = tuple(type_name for type_name, _ in AtomTypes.esPatterns)
if len(ESTATE_TYPES) != 79:
  raise ImportError(f'RDKit has {len(ESTATE_TYPES)} E-state atom types, expected 79')

# Metals that can sit in a porphyrin (no lanthanides): s-block, the d-block rows Sc..Zn, Y..Cd,
# Hf..Hg, then p-block metals.
METALS = tuple(
  (
    'Li Na K Mg Ca '
    'Sc Ti V Cr Mn Fe Co Ni Cu Zn Y Zr Nb Mo Tc Ru Rh Pd Ag Cd Hf Ta W Re Os Ir Pt Au Hg '
    'Al Ga In Sn Pb Sb Bi'
  ).split()
)
METAL_INDEX = {symbol: i for i, symbol in enumerate(METALS)}

PARTS = ('counts', 'sums', 'both')
PARALLEL_MIN = 2000  # distinct SMILES below which a worker pool is not worth its start-up
PROGRESS_MIN = 2000  # inputs above which progress is logged every 25%
_CHUNK = 256  # distinct SMILES per task; results do not depend on it
MAX_ATOMS = 500  # heavy atoms; a larger molecule is an invalid input (800 atoms take 0.7 s, 3,200 atoms 49 s)


def estate_row(
  mol: Chem.Mol, parts: str = 'both', metals: bool = True, morgan_bits: int = 0, morgan_radius: int = 2
) -> np.ndarray:
  """The feature row (float32) of one parsed, hydrogen-suppressed molecule."""
  counts, sums = FingerprintMol(mol)
  pieces = []
  if parts in ('counts', 'both'):
    pieces.append(np.asarray(counts, np.float32))
  if parts in ('sums', 'both'):
    pieces.append(np.asarray(sums, np.float32))
  if metals:
    metal_counts = np.zeros(len(METALS) + 1, np.float32)
    for atom in mol.GetAtoms():
      index = METAL_INDEX.get(atom.GetSymbol())
      if index is not None:
        metal_counts[index] += 1
    metal_counts[-1] = len(Chem.GetMolFrags(mol))
    pieces.append(metal_counts)
  if morgan_bits:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=morgan_radius, fpSize=morgan_bits)
    pieces.append(generator.GetCountFingerprintAsNumPy(mol).astype(np.float32))
  return np.concatenate(pieces)


def _featurize_chunk(
  smiles: Sequence[str],
  parts: str,
  metals: bool,
  width: int,
  morgan: tuple[int, int] = (0, 2),
  max_atoms: int = MAX_ATOMS,
):
  """(rows [m, width], canonical SMILES or '', reason or None) for distinct SMILES strings."""
  rows = np.zeros((len(smiles), width), np.float32)
  keys = [''] * len(smiles)
  reasons: list[str | None] = [None] * len(smiles)
  with rdBase.BlockLogs():
    for i, text in enumerate(smiles):
      if not isinstance(text, str):
        reasons[i] = 'SMILES is not a string'
        continue
      text = text.strip()
      if not text:
        reasons[i] = 'empty SMILES'
        continue
      if any(c.isspace() for c in text):  # RDKit would silently drop what follows a space
        reasons[i] = 'SMILES contains whitespace'
        continue
      try:
        mol = Chem.MolFromSmiles(text)
      except Exception:  # a parser crash is one more invalid input
        mol = None
      if mol is None:
        reasons[i] = 'RDKit cannot parse SMILES'
        continue
      if mol.GetNumAtoms() == 0:
        reasons[i] = 'SMILES has no atoms'
        continue
      if any(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
        reasons[i] = "SMILES has a wildcard atom '*', not a molecule"
        continue
      if mol.GetNumAtoms() > max_atoms:  # the E-state's cost grows about as the cube of the atom count
        count = mol.GetNumAtoms()
        reasons[i] = f'molecule has {count} heavy atoms, over the limit of {max_atoms} (featurizer.max_atoms)'
        continue
      try:
        rows[i] = estate_row(mol, parts, metals, *morgan)
        keys[i] = Chem.MolToSmiles(mol)
      except Exception as error:  # reported, never raised
        rows[i] = 0.0
        reasons[i] = f'RDKit cannot compute E-state ({type(error).__name__})'
  return rows, keys, reasons


def _with_progress(chunk_results, total: int, log: bool) -> list:
  """Collects chunk results, logging at 25%, 50%, 75% and 100% of `total` when `log`."""
  results, done, quarter = [], 0, 1
  for result in chunk_results:
    results.append(result)
    done += len(result[1])
    while log and quarter <= 4 and done >= quarter * total / 4:
      logging.info('estate: %d/%d distinct SMILES done (%d%%)', done, total, 25 * quarter)
      quarter += 1
  return results


class EStateFeaturizer:
  """E-state atom-type counts and/or sums of a SMILES, with optional metal-centre counts.

  Options:
    parts: 'counts', 'sums' or 'both' (counts then sums).
    metals: add one count per element of `METALS` and the number of fragments.
    morgan_bits: append RDKit's Morgan count fingerprint folded to this many columns (0: none);
      morgan_radius: its radius. E-state types say which atoms a molecule has, Morgan counts
      which neighbourhoods.
    workers: processes for large inputs; 0 uses every available core, 1 stays in-process.
      It never changes the features.
    max_atoms: molecules with more heavy atoms are invalid inputs, refused before their E-state is
      computed (its cost grows about as the cube of the atom count); default `MAX_ATOMS`. Like
      `workers`, it is not part of the description: a model predicts with the default.
  """

  name = 'estate'
  input_kind = 'smiles'

  def __init__(self, **options):
    known = ('max_atoms', 'metals', 'morgan_bits', 'morgan_radius', 'parts', 'workers')
    unknown = sorted(set(options) - set(known))
    if unknown:
      raise ValueError(f'featurizer estate: unknown option(s) {unknown}; known: {", ".join(known)}')
    self.parts = options.get('parts', 'both')
    self.metals = options.get('metals', True)
    self.workers = options.get('workers', 0)
    self.morgan_bits = options.get('morgan_bits', 0)
    self.morgan_radius = options.get('morgan_radius', 2)
    self.max_atoms = options.get('max_atoms', MAX_ATOMS)
    if self.parts not in PARTS:
      raise ValueError(f'featurizer estate: parts must be one of {list(PARTS)}, got {self.parts!r}')
    if not isinstance(self.metals, bool):
      raise ValueError(f'featurizer estate: metals must be true or false, got {self.metals!r}')
    for field, low in (('workers', 0), ('morgan_bits', 0), ('morgan_radius', 0), ('max_atoms', 1)):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'featurizer estate: {field} must be an integer >= {low}, got {value!r}')

  @property
  def width(self) -> int:
    return len(self.column_names())

  def column_names(self) -> list[str]:
    names = []
    if self.parts in ('counts', 'both'):
      names += [f'count_{t}' for t in ESTATE_TYPES]
    if self.parts in ('sums', 'both'):
      names += [f'sum_{t}' for t in ESTATE_TYPES]
    if self.metals:
      names += [f'metal_{m}' for m in METALS] + ['fragments']
    return names + [f'morgan_{i}' for i in range(self.morgan_bits)]

  def blank(self, x: np.ndarray) -> np.ndarray:
    """[n] bool: rows with no E-state atom type and no metal (methane, water, H2, [O]): they all look alike."""
    names = self.column_names()
    informative = [j for j, name in enumerate(names) if name.split('_')[0] in ('count', 'sum', 'metal')]
    return ~np.asarray(x)[:, informative].any(axis=1)

  def unseen_atoms(self, inputs: Sequence[str]) -> list[str]:
    """Per input, a warning naming the atoms its features cannot see ('' if none): atoms with no E-state
    type that are not counted as metals, such as the chloride of [Na+].[Cl-] or the carbon of methane."""
    warnings, quiet = [], rdBase.BlockLogs()  # unparsable inputs are reported as invalid elsewhere
    for text in inputs:
      mol = Chem.MolFromSmiles(text.strip()) if isinstance(text, str) else None  # as the featurizer reads it
      if mol is None or mol.GetNumAtoms() > self.max_atoms:  # reported as invalid elsewhere
        warnings.append('')
        continue
      types = AtomTypes.TypeAtoms(mol)
      counted = METAL_INDEX if self.metals else {}
      unseen = [_atom_label(atom) for atom, found in zip(mol.GetAtoms(), types) if not found]
      unseen = [label for label in unseen if label.rstrip('+-0123456789') not in counted]
      warnings.append(f'atoms the features do not see: {" ".join(unseen)}' if unseen else '')
    del quiet
    return warnings

  def description(self) -> dict:
    # `workers` never changes the features, so it is left out: a model stays usable elsewhere.
    # The Morgan options appear only when used: a description without them means no Morgan columns.
    description = {'name': self.name, 'width': self.width, 'parts': self.parts, 'metals': self.metals}
    if self.morgan_bits:
      description.update(morgan_bits=self.morgan_bits, morgan_radius=self.morgan_radius)
    return description

  def featurize(self, inputs: Sequence[str]) -> tuple[np.ndarray, list[str], list[tuple[int, str]]]:
    """Returns (features [n, width], canonical SMILES keys, [(index, reason)] of invalid inputs).

    Invalid rows are zeros with key ''. Each distinct string is featurized once; with at least
    `PARALLEL_MIN` of them and workers != 1 the work is spread over a process pool.
    """
    n = len(inputs)
    distinct = list(dict.fromkeys(s if isinstance(s, str) else None for s in inputs))
    position = {s: i for i, s in enumerate(distinct)}
    chunks = [distinct[i : i + _CHUNK] for i in range(0, len(distinct), _CHUNK)]
    width = self.width
    workers = min(self.workers or machine.cores(), len(chunks))
    if len(distinct) < PARALLEL_MIN:
      workers = 1
    log_progress = n > PROGRESS_MIN
    if log_progress:
      logging.info('estate: featurizing %d SMILES (%d distinct) in %d process(es)', n, len(distinct), workers)

    morgan = (self.morgan_bits, self.morgan_radius)
    args = (
      chunks,
      [self.parts] * len(chunks),
      [self.metals] * len(chunks),
      [width] * len(chunks),
      [morgan] * len(chunks),
      [self.max_atoms] * len(chunks),
    )
    results = None
    if workers > 1:
      try:  # spawn, not fork: the parent may be running JAX threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as pool:
          results = _with_progress(pool.map(_featurize_chunk, *args), len(distinct), log_progress)
      except BrokenProcessPool:
        logging.warning(
          'estate: the worker pool failed (a script calling featurize needs an '
          "`if __name__ == '__main__':` guard); featurizing in this process"
        )
    if results is None:
      results = _with_progress(map(_featurize_chunk, *args), len(distinct), log_progress)

    rows = np.concatenate([r[0] for r in results]) if results else np.zeros((0, width), np.float32)
    distinct_keys = [k for r in results for k in r[1]]
    distinct_reasons = [k for r in results for k in r[2]]
    features = np.zeros((n, width), np.float32)
    keys = [''] * n
    invalid: list[tuple[int, str]] = []
    for i, text in enumerate(inputs):
      j = position[text if isinstance(text, str) else None]
      if distinct_reasons[j] is None:
        features[i] = rows[j]
        keys[i] = distinct_keys[j]
      else:
        invalid.append((i, distinct_reasons[j]))
    return features, keys, invalid


def _atom_label(atom) -> str:
  """'Cl-', 'Na+', 'C': the element and its formal charge."""
  charge = atom.GetFormalCharge()
  return atom.GetSymbol() + ('' if not charge else ('+' if charge > 0 else '-') * abs(charge))
