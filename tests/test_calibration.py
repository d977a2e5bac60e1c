"""Calibrated uncertainty: z-scaling and split-conformal intervals from the validation split, saved and printed."""

import csv
import io
import json
import math

import numpy as np
import pytest
from conftest import config_with, user_error

from elemnet_jax import calibration, predict, run
from elemnet_jax.calibration import Calibration


def _members(rng, n: int, noise: float, spread: float):
  """Targets, and 3 members whose mean misses them by noise x N(0,1), each member within `spread` of that mean."""
  target = rng.normal(size=n)
  mean = target + noise * rng.normal(size=n)
  offsets = np.array([-1.0, 0.0, 1.0])[:, None] * spread * math.sqrt(1.5)  # population std = spread
  return target, mean + offsets


def test_z_scaling_gives_unit_rms_and_conformal_the_finite_sample_quantile():
  rng = np.random.default_rng(0)
  target, members = _members(rng, 999, noise=0.3, spread=0.1)
  fitted = Calibration.fit(target, members)
  score = np.abs(members.mean(axis=0) - target) / members.std(axis=0)
  assert np.sqrt(np.mean(np.square(score / fitted.z_scale))) == pytest.approx(1.0, rel=1e-4)
  assert fitted.z_scale == pytest.approx(3.0, rel=0.1)  # the residuals are 3x the spread
  # ceil((999 + 1) * 0.9) = 900: the 900th smallest score.
  assert fitted.conformal_factor(0.9) == pytest.approx(np.sort(score)[899], rel=1e-5)
  assert calibration.gaussian_quantile(0.9) == pytest.approx(1.6448536, abs=1e-6)
  assert math.isinf(Calibration.fit(target[:5], members[:, :5]).conformal_factor(0.9))  # too few rows for 90%


def test_intervals_calibrated_on_one_half_cover_the_other_at_the_stated_share():
  rng = np.random.default_rng(1)
  target, members = _members(rng, 4000, noise=0.5, spread=0.1)
  fitted = Calibration.fit(target[:2000], members[:, :2000])
  report = calibration.coverage_report(fitted, target[2000:], members[:, 2000:])
  for method in ('z', 'conformal'):
    assert report[f'{method}_90']['coverage'] == pytest.approx(0.9, abs=0.025)
    assert report[f'{method}_68']['coverage'] == pytest.approx(0.68, abs=0.03)
    assert report[f'{method}_90']['width'] > report[f'{method}_68']['width'] > 0
  raw = np.mean(np.abs(members[:, 2000:].mean(axis=0) - target[2000:]) <= 1.645 * members[:, 2000:].std(axis=0))
  assert raw < 0.5  # the raw spread is far too narrow


def test_many_validation_rows_are_thinned_and_the_calibration_round_trips():
  rng = np.random.default_rng(2)
  target, members = _members(rng, 5000, noise=0.2, spread=0.1)
  fitted = Calibration.fit(target, members)
  assert len(fitted.scores) <= calibration.MAX_SCORES and fitted.ranks[0] == 1 and fitted.ranks[-1] == 5000
  exact = np.sort(np.abs(members.mean(axis=0) - target) / members.std(axis=0))[math.ceil(5001 * 0.9) - 1]
  assert fitted.conformal_factor(0.9) == pytest.approx(exact, rel=0.01)
  again = Calibration.from_dict(json.loads(json.dumps(fitted.to_dict())))
  assert again.conformal_factor(0.9) == pytest.approx(fitted.conformal_factor(0.9), rel=1e-5)
  with pytest.raises(ValueError, match='single member has no spread'):
    Calibration.fit(target, members[:1])
  with pytest.raises(ValueError, match='malformed'):
    Calibration.from_dict({'z_scale': 'x'})


@pytest.fixture(scope='module')
def ensemble(tmp_path_factory):
  """3 members trained from scratch on SSUB (the tiny test network)."""
  path = tmp_path_factory.mktemp('runs') / 'ensemble'
  run.train_and_evaluate(config_with('test', {'train.ensemble': 3}), path)
  return path


def test_a_run_saves_its_calibration_and_reports_test_coverage(ensemble):
  meta = json.loads((ensemble / 'model' / 'meta.json').read_text())
  metrics = json.loads((ensemble / 'metrics.json').read_text())
  fitted = Calibration.from_dict(meta['calibration'])
  assert fitted.n == metrics['split_sizes']['val'] and fitted.z_scale > 0
  test = metrics['calibration']['test']
  assert set(test) == {'z_68', 'z_90', 'conformal_68', 'conformal_90'}
  assert all(0 <= entry['coverage'] <= 1 and entry['width'] > 0 for entry in test.values())


def test_predict_prints_the_calibrated_std_and_the_interval(ensemble, capsys):
  predict.predict_file([str(ensemble)], inputs=['Fe2O3', 'Xx'], coverage=0.9)
  header, fe2o3, xx = list(csv.reader(io.StringIO(capsys.readouterr().out)))
  assert header[1:6] == [
    'formation enthalpy (eV/atom)',
    'formation enthalpy std (eV/atom)',
    'formation enthalpy calibrated std (eV/atom)',
    'formation enthalpy lower 0.9 (eV/atom)',
    'formation enthalpy upper 0.9 (eV/atom)',
  ]
  mean, std, calibrated, lower, upper = map(float, fe2o3[1:6])
  fitted = Calibration.from_dict(json.loads((ensemble / 'model' / 'meta.json').read_text())['calibration'])
  assert calibrated == pytest.approx(std * fitted.z_scale, rel=1e-4)
  assert lower < mean < upper and upper - mean == pytest.approx(fitted.conformal_factor(0.9) * std, rel=1e-3)
  assert xx[1:6] == [''] * 5
  api = predict.predict_inputs([str(ensemble)], ['Fe2O3'])  # what ej.load(...).predict returns
  assert api.interval(0.9)[0][0] == pytest.approx(lower, rel=1e-4)
  assert api.calibrated_std[0] == pytest.approx(calibrated, rel=1e-4)


def test_coverage_needs_a_calibrated_ensemble_and_a_share(ensemble, pretrained):
  user_error(lambda: predict.predict_file([str(pretrained)], inputs=['NaCl'], coverage=0.9), 'single member')
  joined = predict.predict_inputs([str(ensemble), str(pretrained)], ['NaCl'])  # their joint spread: never calibrated
  assert joined.calibration is None and np.isnan(joined.calibrated_std).all()
  user_error(lambda: predict.predict_file([str(ensemble)], inputs=['NaCl'], coverage=1.5), '--coverage=1.5')


def test_a_share_of_the_training_rows_set_apart_calibrates_the_spread_instead_of_validation(ensemble, tmp_path):
  """The same SSUB split with 20% of its training rows held back from training and early stopping alike."""
  path = tmp_path / 'apart'
  metrics = run.train_and_evaluate(config_with('test', {'train.ensemble': 3, 'train.calibration_fraction': 0.2}), path)
  before = json.loads((ensemble / 'metrics.json').read_text())
  sizes = metrics['split_sizes']
  assert sizes['val'] == before['split_sizes']['val'] and sizes['test'] == before['split_sizes']['test']
  assert sizes['train'] + sizes['calibration'] == before['split_sizes']['train']
  assert sizes['calibration'] == round(0.2 * before['split_sizes']['train'])
  meta = json.loads((path / 'model' / 'meta.json').read_text())
  assert Calibration.from_dict(meta['calibration']).n == sizes['calibration']
  assert metrics['calibration']['fitted_on'] == 'calibration' and before['calibration']['fitted_on'] == 'val'
  with open(path / 'split.csv', newline='') as stream:
    labels = [row['split'] for row in csv.DictReader(stream)]
  assert labels.count('calibration') == sizes['calibration']
  user_error(lambda: run.prepare(config_with('test', {'train.calibration_fraction': 1.0}), tmp_path / 'x'), 'in [0, 1)')
