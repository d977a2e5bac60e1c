"""Transfer learning: freeze specifications become one `Freezing` value; finished runs become a source ensemble."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from elemnet_jax import pretrained as shipped
from elemnet_jax.errors import UserError
from elemnet_jax.models import ModelConfig, config_from_dict
from elemnet_jax.training import checkpoint, guard
from elemnet_jax.training.train import random_params
from elemnet_jax.workdir import differences, read_config, read_json

LABELS = ('frozen', 'body', 'head')


def layer_rules(freeze_layers: int, config: ModelConfig) -> list[tuple[str, str]]:
  """Ordered (regex, label) rules: the model's first `freeze_layers` groups frozen, its output
  layer 'head', everything else 'body'."""
  return freeze_rules(freeze_layers, (), config)


def label_params(params: Any, rules: Sequence[tuple[str, str]]) -> Any:
  """A pytree like `params` whose leaves are labels; the first matching rule wins.

  Paths read like ``params/<group>/kernel`` (the model family's groups). Every leaf must match a
  rule, and every label must be one of 'frozen', 'body', 'head'.
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


def freeze_rules(freeze_layers: int, freeze_regex: Sequence[str], config: ModelConfig):
  """Rules from regexes over parameter paths if given, else from a depth in the model's groups; the rest train."""
  groups = config.groups()
  if freeze_regex:
    frozen = list(freeze_regex)
  elif 0 <= freeze_layers <= len(groups):
    frozen = [rf'^params/{re.escape(group)}/' for group in groups[:freeze_layers]]
  else:
    raise UserError(
      f'freeze_layers={freeze_layers} is outside the model: its {config.name} network has {len(groups)} '
      f'freezable layers and an output layer, so use 0..{len(groups)} (the output layer always trains)'
    )
  return [(pattern, 'frozen') for pattern in frozen] + [
    (rf'^params/{re.escape(config.output_group())}/', 'head'),
    (r'.*', 'body'),
  ]


def with_fixed_tables(rules: Sequence[tuple[str, str]] | None, config: ModelConfig):
  """`rules` with the model's published tables frozen first (None, as given, when it has none).

  A family keeps such tables (e.g. mat2vec element vectors) as features: frozen, no optimizer, not
  even AdamW's weight decay, changes them, in pretraining and fine-tuning alike.
  """
  tables = config.data_tables()
  if not tables:
    return rules
  fixed = [(rf'^params/{re.escape("/".join(path))}$', 'frozen') for path in tables]
  return fixed + list(rules or [(r'.*', 'body')])


@dataclasses.dataclass(frozen=True)
class Freezing:
  """What fine-tuning freezes, in the three forms its users need.

  `labels`: a pytree like the parameters of 'frozen' | 'body' | 'head' (the optimizer's partition),
  or None when nothing is frozen and every layer learns alike; `paths`: the frozen parameter paths
  (the train step takes no gradient for them); `positions`: 1-based positions of the model's groups
  frozen whole (their dropout is off).
  """

  labels: Any = None
  paths: frozenset[tuple[str, ...]] = frozenset()
  positions: tuple[int, ...] = ()

  @classmethod
  def from_rules(cls, rules: Sequence[tuple[str, str]], params: Any, groups: Sequence[str]) -> Freezing:
    labels = label_params(params, rules)
    flat = traverse_util.flatten_dict(labels).items()
    return cls(labels, frozenset(path for path, label in flat if label == 'frozen'), frozen_positions(labels, groups))


def frozen_positions(labels: Any, groups: Sequence[str]) -> tuple[int, ...]:
  """1-based positions in `groups` (the model's freezable groups) of those whose leaves are all frozen."""
  by_group: dict[str, set[str]] = {}
  for path, label in traverse_util.flatten_dict(labels).items():
    if len(path) > 1:
      by_group.setdefault(path[1], set()).add(label)
  return tuple(i + 1 for i, group in enumerate(groups) if by_group.get(group) == {'frozen'})


def reinit_head(params: Any, model, width: int, seed: int) -> Any:
  """`params` with the output layer drawn afresh (the rest unchanged)."""
  fresh = random_params(model, jax.random.PRNGKey(seed), width)
  head = model.config.output_group()
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


def source_members(stacked_params: Any, members: int) -> list:
  """Initial parameters of `members` fine-tuned members: member k starts from source member k mod K.

  A source ensemble of K independently pretrained members thus hands each fine-tuned member its
  own pretrained model (up to K); a single source model starts them all.
  """
  sources = jax.tree.leaves(stacked_params)[0].shape[0]
  return [jax.tree.map(lambda a, k=k % sources: a[k], stacked_params) for k in range(members)]


# What runs must share to act as one source ensemble: the network, its inputs and its output units.
_SOURCE_KEYS = ('model', 'featurizer', 'feature_scaling', 'target_scaling', 'dataset', 'frozen_layers')


def _source_fields(meta: dict) -> dict:
  """What runs must share, as this code reads it (a model meta written before `frozen_layers`: none frozen)."""
  fields = {key: meta[key] for key in _SOURCE_KEYS if key in meta}
  fields['model'] = config_from_dict(meta['model']).to_dict()
  return {**fields, 'frozen_layers': list(meta.get('frozen_layers', []))}


def source_workdirs(pretrained: str, where: str = 'pretrained') -> list[str]:
  """The finished runs named by a `pretrained` setting: workdirs or shipped models' names, separated by commas."""
  workdirs = [shipped.workdir_of(name.strip()) for name in pretrained.split(',') if name.strip()]
  if not workdirs:
    raise UserError(f'{where}={pretrained!r}: name a finished workdir or a shipped model ({shipped.listed()})')
  resolved = [Path(name).resolve() for name in workdirs]
  for later, path in enumerate(resolved):
    if path in resolved[:later]:
      twice = f'{workdirs[resolved.index(path)]!r} and {workdirs[later]!r}'
      raise UserError(f'{where}={pretrained!r}: the same run is named twice ({twice}); each run joins once')
  return workdirs


def read_source_meta(workdirs: Sequence[str | os.PathLike]) -> dict:
  """The meta of the runs as one ensemble: their members in the order given.

  Runs pretrained one at a time (e.g. one per `--config.seed`, on different machines) join into one
  source ensemble when they share the network, featurization, scalings, data and split, and no
  member seed is in two of them (which would put one model in twice).
  """
  metas = [checkpoint.read_meta(workdir, checkpoint.MODEL_META) for workdir in workdirs]
  if len(workdirs) == 1:
    return metas[0]
  why = 'a run joins a source ensemble only with the config it was trained with'
  configs = [read_config(Path(workdir) / 'config.json', why) for workdir in workdirs]
  trained_by = {}  # member seed -> the run that trained it
  for workdir, meta, config in zip(workdirs, metas, configs):
    differing = [name.split('.')[0] for name in differences(_source_fields(metas[0]), _source_fields(meta))]
    differing += [f'dataset.{name}' for name in differences(configs[0]['dataset'], config['dataset'])]
    if differing:
      raise UserError(
        f'{workdir}: its {differing[0]} differs from that of {workdirs[0]}; runs join into one source '
        'ensemble only when they share the network, featurizer, scalings, data and split'
      )
    for seed in range(config['seed'], config['seed'] + meta['members']):
      if seed in trained_by:
        raise UserError(
          f'{workdir}: its member seed {seed} was also trained by {trained_by[seed]}, so the ensemble '
          'would hold one model twice; pretrain it with another --config.seed'
        )
      trained_by[seed] = workdir
  return {**metas[0], 'members': sum(meta['members'] for meta in metas)}


def load_sources(workdirs: Sequence[str | os.PathLike]) -> tuple[Any, Any, dict]:
  """(model, parameters [K, ...], meta) of one or several finished runs, their members concatenated."""
  meta = read_source_meta(workdirs)
  loaded = [checkpoint.load_trained(workdir) for workdir in workdirs]
  params = jax.tree.map(lambda *members: np.concatenate(members), *(params for _, params, _ in loaded))
  return loaded[0][0], params, meta


def refuse_unlearned(
  workdirs: Sequence[str | os.PathLike], allow: bool, consent: str = 'transfer.allow_collapsed_source'
):
  """UserError for a source run whose metrics.json says it learned nothing (see training.guard), unless `allow`."""
  for source in workdirs:
    refusal = guard.refusal(read_json(Path(source) / 'metrics.json', 'the run did not finish'), str(source), consent)
    if refusal and not allow:
      raise UserError(refusal)
    if refusal:
      logging.warning('%s (allowed by --config.%s)', refusal.split('; transferring')[0], consent)
