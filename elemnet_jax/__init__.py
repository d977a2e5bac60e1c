"""elemnet_jax: ElemNet deep transfer learning for materials and molecules, in JAX.

The Python API (see README): `get_config`, `train_model`, `finetune`, `run_study`,
`load` / `load_pretrained` -> `Model.predict`.
"""

from elemnet_jax.api import Model, finetune, get_config, load, load_pretrained, run_study, show_progress, train_model
from elemnet_jax.errors import UserError

__version__ = '0.1.0'
__all__ = [
  'Model',
  'UserError',
  'finetune',
  'get_config',
  'load',
  'load_pretrained',
  'run_study',
  'show_progress',
  'train_model',
]
