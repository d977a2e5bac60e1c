"""`python -m experiments.diagnose_collapse`: dead ReLU units and validation MAE against the median, per recipe.

  python -m experiments.diagnose_collapse --config=elemnet_jax/configs/oqmd.py --config.dataset.name=oqmd_bandgap \
    --n_train=20000 --n_val=5000 --epochs=4

Trains the config as given and each variant of --variants (a ';'-separated list of
'name:field=value,field=value' over dotted config fields) on the same subsample; prints a table.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from elemnet_jax import configs, diagnose

config_flags.DEFINE_config_file('config', configs.path_of('oqmd'), 'A named config or a config file (.py).')
flags.DEFINE_integer('n_train', 20000, 'Training rows drawn from the training split.')
flags.DEFINE_integer('n_val', 5000, 'Validation rows drawn from the validation split.')
flags.DEFINE_integer('epochs', 4, 'Epochs per recipe (the schedule counts them).')
flags.DEFINE_string(
  'variants',
  'standard:train.target_scaling=standard;huber:train.loss=huber;mse:train.loss=mse;'
  'residual:model.name=residual;lr1e-4:train.learning_rate=1e-4',
  "';'-separated 'name:field=value,...' variants of the config.",
)
flags.DEFINE_string('output', '', 'Also write every probe (per-layer dead shares) to this JSON file.')


def main(argv):
  del argv
  config = configs.resolve(flags.FLAGS.config)
  parts = diagnose.subsample(config, flags.FLAGS.n_train, flags.FLAGS.n_val)  # one draw for every recipe
  probes = [diagnose.probe(config, 'as given', parts, flags.FLAGS.epochs)]
  for variant in filter(None, flags.FLAGS.variants.split(';')):
    name, _, fields = variant.partition(':')
    changed = flags.FLAGS.config.copy_and_resolve_references()
    for field in filter(None, fields.split(',')):
      path, value = field.split('=')
      *sections, last = path.split('.')
      section = changed
      for key in sections:
        section = section[key]
      section[last] = type(section[last])(value)
    probes.append(diagnose.probe(configs.resolve(changed), name, parts, flags.FLAGS.epochs))
    print('\n'.join(diagnose.summary_rows(probes)), flush=True)  # the table so far
  if flags.FLAGS.output:
    with open(flags.FLAGS.output, 'w') as stream:
      json.dump([p.__dict__ for p in probes], stream, indent=1)


if __name__ == '__main__':
  app.run(main)
