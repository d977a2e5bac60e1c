"""Fine-tuning a pretrained ElemNet on the experimental SSUB formation enthalpies.

  elemnet-jax finetune --pretrained=workdirs/oqmd --workdir=workdirs/ssub_ft --config.transfer.freeze_layers=0

Every layer trains by default; batch 32, Adam 1e-4 (chosen on the SSUB validation split, docs/results.md),
early stopping on validation with patience 100. The network is the pretrained one: this config has no
`model` section. It keeps the source's output head unless `--config.transfer.head` names another
(`point`, `mean_variance`, `hurdle`): its output layer is then drawn afresh.
"""

from elemnet_jax.configs import default


def get_config():
  config = default.get_config()
  del config['model']  # a fine-tune trains the network of transfer.pretrained
  config.dataset.name = 'ssub'
  config.train.update(batch_size=32, learning_rate=1e-4, max_epochs=1000, patience=100)
  return config
