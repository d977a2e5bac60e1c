"""`python -m experiments.train`: the same as `elemnet-jax train`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'train', *sys.argv[1:]])
