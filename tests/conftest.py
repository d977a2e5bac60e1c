"""Tests read the real datasets: from $ELEMNET_JAX_DATA, else ../shared/data beside the repo."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SHARED = REPO.parent / 'shared' / 'data'
if not os.environ.get('ELEMNET_JAX_DATA') and _SHARED.exists():
  os.environ['ELEMNET_JAX_DATA'] = str(_SHARED)


@pytest.fixture(scope='session')
def data_dir() -> Path:
  return Path(os.environ['ELEMNET_JAX_DATA'])
