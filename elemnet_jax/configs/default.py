"""Training ElemNet with the paper's hyperparameters: MAE loss, Adam 1e-4, batch 32, early stopping patience 200.

  elemnet-jax train --config=default --workdir=workdirs/oqmd_paper

Dropout is off (`model.use_dropout=False`): with dropout in training and deterministic evaluation,
the evaluated network is not the one trained (docs/results.md). The TF1 behaviour, dropout also at
evaluation: --config.model.use_dropout=True --config.train.eval_dropout_passes=8.

Another model family: `--config=default:transformer` (or `:residual`); `config.model` then holds
that family's fields at their defaults (`elemnet_jax.models`).
"""

import ml_collections

from elemnet_jax.models import default_fields
from elemnet_jax.models.elemnet import PAPER_DROPOUT_AFTER, PAPER_DROPOUT_RATES, PAPER_WIDTHS


def get_config(model: str = 'elemnet') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_dir = ''  # '' -> $ELEMNET_JAX_DATA, else the cache and public addresses
  config.dataset = ml_collections.ConfigDict(
    dict(
      name='oqmd_fe',  # a registered dataset or a path to a CSV file
      target='',  # '' -> the dataset's default target column
      input_column='formula',  # for CSV files
      input_kind='formula',  # for CSV files: 'formula' or 'smiles'
      split=(0.8, 0.1, 0.1),  # train/val/test fractions when the dataset has no split of its own (or resplit)
      split_seed=0,
      resplit=False,  # True: ignore a dataset's published split and draw `split` with split_seed instead
      skip_invalid=False,  # drop (and count) bad rows instead of stopping
      min_split_size=1,
      exclude_from='',  # comma-separated datasets whose inputs are removed (leakage control)
      unit='',  # for CSV files: the targets' unit, e.g. 'eV/atom' (registered datasets know theirs)
      task='regression',  # regression | classification (two classes, sigmoid cross-entropy; elemnet_jax.tasks)
      positive='',  # classification: the value that is the positive class ('' -> 1, or the second in sorted order)
    )
  )
  config.featurizer = ml_collections.ConfigDict(dict(name='composition'))
  config.features = ml_collections.ConfigDict(dict(drop_constant=False, standardize=False))
  config.model = model_section(model)
  config.train = ml_collections.ConfigDict(
    dict(
      batch_size=32,
      learning_rate=1e-4,
      optimizer='adam',  # adam | adamw
      weight_decay=0.0,  # adamw only
      decay_toward='zero',  # adamw: zero | start (L2-SP: toward the weights training started from)
      ema_decay=0.0,  # > 0: evaluate and keep an exponential moving average of the weights (per step)
      schedule='constant',  # constant | cosine (with warm-up)
      warmup_epochs=0.0,
      body_lr_scale=1.0,  # fine-tuning: learning-rate factor of unfrozen non-output layers
      loss='mae',  # mae | mse | huber (model.head=mean_variance trains with nll; hurdle: its regressor's loss)
      max_epochs=1000,
      patience=200,
      ensemble=1,  # members, seeds seed..seed+ensemble-1, trained as ensemble_schedule says
      ensemble_schedule='auto',  # vmap (together) | sequential (one after another) | auto: sequential on CPU
      mode='epoch',  # epoch: one compiled lax.scan per epoch; step: a Python loop (same result)
      eval_dropout_passes=0,  # > 0: evaluate as the mean of that many dropout passes
      target_scaling='none',  # none | standard (statistics travel with the checkpoint)
      checkpoint_every=1,  # resumable checkpoints only at multiples of this many epochs
      checkpoint_seconds=60.0,  # and at least this many seconds apart (0: every such epoch); the last always
      log_every=1,
      data_parallel=False,  # shard each batch over all local devices (jax.sharding)
      retrain_with_validation=False,  # then train again on training + validation rows for the epochs chosen
      guard_epochs=3,  # stop if validation predictions are constant from this epoch (and 200 steps) on, or
      # no better than the training median from twice this epoch on (training.guard); 0: never
      calibration_fraction=0.0,  # > 0: this share of the training rows is set apart to calibrate the members'
      # spread (ensemble >= 2), apart from the validation rows early stopping chooses on; 0: calibrate on those
    )
  )
  config.transfer = ml_collections.ConfigDict(
    dict(
      pretrained='',  # workdir of a finished run to start from (several, comma-separated: one ensemble)
      freeze_layers=0,  # freeze the first k dense layers
      freeze_regex=(),  # or: regexes over parameter paths such as '^params/dense_[0-3]/'
      reinit_head=False,  # draw the output layer afresh
      target_scaling='source',  # source: the pretrained model's target statistics; refit: the target train split's
      allow_collapsed_source=False,  # fine-tune even from a source whose metrics.json says it learned nothing
    )
  )
  return config


def model_section(family: str) -> ml_collections.ConfigDict:
  """The `model` section of family `family`: the paper's ElemNet without dropout, or the family's defaults."""
  if family in ('elemnet', 'residual'):  # elemnet: the paper's; residual: IRNet-style blocks of the same widths
    return ml_collections.ConfigDict(
      dict(
        widths=PAPER_WIDTHS,
        dropout_after=PAPER_DROPOUT_AFTER,
        dropout_rates=PAPER_DROPOUT_RATES,
        use_dropout=False,
        activation='relu',
        name=family,
        head='point',  # point | mean_variance (Gaussian NLL, own std) | hurdle (zero-inflated targets)
      )
    )
  return ml_collections.ConfigDict(default_fields(family))
