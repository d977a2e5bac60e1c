"""Shipped pretrained models: exported from a finished run, checked by SHA-256, usable wherever a workdir is."""

import csv
import json

import numpy as np
import pytest
from conftest import config_with, require_dataset, user_error

import elemnet_jax as ej
from elemnet_jax import configs, inputs, predict, workdir
from elemnet_jax import pretrained as shipped
from elemnet_jax.data import datasets

SAMPLE = 2000


def test_an_exported_run_predicts_as_the_run_does_and_a_changed_byte_is_refused(pretrained, tmp_path):
  folder = tmp_path / 'tiny'
  digests = shipped.export(pretrained, folder)
  assert set(digests) == set(shipped.FILES)
  shipped.verify(folder, digests)
  formulas = ['Fe2O3', 'NaCl', 'Xx']
  before, after = predict.predict_inputs([str(pretrained)], formulas), predict.predict_inputs([str(folder)], formulas)
  np.testing.assert_array_equal(after.mean, before.mean)  # float32, as trained
  assert after.errors == before.errors and after.meta['target'] == before.meta['target']
  params = folder / 'model' / 'params.npz'
  corrupted = bytearray(params.read_bytes())
  corrupted[len(corrupted) // 2] ^= 1
  params.write_bytes(bytes(corrupted))
  user_error(lambda: shipped.verify(folder, digests), 'params.npz', 'SHA-256', 'reinstall elemnet_jax')
  (folder / 'metrics.json').unlink()
  user_error(lambda: shipped.verify(folder, digests), 'metrics.json: missing')


def test_a_shipped_model_is_verified_and_predicts_oqmd_formation_enthalpies():
  model = ej.load_pretrained('oqmd_fe')
  assert model.unit == 'eV/atom' and model.meta['members'] == 1
  # Applied as is to experimental (SSUB) values it is off by the DFT-vs-experiment gap, about 0.15 eV/atom
  table, _ = datasets.load_table('ssub')
  predictions = model.predict(table.inputs[:200])
  assert not any(predictions.errors)
  assert np.abs(predictions.mean - np.asarray(table.targets[:200], float)).mean() < 0.3
  user_error(lambda: ej.load_pretrained('oqmd'), "'oqmd': no such shipped model", 'oqmd_fe')


def test_a_shipped_model_scores_on_its_own_held_out_rows_what_its_metrics_record():
  # It ships no split.csv: its test rows are drawn again from the config it was trained with, as a study does.
  require_dataset('oqmd_fe')
  folder = shipped.resolve('oqmd_fe')
  recorded = json.loads((folder / 'metrics.json').read_text())
  parts = inputs.split_parts(configs.resolve(workdir.read_config(folder / 'config.json')))
  assert {name: len(part) for name, part in parts.items()} == recorded['split_sizes']
  test = parts['test'].take(np.random.default_rng(0).choice(len(parts['test']), SAMPLE, replace=False))
  predicted = ej.load_pretrained('oqmd_fe').predict(test.inputs)
  mae = float(np.abs(predicted.mean - test.y).mean())
  # A sample of 2,000 of its 3,416 test rows: the standard error of its MAE is about 0.0015 eV/atom.
  assert mae == pytest.approx(recorded['test']['mae'], abs=0.004), mae
  train = parts['train'].take(np.arange(SAMPLE))  # rows it trained on score better: the split is its own
  assert np.abs(ej.load_pretrained('oqmd_fe').predict(train.inputs).mean - train.y).mean() < mae


def test_fine_tuning_a_shipped_model_on_a_csv_needs_no_pretraining(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no folder named like the model: the name means the shipped one
  table, _ = datasets.load_table('ssub')
  target = tmp_path / 'measured.csv'
  with open(target, 'w', newline='') as stream:
    csv.writer(stream).writerows([('formula', 'dHf')] + list(zip(table.inputs[:120], table.targets[:120])))
  config = config_with(
    'finetune',
    {
      'transfer.pretrained': 'oqmd_fe',
      'dataset.name': str(target),
      'dataset.target': 'dHf',
      'dataset.unit': 'eV/atom',
      'train.max_epochs': 2,
      'train.patience': 2,
    },
  )
  metrics = ej.finetune('oqmd_fe', tmp_path / 'mine', config)
  assert metrics['test']['n'] == metrics['split_sizes']['test'] > 0 and metrics['test']['mae'] < 0.3
  recorded = json.loads((tmp_path / 'mine' / 'config.json').read_text())
  assert recorded['transfer']['pretrained'] == 'oqmd_fe'
  assert ej.load(tmp_path / 'mine').predict(['NaCl']).mean[0] == pytest.approx(-2.1, abs=0.3)


def test_a_float16_export_halves_the_parameters_and_predicts_as_the_run_does_to_float16_precision(pretrained, tmp_path):
  full, half = tmp_path / 'full', tmp_path / 'half'
  shipped.export(pretrained, full)
  shipped.export(pretrained, half, 'float16')
  size = lambda folder: (folder / 'model' / 'params.npz').stat().st_size  # noqa: E731
  assert size(half) < 0.6 * size(full)
  formulas = ['Fe2O3', 'NaCl', 'Al2O3', 'MgO']
  before, after = predict.predict_inputs([str(full)], formulas), predict.predict_inputs([str(half)], formulas)
  assert not np.array_equal(after.mean, before.mean)  # rounded to float16 ...
  np.testing.assert_allclose(after.mean, before.mean, atol=0.01)  # ... and close
  user_error(lambda: shipped.export(pretrained, tmp_path / 'other', 'bfloat8'), "dtype 'bfloat8'", 'float16')
