"""The full-budget transfer study: OQMD (DFT) -> SSUB (experimental formation enthalpy).

  python -m experiments.transfer_study --workdir=workdirs/study_paper --config=experiments/configs/paper.py

Pretrains with experiments/configs/oqmd.py (51 epochs; or reuse a run with
--config.study.pretrained=workdirs/oqmd), then on the SSUB training split trains from scratch,
fine-tunes with several freeze depths, fits ridge on the last hidden layer, and applies the
pretrained model directly; 10/25/50/100% of the training data, 3 seeds, a fixed 80/10/10 split.
Add 'head' to --config.study.methods to train a small network on that layer's activations too.
Add --config.study.exclude_target_from_source=True to remove SSUB compositions from OQMD, and
--config.source.train.ensemble=5 --config.study.seeds=5 to pretrain 5 source models and fine-tune
seed k from source model k (better on validation from 25% of SSUB up; README "Source ensembles and
leakage control"). --config.target.train.* flags change fine-tuning only; scratch and the head
network read --config.study.scratch_train.*, so e.g. --config.target.train.ema_decay=0.998
averages the fine-tuned weights but not the scratch ones. --config.study.rotate_validation=True
(with seeds >= 2) lets seed k >= 1 stop on a random block of the training rows and train on the
split's validation rows instead, so the seeds' ensemble learns from every non-test composition.
--config.study.retrain_with_validation=True trains each network again from the same start on its
training and validation rows for the epochs early stopping chose (ridge: the chosen alpha), and
scores that on test, as is usual once validation has chosen; validation MAE stays the first run's.
"""

import ml_collections

from experiments.configs import finetune, oqmd


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ''
  config.source = oqmd.get_config()
  config.target = finetune.get_config()
  config.target.train.update(max_epochs=300, patience=50)
  config.study = ml_collections.ConfigDict(
    dict(
      pretrained='',  # workdir of a finished pretraining run to reuse (several, comma-separated: one ensemble)
      exclude_target_from_source=False,  # leakage control: drop target compositions from the source
      folds=0,  # 0: the fixed split config.target.dataset.split; k >= 2: k-fold cross-validation
      val_fraction=0.1,  # with folds: share of all examples held out for early stopping
      rotate_validation=False,  # seed k >= 1 stops on its own random block of the training rows
      retrain_with_validation=False,  # train again on training + validation rows for the epochs they chose
      train_fractions=(0.1, 0.25, 0.5, 1.0),
      seeds=3,
      methods=('scratch', 'finetune', 'featurizer', 'direct'),
      freeze_layers=(0, 4, 10),  # fine-tuning depths: 0 = every layer trains
      featurizer_layer=16,  # hidden layer whose activations feed ridge (16 = the last, 32 wide)
      head_widths=(64, 32),  # method 'head': a small network on those activations, trained as scratch is
      min_train_size=8,
    )
  )
  config.study.scratch_train = config.target.train.copy_and_resolve_references()
  # Chosen on the SSUB validation split like the fine-tuning rate (3 seeds): from scratch, Adam
  # 1e-3 and 3e-4 tie (0.143 and 0.143 eV/atom); fine-tuning prefers 1e-4 (0.060 against 0.075).
  config.study.scratch_train.learning_rate = 1e-3
  return config
