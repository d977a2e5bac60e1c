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

from elemnet_jax.configs import finetune, oqmd, study_schema
from elemnet_jax.configs.default import as_config_dict


def get_config(model: str = 'elemnet'):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ''
  config.source = oqmd.get_config(model)
  config.target = target_of(finetune.get_config())  # the study trains the source's network
  config.target.train.update(max_epochs=300, patience=50)
  config.study = as_config_dict(study_schema.StudySection())
  if model == 'transformer':
    config.study.update(freeze_layers=(0, 1, 1 + config.source.model.layers), featurizer_layer=3)
  config.study.scratch_train = config.target.train.copy_and_resolve_references()
  config.study.scratch_train.learning_rate = 1e-3
  return config


def target_of(run: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A study's target section from a run config: its dataset, and the training and transfer fields a study reads."""
  target = as_config_dict(study_schema.TargetConfig())
  target.dataset.update(run.dataset)
  for name in ('train', 'transfer'):
    target[name].update({key: run[name][key] for key in target[name]})
  return target
