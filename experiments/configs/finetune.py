"""Fine-tuning a pretrained ElemNet on the experimental SSUB formation enthalpies.

  python -m experiments.finetune --pretrained=workdirs/oqmd --workdir=workdirs/ssub_ft \
      --config=experiments/configs/finetune.py --config.transfer.freeze_layers=0

All layers train by default (freeze_layers=0 won our transfer study); batch 32, Adam 1e-3,
early stopping on the validation split (patience 100 epochs).
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'ssub'
  config.train.update(batch_size=32, learning_rate=1e-3, max_epochs=1000, patience=100)
  return config
