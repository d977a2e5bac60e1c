"""Freezing and loading for transfer learning: freeze specifications become label pytrees."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
from flax import traverse_util

from elemnet_jax.errors import UserError
from elemnet_jax.model import ElemNet, ElemNetConfig

LABELS = ('frozen', 'body', 'head')


def layer_rules(freeze_layers: int, config: ElemNetConfig) -> list[tuple[str, str]]:
  """Ordered (regex, label) rules: the first `freeze_layers` dense layers frozen, the output
  layer 'head', everything else 'body'."""
  return freeze_rules(freeze_layers, (), config)


def label_params(params: Any, rules: Sequence[tuple[str, str]]) -> Any:
  """A pytree like `params` whose leaves are labels; the first matching rule wins.

  Paths read like ``params/dense_3/kernel``. Every leaf must match a rule, and every label must
  be one of 'frozen', 'body', 'head'.
  """
  compiled = []
  for pattern, label in rules:
    if label not in LABELS:
      raise UserError(f'freeze rule {pattern!r}: unknown label {label!r}; use one of {LABELS}')
    try:
      compiled.append((re.compile(pattern), label))
    except re.error as error:
      raise UserError(f'freeze rule {pattern!r}: not a valid regular expression ({error})') from None
  labels = {}
  for path in traverse_util.flatten_dict(params):
    name = '/'.join(path)
    matched = [label for pattern, label in compiled if pattern.search(name)]
    if not matched:
      raise UserError(f'parameter {name} matches no freeze rule; add a catch-all rule (".*", "body")')
    labels[path] = matched[0]
  names = ['/'.join(path) for path in labels]
  for pattern, label in compiled:  # a misspelt freeze regex would otherwise quietly freeze nothing
    if label == 'frozen' and not any(pattern.search(name) for name in names):
      raise UserError(f'freeze rule {pattern.pattern!r} matches no parameter (paths read like {names[0]})')
  assert len(labels) == len(jax.tree.leaves(params)), 'every leaf gets exactly one label'
  return traverse_util.unflatten_dict(labels)


def freeze_rules(freeze_layers: int, freeze_regex: Sequence[str], config: ElemNetConfig):
  """Rules from regexes over parameter paths if given, else from a depth; the rest train."""
  last = config.num_dense - 1
  if freeze_regex:
    frozen = list(freeze_regex)
  elif 0 <= freeze_layers <= last:
    frozen = [rf'^params/dense_{i}/' for i in range(freeze_layers)]
  else:
    raise UserError(
      f'freeze_layers={freeze_layers} is outside the model: it has {config.num_dense} '
      f'dense layers, so use 0..{last} (the output layer always trains)'
    )
  return [(pattern, 'frozen') for pattern in frozen] + [(rf'^params/dense_{last}/', 'head'), (r'.*', 'body')]


def frozen_positions(labels: Any) -> tuple[int, ...]:
  """1-based positions of the dense layers whose leaves are all frozen."""
  by_layer: dict[int, set[str]] = {}
  for path, label in traverse_util.flatten_dict(labels).items():
    match = re.fullmatch(r'dense_(\d+)', path[1]) if len(path) > 1 else None
    if match:
      by_layer.setdefault(int(match.group(1)) + 1, set()).add(label)
  return tuple(sorted(p for p, found in by_layer.items() if found == {'frozen'}))


def reinit_head(params: Any, model: ElemNet, width: int, seed: int) -> Any:
  """`params` with the output layer drawn afresh (the rest unchanged)."""
  fresh = model.init(jax.random.PRNGKey(seed), jax.numpy.zeros((1, width)))
  head = f'dense_{model.config.num_dense - 1}'
  return {'params': {**params['params'], head: fresh['params'][head]}}


def check_compatible(source_meta: dict, featurizer_description: dict, source_dir: str) -> None:
  """The target data must be featurized exactly as the source model's inputs were."""
  source = source_meta['featurizer']
  if source != featurizer_description:
    raise UserError(
      f'{source_dir}: the pretrained model reads features from {describe(source)}, but the '
      f'target data is featurized with {describe(featurizer_description)}; use the same featurizer'
    )


def describe(description: dict) -> str:
  """A featurizer description as one phrase: its name, width and options."""
  options = ', '.join(f'{k}={v}' for k, v in sorted(description.items()) if k not in ('name', 'width', 'elements'))
  return f"'{description.get('name')}' (width {description.get('width')}{', ' + options if options else ''})"
