"""`python -m experiments.benchmark`: the same as `elemnet-jax benchmark`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'benchmark', *sys.argv[1:]])
