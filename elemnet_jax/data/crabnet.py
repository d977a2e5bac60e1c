"""Files of the published CrabNet package: benchmark splits of DFT properties and element tables.

The wheel ``crabnet==2.0.8`` carries ``crabnet/data/`` byte for byte as the CrabNet repository holds it
at the commit below; each file is fetched (and verified) through `elemnet_jax.data.fetch`.
"""

from __future__ import annotations

import dataclasses

from elemnet_jax.data.fetch import RemoteFile

PACKAGE = 'crabnet==2.0.8'
_URL = 'https://raw.githubusercontent.com/anthony-wang/CrabNet/af1e37d67cf2dcd2691de4f8cd2ecb5208267965/crabnet/data/'
LICENCE = 'MIT (CrabNet)'
SPLIT_CITATION = 'split: Wang, Kauwe, Murdock & Sparks, npj Comput. Mater. 7, 77 (2021)'

# SHA-256 of the published train, val and test CSVs of each benchmark folder (OQMD formation enthalpy: `oqmd_fe`).
SPLIT_SHA256 = {
  'CritExam__Ed': (
    'b8de276563588969f9b8a9f7fb59059e2b445da22f4bc84beed5d4b8d3b16934',
    'be508d700c294fffa382887f37dbc1aded4ad2a5f5ab526bad60d987f5a6d7f0',
    'ebe21e71b66eb534c9f53c4e682c3661ed402204805e7a74bf17d03639a978ab',
  ),
  'CritExam__Ef': (
    '717892455f5474fb98d952b2824b09e2abae21d4893eebc5f0e16b5042a9f168',
    'f641c56947685fad49aaf13c31b098593a708d8aff19cf271b2239251d9d6a3a',
    '92052ffc5bad988371946b1c98a605addf88fd2894e2319ed1a39653cecb0f43',
  ),
  'OQMD_Bandgap': (
    '8611a9f1f76ad06d846890d2234e6b37909abd941c156cdc339447bbcce3ada7',
    '7838750eb3b5b09ec296b0fbf194271f6588b4bcd4653e392aba6df04c645002',
    '59206d9cf13387a6cbf5a155f5b350043aee2f190663bb9baf97a6ee85e63d55',
  ),
  'OQMD_Energy_per_atom': (
    'fb10be65788bd6665d2418ce87d49834f1d3b65635a488a96cdc32667ea32d50',
    'd8f3478ebd3463447e3dd985c1e00529dbb5436d28cbf4af29e32a5169c71046',
    'abb63558c7df1fe4feba0c3b51a1da2d02347760601ef0bf4085d7df30bcd487',
  ),
  'OQMD_Volume_per_atom': (
    'd4e924912dd8b4bcf123ddf7822e50c47738028c2fc76024555b130c61d9d848',
    'ca3c843b42a8628d330c3bed198fce1de012ce544d1f5bf4c6a93ef7e9e0224d',
    '5b20ae50b3d28408ab87d153012b58a5eb4fb926392c836a094eac47c6dc2cef',
  ),
  'aflow__Egap': (
    '54cfdde0f9dc313acf2ffb22f49c9861d8d0e1fc5ee3938b8810785db65c1c17',
    '798bd5b2d16cca829be8873a483872910de4c948a1bc55ae89c70efb9be0c545',
    'd2096c4b87dcc1f13407532f048552544cd389d49486770b9b065dffd5cc92ef',
  ),
  'aflow__ael_bulk_modulus_vrh': (
    'b9b371e3fcd47d38dc94e568515980e8b2ed83ef077f4339ba1bbccbef37a62b',
    'cc13020813fdc2a1a14c1e040faca6bcb034d6be2e08440221b9cbaa1cc932eb',
    '2a5b1c547e09f9b7e095802f27e4993d243aa1925b4e6fb991aec31f14c3cbf9',
  ),
  'aflow__ael_debye_temperature': (
    'c01509a7f4c82665e0f0dc6780372189c628ee91adf6a0692f07010c0690a53f',
    'a5d6ae080a68f79ad0c0958da385ef06b5bd523c1c2df7a4e58fa3afe430aa1e',
    'c244bc1615b00940f54847364a24633d7dc82426ceb9974c34ec47ac57884c41',
  ),
  'aflow__ael_shear_modulus_vrh': (
    'ca0017fafc2558e8b9ca9ef11089755e7492d90797a8d38df1530b6d2ddaf1f3',
    '7b58dc465d09e1340b20a49b1c1b994d47eb8349904eb2d7487c465c3f5152b3',
    '59b31cf673943f51cd272ab1f6d5f4574a178ef93bed6cf408632ad87b9de4f4',
  ),
  'aflow__agl_thermal_conductivity_300K': (
    '88e5ccaf4e16ad52c2bc5eff41f19bb97222cf34dc447278fd5a2696bed428a6',
    'f09e073ee63bc4c913d6b5d5c44a324385f0ebd84324c9cb5f789ce62e63f36e',
    'b3884dcde4ea164d061ffb4b22172d68cedc0777f0dc3ada81d1f81e3a9b4cde',
  ),
  'aflow__agl_thermal_expansion_300K': (
    'bf937cad2af75702f16a82728fd52691a67e584b530f5bb703e762d1d92b11fe',
    '026a3632b4f6fb247d2efc40d19c7ae79f092363ca221a4cec057e390cd88fdf',
    '06eb26c729554f9e22046b8b818bb085a471c851b2147acb3049a99d32c06c8f',
  ),
  'aflow__energy_atom': (
    '5ff635bff649b9a68e5cf572125bf4f527751fd49b98d680fb1182a1ca275ad5',
    'ce5c8f7b3175c9c370891c5e29bdf1e0c5e56c103f391f0a538c629ef319b81a',
    'f393d89ac7a506b2415645b9ee4e69e2d15af1469ece679e945f7098d51a6e99',
  ),
  'mp_bulk_modulus': (
    '00d2d02073ca945d357f834eb5a2d7361e8bd8b86f14f8fed2321db585baf731',
    'fd0702d7e1b32f109c8dbc89cbbce6f541fe6bad0fb45cc86d2a35ab4e994906',
    'f205ffa36b5ce2eaf1f066e7b6d2a6931f7bcd233697456dbcbae4c79f911a44',
  ),
  'mp_e_hull': (
    'b3badcdc96484d4ae7c622bf098e75db628a23e89c48b44b0b0af8084e9bb7ae',
    'fbeba63de5701a2e300c52f5192673cbd7737e3b762f2d9a2d2056b982d7fe41',
    '236e6fe8f6406ef28a6805d26e508be0b4d45da1d22aebe779c93d3291c599a0',
  ),
  'mp_elastic_anisotropy': (
    'd9d33f37a8d88835822884bd060581d6a68dd98a59627e05a0f9bce5bae686fe',
    '94f9db600852ec3bf6a2bef0efcc59a3ae5fe0cf10203f9edfc43f340465662c',
    '4fdef93e8b05bb51734835bd73721b3f389544bcbe96978bb6ea5ed1baad9af8',
  ),
  'mp_mu_b': (
    '5489be409844020513f996e432ee3b3078d002b4b6623c5c78c274ef7666c600',
    'b7e7d2cb9003124a35e98a0681f38fa2a00d282cd2a526b4fab361de45799757',
    'd1e6eb185cf04f0c28027ed1cf9f45f28dde034b437894ba4085a6dcad84602d',
  ),
  'mp_shear_modulus': (
    '22f18b123f6d4c1b180c96ee56a0618c35f868e1cb9f9bd758180330b5e95cdf',
    '094b720096cc4d451535d2a227c8186904069d4d7566cb82aebc9c3d777c8036',
    '7ee01a44644916c3df8d1e42212fc4d9be5028b67d51754becb477e72c048317',
  ),
}
# SHA-256 of the element tables under element_properties/.
TABLE_SHA256 = {
  'jarvis.csv': '194a90da50520787d7bf6a89e8d9a39790b6bd218428f83e4874b224bb105527',
  'magpie.csv': '402782379c950c10865b07c4e3044fe6a20c841aef6ffe81bcb912e0bf8de41d',
  'mat2vec.csv': '5dcde1a0fe13040af99dbcb7b3d73eb022ffd085e7f598dce70844d0af83b137',
  'oliynyk.csv': '2067d5c613452eaf8897a353f1821dd10cefd086ea6f9aced3d07fa3d510744c',
  'onehot.csv': '8841d94296d53ed52521969914839c2f19078aaa06ca387ee7c8307059c35840',
  'random_200.csv': 'b818a43aefd9be3025dc300645c68b7ec6070df8bc5fcccc21507a363ad19e65',
  'skipatom_20201009_induced.csv': 'fec6296b735f4fe5de8c6bbc37cd50864ded2ed5a925141e97cc7114794a6b32',
}


def remote(relative: str, sha256: str) -> RemoteFile:
  """The file crabnet/data/`relative`, kept as crabnet/`relative` in a data directory or the cache."""
  return RemoteFile(f'crabnet/{relative}', sha256, _URL + relative, PACKAGE, f'crabnet/data/{relative}')


def split_files(folder: str) -> tuple[RemoteFile, ...]:
  """The published train/val/test CSVs (``formula,target``) of a benchmark folder."""
  names = ('train', 'val', 'test')
  return tuple(remote(f'benchmark_data/{folder}/{n}.csv', sha) for n, sha in zip(names, SPLIT_SHA256[folder]))


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One CrabNet benchmark property, registered as a dataset named `name`."""

  name: str
  folder: str
  description: str
  quantity: str
  unit: str
  citation: str
  max_abs_target: float | None = None  # rows beyond it are dropped (and counted)


_OQMD = 'Kirklin et al., npj Comput. Mater. 1, 15010 (2015)'
_AFLOW = (
  'Toher et al., Phys. Rev. Mater. 1, 015401 (2017) (AFLOW AEL-AGL); '
  'Curtarolo et al., Comput. Mater. Sci. 58, 218 (2012)'
)
_MP = 'Jain et al., APL Mater. 1, 011002 (2013)'
_MP_ELASTIC = 'de Jong et al., Sci. Data 2, 150009 (2015)'
_BARTEL = 'Bartel et al., npj Comput. Mater. 6, 97 (2020)'

BENCHMARKS = (
  Benchmark('oqmd_bandgap', 'OQMD_Bandgap', 'OQMD DFT band gap (93% exactly 0: metals)', 'band gap', 'eV', _OQMD),
  Benchmark('oqmd_volume', 'OQMD_Volume_per_atom', 'OQMD DFT volume per atom', 'volume per atom', 'A^3/atom', _OQMD),
  Benchmark(  # 9 rows below -15 eV/atom (down to -203), all OQMD formation-enthalpy outliers too
    'oqmd_energy', 'OQMD_Energy_per_atom', 'OQMD DFT total energy per atom', 'energy per atom', 'eV/atom', _OQMD, 15.0
  ),
  Benchmark('aflow_bandgap', 'aflow__Egap', 'AFLOW DFT band gap (half exactly 0)', 'band gap', 'eV', _AFLOW),
  Benchmark(
    'aflow_energy', 'aflow__energy_atom', 'AFLOW DFT total energy per atom', 'energy per atom', 'eV/atom', _AFLOW
  ),
  Benchmark(
    'aflow_bulk_modulus', 'aflow__ael_bulk_modulus_vrh', 'AFLOW AEL bulk modulus (VRH)', 'bulk modulus', 'GPa', _AFLOW
  ),
  Benchmark(
    'aflow_shear_modulus',
    'aflow__ael_shear_modulus_vrh',
    'AFLOW AEL shear modulus (VRH)',
    'shear modulus',
    'GPa',
    _AFLOW,
  ),
  Benchmark(
    'aflow_debye_temperature',
    'aflow__ael_debye_temperature',
    'AFLOW AEL Debye temperature',
    'Debye temperature',
    'K',
    _AFLOW,
  ),
  Benchmark(
    'aflow_thermal_conductivity',
    'aflow__agl_thermal_conductivity_300K',
    'AFLOW AGL thermal conductivity at 300 K',
    'thermal conductivity',
    'W/(m K)',
    _AFLOW,
  ),
  Benchmark(
    'aflow_thermal_expansion',
    'aflow__agl_thermal_expansion_300K',
    'AFLOW AGL thermal expansion at 300 K',
    'thermal expansion coefficient',
    '1/K',
    _AFLOW,
  ),
  Benchmark(
    'mp_bulk_modulus', 'mp_bulk_modulus', 'Materials Project bulk modulus (VRH)', 'bulk modulus', 'GPa', _MP_ELASTIC
  ),
  Benchmark(
    'mp_shear_modulus', 'mp_shear_modulus', 'Materials Project shear modulus (VRH)', 'shear modulus', 'GPa', _MP_ELASTIC
  ),
  Benchmark(
    'mp_elastic_anisotropy',
    'mp_elastic_anisotropy',
    'Materials Project universal elastic anisotropy',
    'elastic anisotropy',
    '',
    _MP_ELASTIC,
  ),
  Benchmark(
    'mp_e_hull', 'mp_e_hull', 'Materials Project energy above the convex hull', 'energy above hull', 'eV/atom', _MP
  ),
  Benchmark(
    'mp_magnetic_moment', 'mp_mu_b', 'Materials Project total magnetic moment (signed)', 'magnetic moment', 'mu_B', _MP
  ),
  Benchmark(
    'mp_formation_energy_bartel',
    'CritExam__Ef',
    'Materials Project formation energy, Bartel et al. set',
    'formation energy',
    'eV/atom',
    _BARTEL,
  ),
  Benchmark(
    'mp_decomposition_energy_bartel',
    'CritExam__Ed',
    'Materials Project decomposition energy (stability), Bartel et al. set',
    'decomposition energy',
    'eV/atom',
    _BARTEL,
  ),
)
