"""elemnet_jax: ElemNet deep transfer learning for materials and molecules, in JAX."""

__version__ = '0.1.0'
