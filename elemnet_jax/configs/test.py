"""Tiny configurations for the tests: a narrow ElemNet and a few epochs on small real datasets.

--config=test        training on SSUB
--config=test:study  a transfer study qmpy_legacy -> SSUB
"""

from elemnet_jax.configs import default, paper


def _tiny(config):
  config.model.widths = (64, 32, 16)
  config.model.dropout_after = (1,)
  config.model.dropout_rates = (0.1,)
  config.train.update(batch_size=64, learning_rate=1e-3, max_epochs=3, patience=3)
  return config


def get_config(kind: str = 'train'):
  if kind == 'train':
    config = _tiny(default.get_config())
    config.dataset.name = 'ssub'
    return config
  if kind == 'study':
    config = paper.get_config()
    config.source = _tiny(config.source)
    config.source.dataset.name = 'qmpy_legacy'
    config.source.train.update(batch_size=256, schedule='constant', max_epochs=2, patience=2)
    config.target.train.update(batch_size=64, max_epochs=3, patience=3)
    config.study.scratch_train = config.target.train.copy_and_resolve_references()
    config.study.scratch_train.learning_rate = 1e-3  # as paper.py: scratch does not share the fine-tuning rate
    config.study.update(
      methods=('scratch', 'finetune', 'featurizer', 'head', 'direct'),
      train_fractions=(0.5, 1.0),
      seeds=2,
      freeze_layers=(0, 2),
      featurizer_layer=3,
      head_widths=(8,),
      learning_rates=(),
    )
    return config
  raise ValueError(f'unknown test config {kind!r}; use train or study')
