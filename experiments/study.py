"""`python -m experiments.study`: the same as `elemnet-jax study`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'study', *sys.argv[1:]])
