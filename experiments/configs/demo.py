"""`make demo`: the transfer study on a reduced budget (about 9 minutes on 2 idle CPU cores).

  python -m experiments.transfer_study --workdir=workdirs/demo --config=experiments/configs/demo.py

Differences from paper.py: pretraining on OQMD runs 4 epochs instead of 51 (test MAE about
0.09 instead of 0.044), two training-set sizes (25% and 100%), two seeds, fine-tuning of all
layers only, at most 150 epochs per target run, and fine-tuning at Adam 1e-3 (the README's
demo table was measured so; paper.py fine-tunes at 1e-4, chosen on validation with the full
51-epoch source model).
"""

from experiments.configs import paper


def get_config():
  config = paper.get_config()
  config.source.train.update(max_epochs=4, patience=4)
  config.target.train.update(max_epochs=150, patience=30, learning_rate=1e-3)
  config.study.scratch_train.update(max_epochs=150, patience=30)
  config.study.update(
    train_fractions=(0.25, 1.0), seeds=2, freeze_layers=(0,), methods=('scratch', 'finetune', 'direct')
  )
  return config
