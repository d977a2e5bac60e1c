"""Trains ElemNet on a registered dataset or a CSV file.

  python -m experiments.pretrain --workdir=workdirs/oqmd --config=experiments/configs/oqmd.py
  python -m experiments.pretrain --workdir=workdirs/mine --config=experiments/configs/default.py \
      --config.dataset.name=my.csv --config.dataset.target=energy
"""

from absl import flags
from ml_collections import config_flags

from elemnet_jax import cli
from elemnet_jax.experiment import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'experiments/configs/default.py', 'Training configuration (a configs/*.py file).'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed if interrupted).', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data directory (overrides $ELEMNET_JAX_DATA).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a finished run in --workdir.')


def main(argv):
  del argv
  config = _CONFIG.value
  if _DATA_DIR.value:
    config.data_dir = _DATA_DIR.value
  train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == '__main__':
  cli.run(main)
