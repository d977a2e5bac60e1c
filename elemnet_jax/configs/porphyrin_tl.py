"""Porphyrin dyes: pretrain on PBDD (12,096 DFT molecules), transfer to MpPD (377, another functional).

  elemnet-jax study --config=porphyrin_tl --workdir=workdirs/porphyrin_tl
  elemnet-jax study --config=porphyrin_tl:HOMO --workdir=workdirs/porphyrin_homo   # or :LUMO
  elemnet-jax study --config=porphyrin_tl:cross --workdir=workdirs/porphyrin_cross  # PBDD E_gap -> PBDD LUMO

SMILES become RDKit E-state counts and sums, metal-centre counts, the number of fragments and 512
Morgan counts (radius 2); columns are standardised on the source training split and reused when
fine-tuning, none dropped, so a metal only the target has still reaches the network. Targets are
standardised. Identical SMILES are grouped before splitting; MpPD's unparsable SMILES is skipped.
"""

import ml_collections

from elemnet_jax.configs import paper


def _molecules(config, dataset: str, target: str):
  config.dataset.update(name=dataset, target=target, input_column='smiles', input_kind='smiles', skip_invalid=True)
  return config


def _source_features(config):
  config.featurizer = ml_collections.ConfigDict(
    dict(name='estate', parts='both', metals=True, morgan_bits=512, morgan_radius=2, max_atoms=500)
  )
  # Columns are standardised but none dropped: a metal absent from the source (PBDD has only Zn
  # and Ti; MpPD has Co, Ni, Cu, Mn, Fe) must still reach the fine-tuned network. The target is
  # featurized and scaled as the source model's inputs are, and learned in its target units.
  config.features.update(drop_constant=False, standardize=True)
  config.train.target_scaling = 'standard'
  return config


def get_config(kind: str = 'E_gap'):
  config = paper.get_config()
  if kind in ('E_gap', 'HOMO', 'LUMO'):
    source, target = ('porphyrin_pbdd', kind), ('porphyrin_mppd', kind)
  elif kind == 'cross':
    source, target = ('porphyrin_pbdd', 'E_gap'), ('porphyrin_pbdd', 'LUMO')
  else:
    raise ValueError(f'unknown porphyrin config {kind!r}; use E_gap, HOMO, LUMO or cross')
  _source_features(_molecules(config.source, *source))
  config.source.train.update(
    batch_size=64, learning_rate=1e-3, schedule='cosine', warmup_epochs=2, max_epochs=150, patience=150
  )
  _molecules(config.target, *target)
  config.target.train.update(batch_size=32, learning_rate=1e-3, max_epochs=400, patience=60)
  config.target.transfer.reinit_head = True
  config.study.update(
    methods=('scratch', 'finetune', 'featurizer', 'direct'),
    freeze_layers=(0, 10),
    train_fractions=(0.25, 0.5, 1.0),
    learning_rates=(),  # the rates below, chosen on MpPD's validation split (docs/results.md)
  )
  config.study.scratch_train = config.target.train.copy_and_resolve_references()
  config.study.scratch_train.learning_rate = 3e-3
  if kind == 'cross':
    # Learn LUMO from a small subset; the rest of PBDD is test data. The source model saw every
    # molecule's gap, never its LUMO.
    config.target.dataset.split = (0.08, 0.02, 0.9)
    config.study.train_fractions = (0.25, 0.5, 1.0)  # 147, 294, 587 of PBDD's 7,344 unique molecules
    config.study.methods = ('scratch', 'finetune', 'featurizer')
    # Another property: E_gap's mean and spread say nothing about LUMO, so the fine-tuned model is
    # trained on LUMO standardised with its own training-split statistics.
    config.target.transfer.target_scaling = 'refit'
  return config
