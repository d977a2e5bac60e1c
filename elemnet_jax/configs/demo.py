"""`make demo`: the transfer study OQMD -> SSUB from the shipped OQMD model, on a reduced budget.

  elemnet-jax study --config=demo --workdir=workdirs/demo

The source is the shipped `oqmd_fe` model (no pretraining step). Differences from `paper`:
training-set sizes 25% and 100%, two seeds, fine-tuning of all layers only, at most 100 epochs per
target run (patience 20), fine-tuning at Adam 1e-3 (one rate per network: no `study.learning_rates`
grid). To pretrain the source yourself first:

  elemnet-jax train --config=oqmd --workdir=workdirs/oqmd
  elemnet-jax study --config=demo --workdir=workdirs/demo --config.study.pretrained=workdirs/oqmd
"""

from elemnet_jax.configs import paper


def get_config():
  config = paper.get_config()
  config.target.train.update(max_epochs=100, patience=20, learning_rate=1e-3)
  config.study.scratch_train.update(max_epochs=100, patience=20)
  config.study.update(
    pretrained='oqmd_fe',
    train_fractions=(0.25, 1.0),
    seeds=2,
    freeze_layers=(0,),
    methods=('scratch', 'finetune', 'direct'),
    learning_rates=(),
  )
  return config
