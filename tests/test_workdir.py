"""Setting a run's outputs aside while another replaces it, and reading configs that older versions recorded."""

import copy
import json
from pathlib import Path

import pytest
from conftest import config_with

from elemnet_jax import configs, migrations, pretrained, run, workdir

NAMES = ('metrics.json', 'model')


def _run(directory, text):
  directory.mkdir(exist_ok=True)
  (directory / 'metrics.json').write_text(text)
  (directory / 'model').mkdir()
  (directory / 'model' / 'meta.json').write_text(text)


def test_a_finished_run_displaces_a_stale_set_aside_one(tmp_path):
  # A kill during the discard of replaced/ leaves a finished run beside it; the next overwrite must
  # set the finished run aside, not delete it as if it were an unfinished replacement.
  _run(tmp_path / 'replaced', 'old')
  _run(tmp_path, 'new')
  assert workdir.set_aside(tmp_path, NAMES, finished=True) == tmp_path / 'replaced'
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'new'
  assert (tmp_path / 'replaced' / 'model' / 'meta.json').read_text() == 'new'
  assert not (tmp_path / 'metrics.json').exists()


def test_an_unfinished_replacement_is_deleted_and_the_set_aside_run_kept(tmp_path):
  _run(tmp_path / 'replaced', 'old')
  (tmp_path / 'model').mkdir()
  workdir.set_aside(tmp_path, NAMES)
  assert not (tmp_path / 'model').exists()
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'old'


def test_a_set_aside_cut_short_is_completed(tmp_path):
  _run(tmp_path, 'old')
  (tmp_path / 'replaced.partial').mkdir()  # killed after moving metrics.json, before model/
  (tmp_path / 'metrics.json').rename(tmp_path / 'replaced.partial' / 'metrics.json')
  workdir.set_aside(tmp_path, NAMES)
  assert (tmp_path / 'replaced' / 'metrics.json').read_text() == 'old'
  assert (tmp_path / 'replaced' / 'model' / 'meta.json').read_text() == 'old'
  workdir.discard_set_aside(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_nothing_to_set_aside(tmp_path):
  assert workdir.set_aside(tmp_path, NAMES) is None
  assert list(tmp_path.iterdir()) == []


def test_writing_an_output_leaves_the_users_other_files_alone(tmp_path):
  # predict --input=out.csv.tmp --output=out.csv must not consume its own input.
  (tmp_path / 'out.csv.tmp').write_text('formula\nNaCl\n')
  workdir.write_text(tmp_path / 'out.csv', 'new')
  assert (tmp_path / 'out.csv').read_text() == 'new'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out.csv', 'out.csv.tmp']
  assert (tmp_path / 'out.csv.tmp').read_text() == 'formula\nNaCl\n'


def _older(config: dict) -> dict:
  """`config` as a version before config_version recorded it: without the task, guard, checkpoint interval, source
  consent, calibration share, outputs and source choice where they have the values that acted as their absence."""
  old = {key: copy.deepcopy(value) for key, value in config.items() if key != migrations.VERSION_KEY}
  absent = {'dataset': {'task': 'regression', 'positive': ''}, 'transfer': {'allow_collapsed_source': False}}
  absent['train'] = {'guard_epochs': 3, 'checkpoint_seconds': 60.0, 'calibration_fraction': 0.0}
  absent['model'] = {'outputs': 1}  # before several targets
  for run_config in [old['source'], old['target']] if 'study' in old else [old]:
    for section, fields in absent.items():
      for name, value in fields.items():
        if (run_config.get(section) or {}).get(name, None) == value:
          del run_config[section][name]
  if old.get('study', {}).get('choose_source') is False:
    del old['study']['choose_source']
  return old


def test_an_old_config_is_migrated_by_full_path_and_the_shipped_one_loads():
  shipped = workdir.read_config(Path(pretrained.__file__).parent / 'oqmd_fe' / 'config.json')
  current = json.loads(json.dumps(configs.get_config('oqmd').to_dict()))
  # the shipped model's config (version 0) reads as the oqmd config with its split and raw targets (it
  # trained before the recipe standardised them), every field there
  assert workdir.differences(shipped, current) == ['dataset.resplit', 'dataset.split', 'train.target_scaling']
  assert shipped['train']['target_scaling'] == 'none'
  study = json.loads(json.dumps(configs.get_config('paper').to_dict()))
  assert migrations.migrate(_older(study)) == study  # source and target filled, each by its own path
  assert migrations.migrate(migrations.record(study)) == study
  # a field of that name elsewhere is not invented: the study section gets only its own fields
  assert 'guard_epochs' not in migrations.migrate({'study': {}, 'source': {}, 'target': {}})['study']
  with pytest.raises(ValueError, match='config_version 99 is not one this code reads'):
    migrations.migrate({'config_version': 99})


def test_an_interrupted_run_recorded_by_an_older_version_resumes(tmp_path):
  config = config_with('test', {'train.max_epochs': 2, 'train.checkpoint_seconds': 60.0})
  run.train_and_evaluate(config, tmp_path)
  (tmp_path / 'metrics.json').unlink()  # what a kill before the end leaves: config and checkpoints
  recorded = json.loads((tmp_path / 'config.json').read_text())
  assert recorded[migrations.VERSION_KEY] == migrations.CURRENT
  assert 'guard_epochs' not in _older(recorded)['train'] and 'task' not in _older(recorded)['dataset']
  (tmp_path / 'config.json').write_text(json.dumps(_older(recorded)))
  assert run.train_and_evaluate(config, tmp_path)['epochs'] == 2  # resumed: the same config
  assert json.loads((tmp_path / 'config.json').read_text()) == recorded  # recorded again in the current layout
