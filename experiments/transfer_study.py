"""The main job: how much does pretraining on a large DFT set help on a small experimental one?

  python -m experiments.transfer_study --workdir=workdirs/demo --config=experiments/configs/demo.py
  python -m experiments.transfer_study --workdir=workdirs/study_paper \
      --config=experiments/configs/paper.py --config.study.pretrained=workdirs/oqmd

Writes results.json (one row per run; `"finished": true` once complete), results.md (mean +- std per method and size),
learning_curve.png and parity.png into --workdir, and prints the table. An interrupted study
resumes where it stopped (only from the source runs it started from: results.json records their
digests, and the parity plot's predictions, so that a resumed study plots the runs made before).
"""

from absl import flags
from ml_collections import config_flags

from elemnet_jax import cli
from elemnet_jax.study import run_study

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'experiments/configs/demo.py', 'Study configuration (a configs/*.py file).'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data directory (overrides $ELEMNET_JAX_DATA).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Start over in a workdir that holds another study.')


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:
    config.data_dir = config.source.data_dir = config.target.data_dir = _DATA_DIR.value
  run_study(config, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == '__main__':
  cli.run(main)
