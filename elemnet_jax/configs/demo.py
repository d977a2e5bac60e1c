"""`make demo`: the transfer study OQMD -> SSUB on a reduced budget (about 9 minutes on 2 CPU cores).

  elemnet-jax study --config=demo --workdir=workdirs/demo

Differences from `paper`: 4 pretraining epochs instead of 51, training-set sizes 25% and 100%, two
seeds, fine-tuning of all layers only, at most 150 epochs per target run, fine-tuning at Adam 1e-3
(one rate per network: no `study.learning_rates` grid).
"""

from elemnet_jax.configs import paper


def get_config():
  config = paper.get_config()
  config.source.train.update(max_epochs=4, patience=4)
  config.target.train.update(max_epochs=150, patience=30, learning_rate=1e-3)
  config.study.scratch_train.update(max_epochs=150, patience=30)
  config.study.update(
    train_fractions=(0.25, 1.0),
    seeds=2,
    freeze_layers=(0,),
    methods=('scratch', 'finetune', 'direct'),
    learning_rates=(),
  )
  return config
