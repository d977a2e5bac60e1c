"""EStateFeaturizer: E-state values against the Kier-Hall definition, metal columns, options."""

from __future__ import annotations

import collections
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import require_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem
from rdkit.Chem.EState import EStateIndices, TypeAtoms

from elemnet_jax.featurizers import FEATURIZERS, build, estate
from elemnet_jax.featurizers.estate import ESTATE_TYPES, METALS, EStateFeaturizer

N_TYPES = len(ESTATE_TYPES)
N_METAL_COLUMNS = len(METALS) + 1

# --- reference: E-state from the Kier-Hall definition, for period-2 atoms (principal n = 2) ---

VALENCE_ELECTRONS = {'C': 4, 'N': 5, 'O': 6, 'F': 7}


def topological_distances(mol: Chem.Mol) -> list[dict[int, int]]:
  """Bonds on the shortest path from each atom to every atom it is connected to (breadth first)."""
  neighbours = [[n.GetIdx() for n in atom.GetNeighbors()] for atom in mol.GetAtoms()]
  distances = []
  for start in range(mol.GetNumAtoms()):
    seen, frontier, step = {start: 0}, [start], 0
    while frontier:
      step += 1
      frontier = [j for i in frontier for j in neighbours[i] if j not in seen]
      for j in frontier:
        seen.setdefault(j, step)
    distances.append(seen)
  return distances


def kier_hall_estate(mol: Chem.Mol) -> list[float]:
  """S_i = I_i + sum_j (I_i - I_j) / (r_ij + 1)^2 with I = ((2/N)^2 delta_v + 1) / delta."""
  intrinsic = []
  for atom in mol.GetAtoms():
    delta = atom.GetDegree()  # heavy neighbours: sigma electrons minus hydrogens
    delta_v = VALENCE_ELECTRONS[atom.GetSymbol()] - atom.GetTotalNumHs()
    intrinsic.append(((2 / 2) ** 2 * delta_v + 1) / delta)
  return [
    intrinsic[i] + sum((intrinsic[i] - intrinsic[j]) / (r + 1) ** 2 for j, r in row.items() if j != i)
    for i, row in enumerate(topological_distances(mol))
  ]


# Per atom, in SMILES order: (Hall-Kier type, E-state derived by hand from the definition).
HAND_DERIVED = {
  # CH3: delta 1, delta_v 4-3=1, I = (1+1)/1 = 2; CH2: delta 2, delta_v 2, I = (2+1)/2 = 1.5;
  # OH: delta 1, delta_v 6-1=5, I = (5+1)/1 = 6. Distances CH3-CH2 1, CH3-O 2, CH2-O 1.
  'CCO': [
    ('sCH3', 2 + (2 - 1.5) / 2**2 + (2 - 6) / 3**2),  # 1.680556
    ('ssCH2', 1.5 + (1.5 - 2) / 2**2 + (1.5 - 6) / 2**2),  # 0.25
    ('sOH', 6 + (6 - 1.5) / 2**2 + (6 - 2) / 3**2),  # 7.569444
  ],
  # aromatic CH: delta 2, delta_v 4-1=3, I = (3+1)/2 = 2; all six equal, so no perturbation.
  'c1ccccc1': [('aaCH', 2.0)] * 6,
  # CH3 I = 2; C(=O): delta 3, delta_v 4, I = 5/3; =O: delta 1, delta_v 6, I = 7; OH: I = 6.
  # Distances: CH3-C 1, CH3-O 2, CH3-OH 2, C-O 1, C-OH 1, O-OH 2.
  'CC(=O)O': [
    ('sCH3', 2 + (2 - 5 / 3) / 4 + (2 - 7) / 9 + (2 - 6) / 9),  # 1.083333
    ('dssC', 5 / 3 + (5 / 3 - 2) / 4 + (5 / 3 - 7) / 4 + (5 / 3 - 6) / 4),  # -0.833333
    ('dO', 7 + (7 - 2) / 9 + (7 - 5 / 3) / 4 + (7 - 6) / 9),  # 9.0
    ('sOH', 6 + (6 - 2) / 9 + (6 - 5 / 3) / 4 + (6 - 7) / 9),  # 7.416667
  ],
  # CH3 I = 2; C#: delta 2, delta_v 4, I = 5/2; N#: delta 1, delta_v 5, I = 6.
  'CC#N': [
    ('sCH3', 2 + (2 - 2.5) / 4 + (2 - 6) / 9),
    ('tsC', 2.5 + (2.5 - 2) / 4 + (2.5 - 6) / 4),
    ('tN', 6 + (6 - 2.5) / 4 + (6 - 2) / 9),
  ],
}
# Further molecules checked against `kier_hall_estate` only; types per atom in SMILES order.
TYPED = {
  'c1cc[nH]c1': ['aaCH', 'aaCH', 'aaCH', 'aaNH', 'aaCH'],
  'Fc1ccc(OC)cc1': ['sF', 'aasC', 'aaCH', 'aaCH', 'aasC', 'ssO', 'sCH3', 'aaCH', 'aaCH'],
  'CC(C)(C)c1ccncc1': ['sCH3', 'ssssC', 'sCH3', 'sCH3', 'aasC', 'aaCH', 'aaCH', 'aaN', 'aaCH', 'aaCH'],
  'C=CC(=O)N': ['dCH2', 'dsCH', 'dssC', 'dO', 'sNH2'],
}


def expected_vectors(types: list[str], values: list[float]) -> tuple[np.ndarray, np.ndarray]:
  counts, sums = np.zeros(N_TYPES), np.zeros(N_TYPES)
  for atom_type, value in zip(types, values, strict=True):
    counts[ESTATE_TYPES.index(atom_type)] += 1
    sums[ESTATE_TYPES.index(atom_type)] += value
  return counts, sums


def test_reference_matches_hand_derivation():
  for smiles, atoms in HAND_DERIVED.items():
    reference = kier_hall_estate(Chem.MolFromSmiles(smiles))
    np.testing.assert_allclose(reference, [value for _, value in atoms], rtol=1e-12, err_msg=smiles)


def test_reference_agrees_with_rdkit_estate_indices():  # secondary cross-check
  for smiles in [*HAND_DERIVED, *TYPED]:
    mol = Chem.MolFromSmiles(smiles)
    np.testing.assert_allclose(EStateIndices(mol), kier_hall_estate(mol), rtol=1e-12, err_msg=smiles)


def test_atom_types_match_rdkit_typing():
  for smiles, types in [*((s, [t for t, _ in a]) for s, a in HAND_DERIVED.items()), *TYPED.items()]:
    assert [t for (t,) in TypeAtoms(Chem.MolFromSmiles(smiles))] == types, smiles


@pytest.mark.parametrize('smiles', [*HAND_DERIVED, *TYPED])
def test_counts_and_sums_match_kier_hall(smiles):
  if smiles in HAND_DERIVED:
    types, values = [t for t, _ in HAND_DERIVED[smiles]], [v for _, v in HAND_DERIVED[smiles]]
  else:
    types, values = TYPED[smiles], kier_hall_estate(Chem.MolFromSmiles(smiles))
  counts, sums = expected_vectors(types, values)
  features, keys, invalid = EStateFeaturizer(metals=False).featurize([smiles])
  assert invalid == [] and keys == [Chem.MolToSmiles(Chem.MolFromSmiles(smiles))]
  np.testing.assert_array_equal(features[0, :N_TYPES], counts)
  np.testing.assert_allclose(features[0, N_TYPES:], sums, rtol=1e-6, atol=1e-6)


def test_ethanol_values_pinned():
  features, _, _ = EStateFeaturizer(parts='sums', metals=False).featurize(['CCO'])
  row = dict(zip(EStateFeaturizer(parts='sums', metals=False).column_names(), features[0], strict=True))
  assert row['sum_sCH3'] == pytest.approx(121 / 72, rel=1e-6)  # 2 + 1/8 - 4/9
  assert row['sum_ssCH2'] == pytest.approx(0.25, rel=1e-6)
  assert row['sum_sOH'] == pytest.approx(545 / 72, rel=1e-6)  # 6 + 9/8 + 4/9
  assert sum(v != 0 for v in row.values()) == 3


def test_rdkit_undercount_quirk_is_kept():
  # FingerprintMol counts unique atom sets, so ethane's two bonded CH3 count once; a change here
  # means RDKit changed its fingerprint and saved models would see different inputs.
  features, _, _ = EStateFeaturizer(metals=False).featurize(['CC'])
  i = ESTATE_TYPES.index('sCH3')
  assert features[0, i] == 1 and features[0, N_TYPES + i] == pytest.approx(2.0)


# --- metal-centre columns ---


def metal_columns(featurizer, smiles_list):
  features, _, invalid = featurizer.featurize(smiles_list)
  assert invalid == []
  names = featurizer.column_names()
  return [dict(zip(names, row, strict=True)) for row in features]


def test_metal_fragment_counts():
  featurizer = EStateFeaturizer()
  zinc, plain, titanyl, two_metals = metal_columns(
    featurizer, ['C1=CC=CC=C1.[Zn]', 'c1ccccc1', 'c1ccccc1.[Ti][O]', '[Cu].[Cu].[Fe]']
  )
  assert zinc['metal_Zn'] == 1 and zinc['fragments'] == 2
  assert sum(zinc[f'metal_{m}'] for m in METALS) == 1
  assert all(plain[f'metal_{m}'] == 0 for m in METALS) and plain['fragments'] == 1
  assert titanyl['metal_Ti'] == 1 and titanyl['fragments'] == 2
  assert two_metals['metal_Cu'] == 2 and two_metals['metal_Fe'] == 1 and two_metals['fragments'] == 3
  # a disconnected metal does not perturb the organic part's E-state
  assert all(zinc[k] == plain[k] for k in zinc if k.startswith(('count_', 'sum_')))


def test_metal_list():
  assert len(set(METALS)) == len(METALS)
  for symbol in ('Sc', 'Zn', 'Y', 'Cd', 'Hf', 'Hg', 'Li', 'Mg', 'Al', 'Sn', 'Pb', 'Bi'):
    assert symbol in METALS
  assert not {'La', 'Ce', 'Lu', 'C', 'N', 'Si', 'B'} & set(METALS)


# --- options, width, description ---


@pytest.mark.parametrize(
  'parts, metals, width',
  [
    ('counts', True, 79 + N_METAL_COLUMNS),
    ('sums', True, 79 + N_METAL_COLUMNS),
    ('both', True, 158 + N_METAL_COLUMNS),
    ('counts', False, 79),
    ('sums', False, 79),
    ('both', False, 158),
  ],
)
def test_width_and_column_names(parts, metals, width):
  featurizer = EStateFeaturizer(parts=parts, metals=metals)
  names = featurizer.column_names()
  assert featurizer.width == width == len(names) == len(set(names))
  features, _, _ = featurizer.featurize(['CCO', 'c1ccccc1.[Zn]'])
  assert features.shape == (2, width) and features.dtype == np.float32


def test_parts_are_slices_of_both():
  smiles = ['CC(=O)O', 'c1ccccc1.[Zn]', 'Fc1ccc(OC)cc1']
  both, _, _ = EStateFeaturizer().featurize(smiles)
  counts, _, _ = EStateFeaturizer(parts='counts').featurize(smiles)
  sums, _, _ = EStateFeaturizer(parts='sums', metals=False).featurize(smiles)
  np.testing.assert_array_equal(counts[:, :N_TYPES], both[:, :N_TYPES])
  np.testing.assert_array_equal(counts[:, N_TYPES:], both[:, 2 * N_TYPES :])
  np.testing.assert_array_equal(sums, both[:, N_TYPES : 2 * N_TYPES])


def test_default_and_registered():
  featurizer = EStateFeaturizer()
  assert featurizer.parts == 'both' and featurizer.metals is True
  assert FEATURIZERS['estate'] is EStateFeaturizer
  assert EStateFeaturizer.input_kind == 'smiles'


@pytest.mark.parametrize(
  'options', [{}, {'parts': 'counts'}, {'parts': 'sums', 'metals': False}, {'workers': 1}, {'morgan_bits': 64}]
)
def test_description_round_trips(options):
  featurizer = EStateFeaturizer(**options)
  description = json.loads(json.dumps(featurizer.description()))
  assert description['name'] == 'estate' and description['width'] == featurizer.width
  rebuilt = build(description)
  assert isinstance(rebuilt, EStateFeaturizer) and rebuilt.description() == featurizer.description()
  smiles = ['CCO', 'c1ccccc1.[Zn]', 'C1CC']
  for a, b in zip(featurizer.featurize(smiles), rebuilt.featurize(smiles), strict=True):
    np.testing.assert_array_equal(np.asarray(a, dtype=object), np.asarray(b, dtype=object))


@pytest.mark.parametrize(
  'options',
  [
    {'part': 'both'},
    {'parts': 'all'},
    {'metals': 'yes'},
    {'workers': -1},
    {'workers': 1.5},
    {'workers': True},
    {'morgan_bits': -8},
    {'morgan_bits': 64, 'morgan_radius': -1},
  ],
)
def test_bad_options_raise_value_error(options):
  with pytest.raises(ValueError, match='estate'):
    EStateFeaturizer(**options)


@pytest.mark.parametrize(
  'smiles, radius, counts',
  [
    # By hand: radius 0 gives one environment per heavy atom; radius 1 adds one per atom whose
    # neighbourhood is a new bond set. Ethanol's three atoms differ, benzene's six are alike.
    ('CCO', 0, [1, 1, 1]),
    ('CCO', 1, [1, 1, 1, 1, 1, 1]),
    ('c1ccccc1', 1, [6, 6]),
  ],
)
def test_morgan_counts_follow_the_atom_environments(smiles, radius, counts):
  plain = EStateFeaturizer()
  featurizer = EStateFeaturizer(morgan_bits=2048, morgan_radius=radius)
  assert featurizer.width == plain.width + 2048 and featurizer.column_names()[-1] == 'morgan_2047'
  (row,), _, _ = featurizer.featurize([smiles])
  np.testing.assert_array_equal(row[: plain.width], plain.featurize([smiles])[0][0])  # E-state part unchanged
  morgan = row[plain.width :]
  assert sorted(morgan[morgan > 0].tolist()) == counts


def test_description_without_morgan_matches_models_saved_before_it():
  # A model saved before the Morgan option existed describes its featurizer with these keys only.
  assert EStateFeaturizer().description() == {
    'name': 'estate',
    'width': 158 + N_METAL_COLUMNS,
    'parts': 'both',
    'metals': True,
  }


# --- keys, invalid inputs, logging ---


def test_keys_group_identical_molecules():
  _, keys, _ = EStateFeaturizer().featurize(['CCO', 'OCC', 'C1=CC=CC=C1.[Zn]', '[Zn].c1ccccc1', 'CCO'])
  assert keys[0] == keys[1] == keys[4] == 'CCO'
  assert keys[2] == keys[3] != ''


def test_invalid_inputs_reported_not_raised(capfd):
  inputs = ['CCO', 'C1CC', 'not_a_smiles', '', 'c1ccccc1', 'CCO extra', None, '*C']
  features, keys, invalid = EStateFeaturizer().featurize(inputs)
  assert [i for i, _ in invalid] == [1, 2, 3, 5, 6, 7]
  reasons = dict(invalid)
  assert reasons[1] == reasons[2] == 'RDKit cannot parse SMILES'
  assert reasons[3] == 'empty SMILES' and reasons[5] == 'SMILES contains whitespace'
  assert reasons[6] == 'SMILES is not a string'
  assert reasons[7] == "SMILES has a wildcard atom '*', not a molecule"
  assert not any(inputs[i] and inputs[i] in reason for i, reason in invalid)
  for i, _ in invalid:
    assert keys[i] == '' and not features[i].any()
  assert keys[0] == 'CCO' and keys[4] == 'c1ccccc1' and features[0].any() and features[4].any()
  assert capfd.readouterr().err == ''
  Chem.MolFromSmiles('C1CC')  # RDKit's logging is back on afterwards
  assert 'SMILES Parse Error' in capfd.readouterr().err


def test_empty_input():
  features, keys, invalid = EStateFeaturizer().featurize([])
  assert features.shape == (0, EStateFeaturizer().width) and keys == [] and invalid == []


SMILES_ALPHABET = 'CNOSFclnos()[]=#+-@H1234.%/\\ZnTiCu '


def check_single(text):
  featurizer = EStateFeaturizer()
  features, keys, invalid = featurizer.featurize([text])
  assert features.shape == (1, featurizer.width) and len(keys) == 1
  if invalid:
    assert len(invalid) == 1 and invalid[0][0] == 0 and isinstance(invalid[0][1], str) and invalid[0][1]
    assert keys == [''] and not features.any()
  else:
    assert keys[0] != '' and np.isfinite(features).all()
    counts = features[0, :N_TYPES]
    assert (counts >= 0).all() and (counts == np.round(counts)).all()


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_never_raises(text):
  check_single(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=SMILES_ALPHABET, max_size=30))
def test_smiles_like_text_never_raises(text):
  check_single(text)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(['CCO', 'OCC', 'C1CC', '', 'c1ccccc1.[Zn]', 'CC#N', 'x']), max_size=12))
def test_batch_equals_one_at_a_time(batch):
  featurizer = EStateFeaturizer()
  features, keys, invalid = featurizer.featurize(batch)
  for i, smiles in enumerate(batch):
    one, one_key, one_invalid = featurizer.featurize([smiles])
    np.testing.assert_array_equal(features[i], one[0])
    assert keys[i] == one_key[0]
    assert [reason for j, reason in invalid if j == i] == [reason for _, reason in one_invalid]


# --- real data: MpPD (377 metalloporphyrins, one unparseable SMILES) ---


def porphyrin_file(name: str) -> Path:
  """The verified local copy of a porphyrin dataset file, as the project fetches it (else the test skips)."""
  from elemnet_jax.data import datasets, fetch

  dataset = {'MpPD.csv.gz': 'porphyrin_mppd', 'PBDD.csv.gz': 'porphyrin_pbdd'}[name]
  require_dataset(dataset)
  return fetch.fetch(datasets.DATASETS[dataset].files[0])


def read_smiles(path: Path) -> list[str]:
  from elemnet_jax.data.readers import open_text

  with open_text(path) as stream:  # plain or gzipped
    return [row['smiles'] for row in csv.DictReader(stream)]


@pytest.fixture(scope='module')
def mppd_smiles():
  return read_smiles(porphyrin_file('MpPD.csv.gz'))


def test_mppd(mppd_smiles, capfd):
  featurizer = EStateFeaturizer(workers=1)
  features, keys, invalid = featurizer.featurize(mppd_smiles)
  assert len(mppd_smiles) == 377
  assert len(invalid) == 1 and invalid[0][1] == 'RDKit cannot parse SMILES'
  assert capfd.readouterr().err == ''
  valid = np.array([i != invalid[0][0] for i in range(len(mppd_smiles))])
  names = featurizer.column_names()
  metal_count = features[:, [names.index(f'metal_{m}') for m in METALS]].sum(1)
  assert (metal_count[valid] >= 1).mean() > 0.8
  assert np.isfinite(features).all() and all(keys[i] for i in np.flatnonzero(valid))
  metals = collections.Counter(m for m in METALS for row in features if row[names.index(f'metal_{m}')])
  assert set(metals) == {'Co', 'Ni', 'Cu', 'Mn', 'Fe', 'Zn'}


def test_worker_pool_gives_identical_features(mppd_smiles, monkeypatch, caplog):
  serial = EStateFeaturizer(workers=1).featurize(mppd_smiles)
  monkeypatch.setattr(estate, 'PARALLEL_MIN', 1)
  monkeypatch.setattr(estate, 'PROGRESS_MIN', 10)
  with caplog.at_level(logging.INFO):
    pooled = EStateFeaturizer(workers=2).featurize(mppd_smiles)
  np.testing.assert_array_equal(pooled[0], serial[0])
  assert pooled[1:] == serial[1:]
  messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith('estate:')]
  assert not any('pool failed' in m for m in messages)
  assert messages[0].endswith('in 2 process(es)')
  assert [m.split('(')[-1] for m in messages[1:]] == ['25%)', '50%)', '75%)', '100%)']
