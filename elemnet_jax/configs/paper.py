"""The full transfer study OQMD (DFT) -> SSUB (experimental formation enthalpy).

  elemnet-jax study --config=paper --workdir=workdirs/study_paper --config.study.pretrained=workdirs/oqmd

Without `study.pretrained` it pretrains with the `oqmd` config in WORKDIR/pretrain first. On the SSUB
training split it trains from scratch, fine-tunes at several freeze depths, fits ridge on the last
hidden layer and applies the pretrained model directly; 10/25/50/100% of the training rows, 3 seeds,
a fixed 80/10/10 split (`study.folds=k` for k-fold cross-validation). `target.train` is fine-tuning's,
`study.scratch_train` that of scratch and the head network, except for the rate: each network trains
at Adam 1e-4, 3e-4 and 1e-3 and keeps the rate its validation MAE prefers (`study.learning_rates=()`:
their own rates). Each field below says what it does.

`--config=paper:transformer` studies the composition transformer instead (pretrained with
`oqmd:transformer`): freeze depths 0, 1 (the element embedding) and 1 + its attention layers, ridge on
its last hidden layer.
"""

import ml_collections

from elemnet_jax.configs import finetune, oqmd


def get_config(model: str = 'elemnet'):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ''
  config.source = oqmd.get_config(model)
  config.target = finetune.get_config()
  del config.target['model']  # the study trains the source's network
  config.target.train.update(max_epochs=300, patience=50)
  config.study = ml_collections.ConfigDict(
    dict(
      pretrained='',  # workdir of a finished pretraining run to reuse (several, comma-separated: one ensemble)
      exclude_target_from_source=False,  # leakage control: drop target compositions from the source
      folds=0,  # 0: the fixed split config.target.dataset.split; k >= 2: k-fold cross-validation
      val_fraction=0.1,  # with folds: share of all examples held out for early stopping
      rotate_validation=False,  # seed k >= 1 stops on its own random block of the training rows
      retrain_with_validation=False,  # train again on training + validation rows for the epochs they chose
      learning_rates=(1e-4, 3e-4, 1e-3),  # each network arm keeps the rate validation prefers; () for train's own
      train_fractions=(0.1, 0.25, 0.5, 1.0),
      seeds=3,
      methods=('scratch', 'finetune', 'featurizer', 'direct'),
      freeze_layers=(0, 4, 10),  # fine-tuning depths: 0 = every layer trains
      featurizer_layer=16,  # hidden layer whose activations feed ridge (16 = the last, 32 wide)
      head_widths=(64, 32),  # method 'head': a small network on those activations, trained as scratch is
      min_train_size=8,
      allow_collapsed_source=False,  # transfer even from a source whose metrics.json says it learned nothing
      choose_source=False,  # with several sources in `pretrained`: a study from each, the one validation prefers kept
    )
  )
  if model == 'transformer':
    config.study.update(freeze_layers=(0, 1, 1 + config.source.model.layers), featurizer_layer=3)
  config.study.scratch_train = config.target.train.copy_and_resolve_references()
  config.study.scratch_train.learning_rate = 1e-3
  return config
