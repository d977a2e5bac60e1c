"""Checks of single config values, and configs as plain data: what `configs.schema`'s sections build on."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from elemnet_jax.errors import UserError


class Invalid(UserError):
  """A field's value refused; '{at}' in the message stands for where its section sits (`--config.train.`)."""

  def __init__(self, message: str):
    self.message = message
    super().__init__(message.replace('{at}', '--config.'))

  def at(self, where: str) -> UserError:
    return UserError(self.message.replace('{at}', f'--config.{where}.' if where else '--config.'))


def _choice(field: str, value: Any, choices: tuple) -> None:
  if value not in choices:
    raise Invalid(f'{{at}}{field}={value!r}: use one of {", ".join(choices)}')


def _integer(field: str, value: Any, low: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise Invalid(f'{{at}}{field}={value!r}: must be {"a positive" if low == 1 else "a non-negative"} integer')


def _number(section, field: str) -> None:
  """A finite number, kept as a float."""
  value = getattr(section, field)
  if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
    raise Invalid(f'{{at}}{field}={value!r}: must be a finite number')
  object.__setattr__(section, field, float(value))


def _tuple(section, field: str) -> tuple:
  value = getattr(section, field)
  value = (value,) if isinstance(value, str) else tuple(value)
  object.__setattr__(section, field, value)
  return value


def target_names(target: str | None) -> tuple[str, ...]:
  """The target columns `dataset.target` names: one, or several separated by commas ('E_gap,HOMO,LUMO')."""
  if not target or ',' not in target:
    return (target or '',)
  names = tuple(name.strip() for name in target.split(','))
  if not all(names) or len(set(names)) != len(names):
    raise Invalid(f'{{at}}target={target!r}: name each target column once, separated by commas')
  return names


def check_seed(seed: Any, where: str = 'seed', count: int = 1) -> None:
  """Seeds seed .. seed + count - 1 must be distinct 32-bit keys (larger ones wrap onto smaller ones)."""
  if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 2**32 - count:
    raise Invalid(f'{{at}}{where}={seed!r}: use an integer from 0 to {2**32 - count}')


def plain(value: Any) -> Any:
  """A typed value as plain data: dicts, tuples and scalars (what config.json records, tuples as lists)."""
  if hasattr(value, 'to_dict'):
    return value.to_dict()
  if dataclasses.is_dataclass(value):
    return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
  if isinstance(value, tuple | list):
    return tuple(plain(item) for item in value)
  return value


def with_fields(values: dict, fields: dict[str, Any]) -> dict:
  """A copy of nested plain `values` with each dotted field set (its section must exist)."""
  values = {key: dict(value) if isinstance(value, dict) else value for key, value in values.items()}
  for dotted, value in fields.items():
    *path, last = dotted.split('.')
    node = values
    for key in path:
      node[key] = dict(node[key])
      node = node[key]
    node[last] = value
  return values
