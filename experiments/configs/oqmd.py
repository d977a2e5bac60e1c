"""Pretraining on OQMD with the recipe measured best here (batch 256, warm-up + cosine from 1e-3).

  python -m experiments.pretrain --workdir=workdirs/oqmd --config=experiments/configs/oqmd.py

No dropout; 1 warm-up epoch then cosine decay over `max_epochs` (51 epochs: 39-50 s each on
2 CPU cores, 35-42 minutes in all). The whole schedule runs; early stopping keeps the
best-on-validation parameters.
"""

from experiments.configs import default


def get_config():
  config = default.get_config()
  config.train.update(
    batch_size=256, learning_rate=1e-3, schedule='cosine', warmup_epochs=1.0, max_epochs=51, patience=51
  )
  return config
