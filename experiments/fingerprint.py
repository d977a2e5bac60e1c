"""`python -m experiments.fingerprint`: the same as `elemnet-jax fingerprint`."""

import sys

from elemnet_jax import cli

if __name__ == '__main__':
  cli.main([sys.argv[0], 'fingerprint', *sys.argv[1:]])
