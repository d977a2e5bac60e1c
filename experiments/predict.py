"""Predicts with one or more finished runs (their members' mean and standard deviation).

  python -m experiments.predict --models=workdirs/ssub_ft --formulas=Fe2O3,NaCl
  python -m experiments.predict --models=workdirs/a,workdirs/b --input=my.csv --column=formula \
      --output=predictions.csv
"""

from absl import flags

from elemnet_jax import cli
from elemnet_jax.experiment import predict_file

_MODELS = flags.DEFINE_list('models', None, 'Workdirs of finished runs (comma separated).', required=True)
_INPUT = flags.DEFINE_string('input', None, 'CSV file with the inputs to predict.')
_COLUMN = flags.DEFINE_string('column', 'formula', 'Input column of --input (formula or smiles).')
_FORMULAS = flags.DEFINE_list('formulas', None, 'Inputs given on the command line instead of --input.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output CSV (default: print to standard output).')
_SKIP = flags.DEFINE_bool('skip_invalid', False, 'Drop invalid inputs instead of stopping.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing --output file.')


def main(argv):
  del argv
  predict_file(
    _MODELS.value,
    input_csv=_INPUT.value,
    column=_COLUMN.value,
    inputs=_FORMULAS.value,
    output=_OUTPUT.value,
    skip_invalid=_SKIP.value,
    overwrite=_OVERWRITE.value,
  )


if __name__ == '__main__':
  cli.run(main)
