"""Predictions of finished runs: every input row kept in order, units in the header, errors and warnings."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from conftest import config_with, molecule_fields, user_error

from elemnet_jax import predict, run, tasks


@pytest.fixture(scope='module')
def finetuned(pretrained, tmp_path_factory):
  """An ensemble of 2 fine-tuned from the tiny source, with the first 2 layers frozen."""
  path = tmp_path_factory.mktemp('runs') / 'finetune'
  fields = {'transfer.pretrained': str(pretrained), 'transfer.freeze_layers': 2, 'train.ensemble': 2}
  run.train_and_evaluate(config_with('test', fields), path)
  return path


def _rows(text: str) -> list[list[str]]:
  return list(csv.reader(io.StringIO(text)))


def test_formulas_print_a_header_with_the_unit_and_every_row_in_order(finetuned, capsys):
  predict.predict_file([str(finetuned)], inputs=['Fe2O3', 'Xx', 'NaCl'])
  header, *rows = _rows(capsys.readouterr().out)
  assert header == [
    'input',
    'formation enthalpy (eV/atom)',
    'formation enthalpy std (eV/atom)',
    'formation enthalpy calibrated std (eV/atom)',  # z-scaled on the validation split
    'error',
    'warning',
  ]
  assert [row[0] for row in rows] == ['Fe2O3', 'Xx', 'NaCl']
  assert all(float(rows[i][1]) < 0 and float(rows[i][2]) > 0 for i in (0, 2))  # mean and std of 2 members
  assert rows[1][1:5] == ['', '', '', "unknown element symbol 'Xx'"]


def test_a_csv_keeps_its_other_columns_and_its_row_order(finetuned, pretrained, tmp_path):
  source = tmp_path / 'inputs.csv'
  source.write_text('id,formula,note\n7,Fe2O3,first\n8,Qq,second\n9,Al2O3,third\n')
  output = tmp_path / 'out.csv'
  result = predict.predict_file([str(finetuned), str(pretrained)], input_csv=str(source), output=str(output))
  header, *rows = _rows(output.read_text())
  assert header[:3] == ['id', 'formula', 'note'] and header[-2:] == ['error', 'warning']
  assert [row[:3] for row in rows] == [['7', 'Fe2O3', 'first'], ['8', 'Qq', 'second'], ['9', 'Al2O3', 'third']]
  assert rows[1][3] == '' and rows[1][5] == "unknown element symbol 'Qq'"
  assert result.members == 3 and np.isnan(result.mean[1]) and np.isfinite(result.mean[[0, 2]]).all()
  user_error(
    lambda: predict.predict_file([str(finetuned)], input_csv=str(source), output=str(output)), 'already exists'
  )
  nowhere = tmp_path / 'no_such_folder' / 'out.csv'  # named as given, not as its temporary sibling
  user_error(
    lambda: predict.predict_file([str(finetuned)], input_csv=str(source), output=str(nowhere)),
    f'{nowhere}: cannot be written (No such file or directory)',
  )
  user_error(
    lambda: predict.predict_file([str(finetuned)], input_csv=str(source), fail_on_invalid=True),
    f"{source}: 1 invalid input row(s): row 3 ('Qq'): unknown element symbol 'Qq'",
  )


def test_a_run_scored_against_its_own_test_predictions_file_gives_its_recorded_test_metrics(
  pretrained, pretrained_seed1, tmp_path, caplog
):
  # predictions_test.csv holds the run's test rows with their known values: scoring the run on them again
  # must give what metrics.json recorded; two runs joined are scored as one ensemble.
  source = pretrained / 'predictions_test.csv'
  recorded = json.loads((pretrained / 'metrics.json').read_text())['test']
  with caplog.at_level('INFO'):
    predict.predict_file(
      [str(pretrained)], input_csv=str(source), column='input', target='target', output=str(tmp_path / 'p.csv')
    )
  line = next(record.getMessage() for record in caplog.records if 'against target' in record.getMessage())
  assert line.endswith(f'against target, 1 member(s): {tasks.describe(recorded)}')  # to the 4 decimals it shows
  caplog.clear()
  with caplog.at_level('INFO'):
    joined = predict.predict_file(
      [str(pretrained), str(pretrained_seed1)], input_csv=str(source), column='input', target='target', output='-'
    )
  line = next(record.getMessage() for record in caplog.records if 'against target' in record.getMessage())
  known = np.array([float(row[1]) for row in _rows(source.read_text())[1:]])
  assert f'2 member(s): MAE {np.mean(np.abs(joined.mean - known)):.4f}  RMSE ' in line


def test_known_values_that_are_not_numbers_or_a_missing_column_are_one_line(pretrained, tmp_path):
  path = tmp_path / 'known.csv'
  path.write_text('formula,energy\nNaCl,-2.1\nFe2O3,n/a\nMgO,\nXx,inf\n')
  user_error(
    lambda: predict.predict_file(
      [str(pretrained)], input_csv=str(path), target='energy', output=str(tmp_path / 'o.csv')
    ),
    f"{path}: 2 invalid --target=energy row(s): row 3 ('n/a'): target is not a number; row 5 ('inf'): target is inf",
  )
  user_error(
    lambda: predict.predict_file([str(pretrained)], input_csv=str(path), target='energies'),
    f"{path}: column 'energies' to score against is absent (columns: 'formula', 'energy')",
  )
  user_error(lambda: predict.predict_file([str(pretrained)], inputs=['NaCl'], target='energy'), 'an --input CSV')
  assert not (tmp_path / 'o.csv').exists()


def test_blank_known_values_and_invalid_inputs_are_counted_not_scored(pretrained, tmp_path, caplog):
  path = tmp_path / 'known.csv'
  path.write_text('formula,energy\nNaCl,-2.1\nFe2O3,-1.7\nMgO,\nXx,1.0\n')
  with caplog.at_level('INFO'):
    result = predict.predict_file(
      [str(pretrained)], input_csv=str(path), target='energy', output=str(tmp_path / 'o.csv')
    )
  line = next(record.getMessage() for record in caplog.records if 'against energy' in record.getMessage())
  mae = np.mean(np.abs(result.mean[:2] - np.array([-2.1, -1.7])))
  assert f'1 member(s): MAE {mae:.4f}  ' in line and '(n=2)' in line
  assert line.endswith('; 2 rows not scored (no prediction or no known value)')


def test_inputs_with_elements_the_training_data_lacks_are_flagged(tmp_path, caplog):
  path = tmp_path / 'oxides.csv'
  oxides = ['Fe2O3', 'MgO', 'Al2O3', 'CaO', 'ZnO', 'CuO', 'TiO2', 'SiO2', 'NiO', 'MnO', 'CoO', 'Cr2O3']
  path.write_text('formula,energy\n' + ''.join(f'{f},{-1.0 - 0.1 * i}\n' for i, f in enumerate(oxides)))
  fields = {'dataset.name': str(path), 'dataset.target': 'energy', 'dataset.split': (0.5, 0.25, 0.25)}
  run.train_and_evaluate(config_with('test', fields), tmp_path / 'w')
  seen = json.loads((tmp_path / 'w' / 'model' / 'meta.json').read_text())['seen_columns']
  result = predict.predict_inputs([str(tmp_path / 'w')], ['Fe2O3', 'NaCl', 'Xx'])
  assert len(seen) < 12 and result.warnings[0] == '' and result.warnings[2] == ''  # an error, no warning
  assert result.warnings[1] == 'outside the training data: Na, Cl never seen in training'
  predict.predict_file([str(tmp_path / 'w')], inputs=['NaCl'])
  assert '1 inputs lie outside the training data' in caplog.text


def test_predict_refuses_a_model_whose_features_this_code_builds_differently(pretrained, molecules_csv, tmp_path):
  # A model saved when the element list (or a featurizer's options) differed: its columns would shift.
  model = tmp_path / 'model'
  shutil.copytree(pretrained, model)
  meta = json.loads((model / 'model' / 'meta.json').read_text())
  meta['featurizer']['elements'] = meta['featurizer']['elements'][::-1]
  (model / 'model' / 'meta.json').write_text(json.dumps(meta))
  user_error(
    lambda: predict.predict_inputs([str(model)], ['Fe2O3']),
    f"{model}: the model reads features from 'composition' (width 86), but this code builds them otherwise "
    '(different elements); predict with the version it was trained with',
  )
  # An E-state model saved when its description still held `workers`, which never changes the features.
  molecules = tmp_path / 'molecules'
  run.train_and_evaluate(config_with('test', {**molecule_fields(molecules_csv), 'train.max_epochs': 1}), molecules)
  meta = json.loads((molecules / 'model' / 'meta.json').read_text())
  meta['featurizer']['workers'] = 0
  (molecules / 'model' / 'meta.json').write_text(json.dumps(meta))
  assert np.isfinite(predict.predict_inputs([str(molecules)], ['c1ccccc1']).mean[0])


def test_the_same_model_named_twice_or_none_is_refused(pretrained):
  user_error(
    lambda: predict.predict_inputs([str(pretrained), f'{pretrained}/'], ['NaCl']), 'the same run is named twice'
  )
  user_error(lambda: predict.predict_inputs([''], ['NaCl']), "--models='': name a finished workdir")


def test_corrupted_model_metadata_is_named(pretrained, tmp_path):
  cut = shutil.copytree(pretrained, tmp_path / 'cut')
  meta = json.loads((cut / 'model' / 'meta.json').read_text())
  del meta['target_scaling']  # valid JSON, but not a model's metadata
  (cut / 'model' / 'meta.json').write_text(json.dumps(meta))
  user_error(
    lambda: predict.predict_inputs([str(cut)], ['NaCl']), 'meta.json: corrupted model metadata (missing target_scaling)'
  )


def test_fingerprint_exports_a_hidden_layer_of_one_member(finetuned, tmp_path):
  features, errors = predict.fingerprint([str(finetuned)], ['Fe2O3', 'Xx', 'NaCl'], layer=2, member=1)
  assert features.shape == (3, 32) and errors[1] == "unknown element symbol 'Xx'"
  assert np.isnan(features[1]).all() and np.isfinite(features[[0, 2]]).all() and (features[[0, 2]] >= 0).all()
  last, _ = predict.fingerprint([str(finetuned)], ['Fe2O3'], layer=0, member=0)
  assert last.shape == (1, 16)  # 0: the last hidden layer
  frozen = [predict.fingerprint([str(finetuned)], ['Fe2O3'], layer=2, member=k)[0] for k in (0, 1)]
  tuned = [predict.fingerprint([str(finetuned)], ['Fe2O3'], layer=3, member=k)[0] for k in (0, 1)]
  np.testing.assert_array_equal(frozen[0], frozen[1])  # layers 1-2 frozen, both members from one source
  assert not np.allclose(tuned[0], tuned[1])  # layer 3 was fine-tuned, each member with its own seed
  predict.write_fingerprint(tmp_path / 'f.npy', ['Fe2O3', 'Xx', 'NaCl'], features, errors)
  np.testing.assert_array_equal(np.load(tmp_path / 'f.npy'), features)
  predict.write_fingerprint(tmp_path / 'f.csv', ['Fe2O3', 'Xx', 'NaCl'], features, errors)
  header, *rows = _rows((tmp_path / 'f.csv').read_text())
  assert header[0] == 'input' and header[1] == 'h1' and header[-1] == 'error' and len(header) == 34
  assert rows[1][-1] == "unknown element symbol 'Xx'" and rows[1][1] == ''
  user_error(lambda: predict.fingerprint([str(finetuned)], ['NaCl'], layer=4), 'the hidden layers of', 'are 1..3')
  user_error(lambda: predict.fingerprint([str(finetuned)], ['NaCl'], member=2), 'has members 0..1')


def test_a_fine_tune_knows_the_elements_its_source_saw(pretrained, tmp_path):
  # Fine-tuned on a few oxides from a source that saw every element: nothing is outside its data.
  path = tmp_path / 'oxides.csv'
  oxides = ['Fe2O3', 'MgO', 'Al2O3', 'CaO', 'ZnO', 'CuO', 'TiO2', 'SiO2', 'NiO', 'MnO', 'CoO', 'Cr2O3']
  path.write_text('formula,energy\n' + ''.join(f'{f},{-1.0 - 0.1 * i}\n' for i, f in enumerate(oxides)))
  fields = {'transfer.pretrained': str(pretrained), 'dataset.name': str(path), 'dataset.target': 'energy'}
  run.train_and_evaluate(config_with('test', {**fields, 'dataset.split': (0.5, 0.25, 0.25)}), tmp_path / 'ft')
  assert predict.predict_inputs([str(tmp_path / 'ft')], ['NaCl']).warnings == ['']
  user_error(lambda: predict.fingerprint([str(tmp_path / 'ft'), str(pretrained)], ['NaCl']), 'name one finished run')
