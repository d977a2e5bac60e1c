"""`python -m experiments.predict`: the same as `elemnet-jax predict`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'predict', *sys.argv[1:]])
