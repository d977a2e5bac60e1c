"""Tiny configurations for the tests: a narrow network and a few epochs on small real datasets.

--config=test        training on SSUB
--config=test:study  a transfer study qmpy_legacy -> SSUB
--config=test:train,transformer (or study,residual ...): the same with a tiny network of that family
"""

from elemnet_jax.configs import default, paper

# Each family's tiny network.
TINY = {
  'elemnet': dict(widths=(64, 32, 16), dropout_after=(1,), dropout_rates=(0.1,)),
  'residual': dict(widths=(64, 32, 16), dropout_after=(1,), dropout_rates=(0.1,)),
  'transformer': dict(
    d_model=16, heads=2, layers=1, ffn_width=32, head_widths=(16,), element_vectors='learned', vector_width=8
  ),
}


def _tiny(config, family: str):
  config.model = default.model_section(family)
  config.model.update(TINY[family])
  config.train.update(batch_size=64, learning_rate=1e-3, max_epochs=3, patience=3, checkpoint_seconds=0.0)
  return config


def get_config(variant: str = 'train'):
  kind, _, family = variant.partition(',')
  family = family or 'elemnet'
  if family not in TINY:
    raise ValueError(f'unknown model family {family!r} for the test config; use one of {", ".join(TINY)}')
  if kind == 'train':
    config = _tiny(default.get_config(), family)
    config.dataset.name = 'ssub'
    # A few epochs of a tiny network need not beat the training median: such a run may still act as a
    # source here (the guard's own tests turn this off).
    config.transfer.allow_collapsed_source = True
    return config
  if kind == 'study':
    config = paper.get_config()
    config.source = _tiny(config.source, family)
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
      featurizer_layer=len(TINY[family].get('widths', ())) or 2,
      head_widths=(8,),
      learning_rates=(),
      allow_collapsed_source=True,  # as for train above
    )
    return config
  raise ValueError(f'unknown test config {kind!r}; use train or study')
