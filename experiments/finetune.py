"""`python -m experiments.finetune`: the same as `elemnet-jax finetune`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'finetune', *sys.argv[1:]])
