"""Fine-tuning a pretrained ElemNet on the experimental SSUB formation enthalpies.

  python -m experiments.finetune --pretrained=workdirs/oqmd --workdir=workdirs/ssub_ft \
      --config=experiments/configs/finetune.py --config.transfer.freeze_layers=0

All layers train by default (freeze_layers=0 won our transfer study); batch 32, Adam 1e-4,
early stopping on the validation split (patience 100 epochs). The learning rate was chosen on the
SSUB validation split (fine-tuning all layers, 3 seeds, best validation MAE in eV/atom): 1e-3
0.0753, 3e-4 0.0609, 1e-4 0.0596, 3e-5 worse than 0.063 when stopped; at 1e-4, batch 16 gave
0.0593 (no better, slower) and the Huber loss 0.0617 (README, "Choosing the fine-tuning recipe").
--config.train.retrain_with_validation=True then trains each member again on the training and
validation rows for the epochs early stopping chose, and saves that model (README, "How it works").
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'ssub'
  config.train.update(batch_size=32, learning_rate=1e-4, max_epochs=1000, patience=100)
  return config
