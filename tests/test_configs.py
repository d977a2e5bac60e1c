"""Every shipped config builds and resolves into typed values; a value that cannot run is one line naming it."""

import importlib
import json

import pytest

from elemnet_jax import configs, transfer, workdir
from elemnet_jax.configs import schema
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


def _resolve(config, fields=None):
  """`config` (a ConfigDict) with dotted fields set, resolved as a command does."""
  return configs.resolve(schema.with_fields(config.to_dict(), fields or {}))


@pytest.mark.parametrize(('name', 'args'), TRAIN_CONFIGS)
def test_train_configs_pass_their_checks(name, args):
  config = _load(name, args)
  fields = {} if 'model' in config else {'transfer.pretrained': 'w'}  # finetune: the network is the source's
  typed = _resolve(config, fields)
  assert typed.train.ensemble == 1
  if typed.model is not None:
    transfer.layer_rules(typed.transfer.freeze_layers, typed.model)
  expected = json.loads(json.dumps(schema.with_fields(config.to_dict(), fields)))
  assert json.loads(json.dumps(typed.to_dict())) == expected  # resolving changes no value


@pytest.mark.parametrize(('name', 'args'), STUDY_CONFIGS)
def test_study_configs_pass_their_checks(name, args):
  config = _load(name, args)
  typed = _resolve(config)
  study_plan.check_study_depths(typed.study, typed.source.model)
  assert json.loads(json.dumps(typed.to_dict())) == json.loads(config.to_json())
  # the scratch baseline is a separate copy: changing the fine-tuning rate must not change it
  config.target.train.learning_rate = 123.0
  assert config.study.scratch_train.learning_rate != 123.0


def _refused(config, fields, pattern):
  with pytest.raises(UserError, match=pattern):
    _resolve(config, fields)


def test_study_config_check_names_the_bad_field():
  paper = _load('paper', ())
  _refused(paper, {'study.scratch_train.loss': 'l1'}, r"--config\.study\.scratch_train\.loss='l1'")
  # a train.target_scaling value in the wrong place
  _refused(
    paper,
    {'target.transfer.target_scaling': 'standard'},
    r"--config\.target\.transfer\.target_scaling='standard': use one of source, refit",
  )
  for widths in ((64, 0), (64, 'wide'), (True,), ()):
    _refused(paper, {'study.head_widths': widths}, r'--config\.study\.head_widths=.*positive integer')
  # a repeated depth would count its runs twice in one cell
  _refused(
    paper, {'study.freeze_layers': (0, 4, 0)}, r'--config\.study\.freeze_layers=\(0, 4, 0\): name each value once'
  )
  # one seed would keep the split: a no-op
  _refused(
    paper,
    {'study.rotate_validation': True, 'study.seeds': 1},
    r'rotate_validation=True needs --config\.study\.seeds >= 2',
  )
  fields = {'study.rotate_validation': True, 'study.seeds': 3, 'study.methods': ('featurizer', 'direct')}
  _refused(paper, fields, r'rotates the seeds of scratch, finetune and head; .*has none of them')
  fields = {'study.retrain_with_validation': True, 'study.methods': ('direct',)}
  _refused(paper, fields, r'retrains scratch, finetune, head and featurizer; .*has none of them')
  for share in (0.0, 1.0):  # 0 held out one row regardless; 1 left no training rows
    _refused(paper, {'study.val_fraction': share}, rf'--config\.study\.val_fraction={share}: give the share of all')


def test_split_and_seed_settings_are_checked_before_anything_runs():
  config = _load('default', ())
  _refused(config, {'dataset.split_seed': -1}, r'--config\.dataset\.split_seed=-1: use a non-negative integer')
  _refused(config, {'dataset.min_split_size': 0}, r'--config\.dataset\.min_split_size=0: must be a positive integer')
  schema.check_seed(2**32 - 3, count=3)
  with pytest.raises(UserError, match=r'--config\.seed=4294967294: use an integer from 0 to 4294967293'):
    schema.check_seed(2**32 - 2, count=3)  # seed 2**32 would wrap onto seed 0
  _refused(_load('paper', ()), {'target.dataset.split_seed': -5}, r'--config\.target\.dataset\.split_seed=-5')


def test_weight_decay_and_moving_average_settings_are_checked():
  config = _load('default', ())
  # ignored by plain Adam: refused rather than silently dropped
  _refused(config, {'train.weight_decay': 0.1}, r'--config\.train\.weight_decay=0\.1 has no effect .*adam.*use adamw')
  _refused(config, {'train.weight_decay': -0.1}, r'--config\.train\.weight_decay=-0\.1: must be 0 or positive')
  # L2-SP without AdamW or without a decay would do nothing
  pattern = r"decay_toward='start' needs .*optimizer=adamw and a positive .*weight_decay"
  _refused(config, {'train.decay_toward': 'start'}, pattern)
  _refused(config, {'train.decay_toward': 'start', 'train.optimizer': 'adamw'}, r"\(now 'adamw', 0\.0\)")
  adamw = {'train.optimizer': 'adamw', 'train.weight_decay': 0.1}
  _refused(config, {**adamw, 'train.decay_toward': 'pretrained'}, r"decay_toward='pretrained': use one of zero, start")
  assert _resolve(config, {**adamw, 'train.decay_toward': 'start'}).train.decay_toward == 'start'
  # an average that never moves from the starting weights
  _refused(config, {'train.ema_decay': 1.0}, r'--config\.train\.ema_decay=1\.0: use 0 \(off\) or a value in \(0, 1\)')


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
  'field',
  ['train.ensemble', 'train.data_parallel', 'transfer.freeze_layers', 'transfer.pretrained', 'seed', 'model'],
)
def test_a_study_target_has_no_fields_a_study_does_not_read(field):
  # the ensemble is study.seeds, the source study.pretrained, the depths study.freeze_layers, the network the source's
  with pytest.raises(UserError, match=rf'--config\.target\.{field}: no such field'):
    _resolve(_load('paper', ()), {f'target.{field}': 1})


def test_fields_that_cannot_apply_where_they_are_set_are_refused():
  test = _load('test', ())
  _refused(test, {'transfer.freeze_layers': 2}, r'--config\.transfer\.freeze_layers=2: applies only when fine-tuning')
  _refused(test, {'dataset.positive': 'yes'}, r"--config\.dataset\.positive='yes': .* with --config\.dataset\.task=")
  _refused(test, {'train.loss': 'bce'}, r'--config\.train\.loss=bce is the loss of classification')
  fields = {'dataset.task': 'classification', 'train.loss': 'mse'}
  _refused(test, fields, r"--config\.train\.loss='mse': classification trains with 'bce'")
  classifier = _resolve(test, {'dataset.task': 'classification'}).train
  assert (classifier.loss, classifier.target_scaling, classifier.guard_epochs) == ('bce', 'none', 0)
  # the oqmd recipe standardises regression targets; a classifier on it trains on the 0/1 labels as they are
  assert _resolve(_load('oqmd', ()), {'dataset.task': 'classification'}).train.target_scaling == 'none'
  paper = _load('paper', ())
  _refused(
    paper, {'study.val_fraction': 0.2}, r'--config\.study\.val_fraction=0\.2: applies only with --config\.study\.folds'
  )
  _refused(_load('finetune', ()), {}, r'--config\.model: absent; a run that fine-tunes nothing')
