"""The featurizer interface the README describes works end to end: one class, one `register` call."""

import json

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from elemnet_jax import configs, featurizers
from elemnet_jax.configs import test as test_configs
from elemnet_jax.predict import predict_inputs
from elemnet_jax.run import train_and_evaluate


class MorganFeaturizer:  # the interface of README.md, "Extending"
  name, input_kind = 'morgan', 'smiles'

  def __init__(self, radius=2, bits=1024):
    self.radius, self.bits, self.width = radius, bits, bits

  def description(self):
    return {'name': self.name, 'width': self.width, 'radius': self.radius, 'bits': self.bits}

  def featurize(self, inputs):
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=self.radius, fpSize=self.bits)
    x, keys, invalid = np.zeros((len(inputs), self.bits), np.float32), [''] * len(inputs), []
    with rdBase.BlockLogs():
      for i, smiles in enumerate(inputs):
        mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
        if mol is None:
          invalid.append((i, 'RDKit cannot parse SMILES'))
          continue
        x[i], keys[i] = generator.GetFingerprintAsNumPy(mol), Chem.MolToSmiles(mol)
    return x, keys, invalid


def test_a_new_featurizer_trains_saves_and_predicts(tmp_path, molecules_csv):
  featurizers.register(MorganFeaturizer)
  config = test_configs.get_config()
  config.dataset.update(
    name=str(molecules_csv), target='logp', input_column='smiles', input_kind='smiles', skip_invalid=True
  )
  config.featurizer = type(config.featurizer)({'name': 'morgan', 'bits': 256})
  config.features.update(drop_constant=True, standardize=True)
  config.train.target_scaling = 'standard'
  metrics = train_and_evaluate(configs.resolve(config), tmp_path)
  assert metrics['data']['invalid_skipped'] == 1 and metrics['test']['n'] == 40
  meta = json.loads((tmp_path / 'model' / 'meta.json').read_text())
  assert meta['featurizer'] == {'name': 'morgan', 'width': 256, 'radius': 2, 'bits': 256}
  width = len(meta['feature_scaling']['keep'])
  assert 0 < width < 256  # constant bits dropped on the training split, saved with the model
  predicted = predict_inputs([str(tmp_path)], ['c1ccc2cc3ccccc3cc2c1', 'not smiles'])
  assert np.isfinite(predicted.mean[0]) and predicted.errors == ['', 'RDKit cannot parse SMILES']
