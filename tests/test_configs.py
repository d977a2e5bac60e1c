"""Every shipped config builds and passes the checks its entry point runs before training."""

import importlib
import json

import pytest

from elemnet_jax import checks, transfer, workdir
from elemnet_jax.errors import UserError
from elemnet_jax.study import plan as study_plan

TRAIN_CONFIGS = [
  ('default', ()),
  ('oqmd', ()),
  ('finetune', ()),
  ('test', ()),
  ('default', ('residual',)),
  ('oqmd', ('transformer',)),
  ('test', ('train,transformer',)),
]
STUDY_CONFIGS = [
  ('paper', ()),
  ('demo', ()),
  ('test', ('study',)),
  ('paper', ('transformer',)),
  ('test', ('study,transformer',)),
  *[('porphyrin_tl', (kind,)) for kind in ('E_gap', 'HOMO', 'LUMO', 'cross')],
]


def _load(name, args):
  return importlib.import_module(f'elemnet_jax.configs.{name}').get_config(*args)


@pytest.mark.parametrize(('name', 'args'), TRAIN_CONFIGS)
def test_train_configs_pass_their_checks(name, args):
  config = _load(name, args)
  checks.check_train_config(config.train)
  checks.check_dataset(config.dataset)
  checks.check_seed(config.seed, count=config.train.ensemble)
  transfer.layer_rules(config.transfer.freeze_layers, checks.model_config_from(config))


@pytest.mark.parametrize(('name', 'args'), STUDY_CONFIGS)
def test_study_configs_pass_their_checks(name, args):
  config = _load(name, args)
  study_plan.check_study_config(config)
  study_plan.check_study_depths(config.study, checks.model_config_from(config.source))
  # the scratch baseline is a separate copy: changing the fine-tuning rate must not change it
  config.target.train.learning_rate = 123.0
  assert config.study.scratch_train.learning_rate != 123.0


def test_study_config_check_names_the_bad_field():
  config = _load('paper', ())
  config.study.scratch_train.loss = 'l1'
  with pytest.raises(UserError, match=r"--config\.study\.scratch_train\.loss='l1'"):
    study_plan.check_study_config(config)
  config = _load('paper', ())
  config.target.transfer.target_scaling = 'standard'  # a train.target_scaling value in the wrong place
  with pytest.raises(UserError, match=r"--config\.target\.transfer\.target_scaling='standard': use source or refit"):
    study_plan.check_study_config(config)
  config = _load('paper', ())
  for widths in ((64, 0), (64, 'wide'), (True,), ()):
    config.study.head_widths = widths
    with pytest.raises(UserError, match=r'--config\.study\.head_widths=.*positive integer'):
      study_plan.check_study_config(config)
  config = _load('paper', ())
  config.study.freeze_layers = (0, 4, 0)  # a repeated depth would count its runs twice in one cell
  with pytest.raises(UserError, match=r'--config\.study\.freeze_layers=\(0, 4, 0\): name each value once'):
    study_plan.check_study_config(config)
  config = _load('paper', ())
  config.study.update(rotate_validation=True, seeds=1)  # one seed would keep the split: a no-op
  with pytest.raises(UserError, match=r'rotate_validation=True needs --config\.study\.seeds >= 2'):
    study_plan.check_study_config(config)
  config.study.update(seeds=3, methods=('featurizer', 'direct'))  # nothing there trains seeds
  with pytest.raises(UserError, match=r'rotates the seeds of scratch, finetune and head; .*has none of them'):
    study_plan.check_study_config(config)
  config.study.update(rotate_validation=False, retrain_with_validation=True, methods=('direct',))
  with pytest.raises(UserError, match=r'retrains scratch, finetune, head and featurizer; .*has none of them'):
    study_plan.check_study_config(config)
  config = _load('paper', ())
  config.target.train.retrain_with_validation = True  # the single-run switch, which the study does not read
  with pytest.raises(
    UserError, match=r'target\.train\.retrain_with_validation=True: a study retrains .* with --config\.study\.retrain'
  ):
    study_plan.check_study_config(config)
  for share in (0.0, 1.0):  # 0 held out one row regardless; 1 left no training rows
    config = _load('paper', ())
    config.study.val_fraction = share
    with pytest.raises(UserError, match=rf'--config\.study\.val_fraction={share}: give the share of all examples'):
      study_plan.check_study_config(config)


def test_split_and_seed_settings_are_checked_before_anything_runs():
  config = _load('default', ())
  for field, value, message in (
    ('split_seed', -1, r'--config\.dataset\.split_seed=-1: use a non-negative integer'),
    ('min_split_size', 0, r'--config\.dataset\.min_split_size=0: must be a positive integer'),
  ):
    bad = config.copy_and_resolve_references()
    bad.dataset[field] = value
    with pytest.raises(UserError, match=message):
      checks.check_dataset(bad.dataset)
  checks.check_seed(2**32 - 3, count=3)
  with pytest.raises(UserError, match=r'--config\.seed=4294967294: use an integer from 0 to 4294967293'):
    checks.check_seed(2**32 - 2, count=3)  # seed 2**32 would wrap onto seed 0
  config = _load('paper', ())
  config.target.dataset.split_seed = -5
  with pytest.raises(UserError, match=r'--config\.target\.dataset\.split_seed=-5'):
    study_plan.check_study_config(config)


def test_weight_decay_and_moving_average_settings_are_checked():
  config = _load('finetune', ())
  config.train.weight_decay = 0.1  # ignored by plain Adam: refused rather than silently dropped
  with pytest.raises(UserError, match=r'--config\.train\.weight_decay=0\.1 has no effect .*adam.*use adamw'):
    checks.check_train_config(config.train)
  config.train.weight_decay = -0.1
  with pytest.raises(UserError, match=r'--config\.train\.weight_decay=-0\.1: must be 0 or positive'):
    checks.check_train_config(config.train)
  config.train.weight_decay = 0.0
  config.train.decay_toward = 'start'  # L2-SP without AdamW or without a decay would do nothing
  with pytest.raises(UserError, match=r"decay_toward='start' needs .*optimizer=adamw and a positive .*weight_decay"):
    checks.check_train_config(config.train)
  config.train.optimizer = 'adamw'
  with pytest.raises(UserError, match=r"decay_toward='start' needs .*\(now 'adamw', 0\.0\)"):
    checks.check_train_config(config.train)
  config.train.weight_decay = 0.1
  config.train.decay_toward = 'pretrained'
  with pytest.raises(UserError, match=r"--config\.train\.decay_toward='pretrained': use one of zero, start"):
    checks.check_train_config(config.train)
  config.train.decay_toward = 'start'
  checks.check_train_config(config.train)
  config.train.ema_decay = 1.0  # an average that never moves from the starting weights
  with pytest.raises(UserError, match=r'--config\.train\.ema_decay=1\.0: use 0 \(off\) or a value in \(0, 1\)'):
    checks.check_train_config(config.train)


def test_saved_configs_from_before_a_field_existed_still_match(tmp_path):
  # A run saved before train.ema_decay / train.decay_toward / dataset.exclude_from / dataset.resplit
  # existed behaved as their defaults do, so resuming it is allowed; a real change is refused and named.
  config = _load('paper', ())
  saved = json.loads(config.to_json())
  for part in ('source', 'target'):
    del saved[part]['train']['ema_decay'], saved[part]['train']['decay_toward']
  del saved['study']['head_widths'], saved['source']['dataset']['exclude_from']
  del saved['source']['dataset']['resplit'], saved['target']['dataset']['resplit']
  path = tmp_path / 'config.json'
  path.write_text(json.dumps(saved))
  assert workdir.config_differences(path, config.to_dict()) == []
  config.target.train.ema_decay = 0.99
  config.study.seeds = 5
  changed = ['study.seeds: 3, now 5', 'target.train.ema_decay: 0.0, now 0.99']
  assert workdir.config_differences(path, config.to_dict()) == changed
  path.write_text('{"truncated": ')
  assert workdir.config_differences(path, config.to_dict()) == ['config.json unreadable']


@pytest.mark.parametrize(
  ('field', 'value', 'instead'),
  [
    ('train.ensemble', 5, 'study.seeds'),
    ('train.data_parallel', True, ''),
    ('transfer.freeze_layers', 4, 'study.freeze_layers'),
    ('transfer.pretrained', 'w', 'study.pretrained'),
    ('seed', 3, 'seed'),
  ],
)
def test_a_study_refuses_target_fields_it_does_not_read(field, value, instead):
  config = _load('paper', ())
  section, *path = [config.target] + field.split('.')
  for key in path[:-1]:
    section = section[key]
  section[path[-1]] = value
  with pytest.raises(UserError, match=rf'--config\.target\.{field}=.*: a study does not read it'):
    study_plan.check_study_config(config)
  assert 'model' not in _load('paper', ()).target  # the study trains the source's network: no field to set
