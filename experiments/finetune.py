"""Fine-tunes a pretrained ElemNet (a finished workdir) on another dataset.

  python -m experiments.finetune --pretrained=workdirs/oqmd --workdir=workdirs/ssub_ft \
      --config=experiments/configs/finetune.py --config.transfer.freeze_layers=4

With --config.train.ensemble=K, member k starts from member k mod M of a pretrained ensemble of M.
--pretrained=A,B,... joins separately pretrained runs (e.g. one per seed) into one such ensemble.
"""

from absl import flags
from ml_collections import config_flags

from elemnet_jax import cli
from elemnet_jax.experiment import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
  'config', 'experiments/configs/finetune.py', 'Fine-tuning configuration (a configs/*.py file).'
)
_PRETRAINED = flags.DEFINE_string(
  'pretrained',
  None,
  'Workdir of a finished (pre)training run; several, comma-separated, form one ensemble.',
  required=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed if interrupted).', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data directory (overrides $ELEMNET_JAX_DATA).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a finished run in --workdir.')


def main(argv):
  del argv
  config = _CONFIG.value
  config.transfer.pretrained = _PRETRAINED.value
  if _DATA_DIR.value:
    config.data_dir = _DATA_DIR.value
  train_and_evaluate(config, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == '__main__':
  cli.run(main)
