"""elemnet_jax: ElemNet deep transfer learning for materials and molecules, in JAX.

The Python API (see README): `get_config`, `train_model`, `finetune`, `run_study`,
`load` / `load_pretrained` -> `Model.predict`. They are imported from `elemnet_jax.api` when first
used, so that `import elemnet_jax.cli` (the command, its help and its one-line mistakes) does not
load JAX, Flax and orbax before it needs them.
"""

from elemnet_jax.errors import UserError

__version__ = '0.1.0'
_API = ('Model', 'finetune', 'get_config', 'load', 'load_pretrained', 'run_study', 'show_progress', 'train_model')
__all__ = ['UserError', *_API]


def __getattr__(name: str):
  if name in _API:
    from elemnet_jax import api

    return getattr(api, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted({*globals(), *_API})
