"""Chemical formula -> 86 element fractions in ElemNet's element order."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# ElemNet's `elements_tl`: the 86 elements the network sees, in its input order.
ELEMENTS = (
  'H Li Be B C N O F Na Mg Al Si P S Cl K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr '
  'Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb '
  'Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Ac Th Pa U Np Pu'
).split()
ELEMENT_INDEX = {symbol: i for i, symbol in enumerate(ELEMENTS)}

# Every element symbol (Z = 1..118), to tell "not an element" from "an element ElemNet lacks".
PERIODIC_TABLE = frozenset(
  (
    'H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br '
    'Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er '
    'Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md '
    'No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og'
  ).split()
)

# Amounts are [0-9], not \d, which would read Fe٣ (an Arabic-Indic three) as Fe3.
_TOKEN = re.compile(r'\s*(?:([A-Z][a-z]*)|([0-9]+\.?[0-9]*|\.[0-9]+)|([(\[])|([)\]])|(\S))')
_CLOSING = {'(': ')', '[': ']'}
# CuSO4·5H2O (or • or *): a hydrate or adduct, each part after the first with its own count.
_ADDUCT = re.compile(r'[·•*]')
_COUNT = re.compile(r'\s*([0-9]+\.?[0-9]*|\.[0-9]+)?')
# CuSO4.5H2O: O4.5, or five waters? K4[Fe(CN)6].3H2O: 0.3 of the group, or three waters? CaCl2.6NH3:
# Cl2.6, or six ammonias? Refused. Li0.5H2O is not ambiguous (no hydrate of Li0). Only water and
# ammonia are recognised as the molecule after the point.
_DOTTED_HYDRATE = re.compile(r'(?:(?<=[A-Za-z)\]])[1-9][0-9]*|(?<=[)\]]))\.[0-9]+(?:H2O|NH3)\b')
# Symbols and amounts only, no space: what `_plain_counts` reads.
_PLAIN = re.compile(r'(?:[A-Z][a-z]?(?:[0-9]+(?:\.[0-9]+)?)?)+')
_PLAIN_PART = re.compile(r'([A-Z][a-z]?)([0-9.]*)')


class FormulaError(ValueError):
  """A formula that cannot be read; `reason` says why without repeating the formula."""

  def __init__(self, formula, reason: str):
    super().__init__(f'formula {formula!r}: {reason}')
    self.reason = reason


def parse_formula(formula: str) -> dict[str, float]:
  """Element -> amount for a formula such as ``Fe2O3``, ``Fe0.5Ni0.5``, ``Ca3(PO4)2`` or ``CuSO4·5H2O``.

  Raises:
    FormulaError (a ValueError): naming the formula and the reason (empty, unknown symbol, element
      outside ElemNet's 86, zero, negative or too large amount, unbalanced parentheses, stray
      character, a hydrate or ammonia adduct written with a decimal point).
  """
  return (isinstance(formula, str) and _plain_counts(formula)) or _parsed_counts(formula)


def _plain_counts(formula: str) -> dict[str, float] | None:
  """The counts of a formula made of element symbols and amounts only (Fe2O3, Fe0.5Ni0.5: nearly every
  dataset row), read in one pass; None for any other formula and for any mistake, which
  `_parsed_counts` reads and names. Both give the same floats, summed in the same order."""
  if not _PLAIN.fullmatch(formula) or ('.' in formula and _DOTTED_HYDRATE.search(formula)):
    return None
  counts: dict[str, float] = {}
  for symbol, amount in _PLAIN_PART.findall(formula):
    value = float(amount) if amount else 1.0
    if symbol not in ELEMENT_INDEX or not 0 < value < math.inf:
      return None
    counts[symbol] = counts.get(symbol, 0.0) + value
  return counts if math.isfinite(sum(counts.values())) else None


def _parsed_counts(formula: str) -> dict[str, float]:
  """`parse_formula` by the full grammar: groups, hydrates and adducts, whitespace, and every mistake."""
  if not isinstance(formula, str):
    raise FormulaError(formula, 'not a string')
  if not formula.strip():
    raise FormulaError(formula, 'empty')
  dotted = _DOTTED_HYDRATE.search(formula)
  if dotted:
    raise FormulaError(
      formula,
      f"{dotted.group(0)!r} reads as an amount or as a hydrate or adduct; write one with '·' (CuSO4·5H2O)",
    )
  first, *others = _ADDUCT.split(formula)
  counts = _parse_part(formula, first)
  for part in others:
    count = _COUNT.match(part)
    value = _amount(formula, count.group(1)) if count.group(1) else 1.0
    rest = part[count.end() :]
    if not rest.strip():
      raise FormulaError(formula, 'a hydrate or adduct part holds no elements')
    _merge(counts, {element: amount * value for element, amount in _parse_part(formula, rest).items()})
  if not all(0 < count < math.inf for count in counts.values()) or not math.isfinite(sum(counts.values())):
    raise FormulaError(formula, 'amounts too large or too small')  # products that overflow or underflow
  return counts


def _amount(formula: str, text: str) -> float:
  value = float(text)
  if not math.isfinite(value):
    raise FormulaError(formula, f'amount {text[:12]}... is too large')
  if value <= 0:
    raise FormulaError(formula, f'amount {text} is not positive')
  return value


def _parse_part(formula: str, text: str) -> dict[str, float]:
  """Element -> amount of one part of `formula` (all of it unless it is a hydrate or adduct)."""
  stack: list[tuple[str, dict[str, float]]] = [('', {})]
  position, last_group = 0, None  # last_group: counts of a just-closed group awaiting a multiplier
  previous_was_amount = False
  while position < len(text):
    match = _TOKEN.match(text, position)
    if match is None:  # only trailing whitespace is left
      break
    position = match.end()
    symbol, amount, opening, closing, other = match.groups()
    if symbol is not None:
      _merge(stack[-1][1], last_group)
      last_group = None
      if symbol not in PERIODIC_TABLE:
        raise FormulaError(formula, f'unknown element symbol {symbol!r}')
      if symbol not in ELEMENT_INDEX:
        raise FormulaError(formula, f'element {symbol} is not among the 86 elements ElemNet uses')
      last_group = {symbol: 1.0}
      previous_was_amount = False
    elif amount is not None:
      if last_group is None or previous_was_amount:
        raise FormulaError(formula, f'amount {amount} does not follow an element or group')
      value = _amount(formula, amount)
      last_group = {element: count * value for element, count in last_group.items()}
      previous_was_amount = True
    elif opening is not None:
      _merge(stack[-1][1], last_group)
      last_group = None
      stack.append((opening, {}))
      previous_was_amount = False
    elif closing is not None:
      if len(stack) == 1 or _CLOSING[stack[-1][0]] != closing:
        raise FormulaError(formula, 'unbalanced parentheses')
      _merge(stack[-1][1], last_group)
      last_group = stack.pop()[1]
      if not last_group:
        raise FormulaError(formula, 'empty parentheses')
      previous_was_amount = False
    else:
      if other == '-':
        raise FormulaError(formula, 'negative amount')
      raise FormulaError(formula, f'unexpected character {other!r}')
  if len(stack) != 1:
    raise FormulaError(formula, 'unbalanced parentheses')
  _merge(stack[0][1], last_group)
  counts = stack[0][1]
  if not counts:
    raise FormulaError(formula, 'no elements')
  return counts


def _merge(into: dict[str, float], group: dict[str, float] | None) -> None:
  for element, count in (group or {}).items():
    into[element] = into.get(element, 0.0) + count


def composition_fractions(formula: str) -> np.ndarray:
  """The 86 element fractions (summing to 1) of one formula."""
  counts = parse_formula(formula)
  fractions = np.zeros(len(ELEMENTS), np.float32)
  total = sum(counts.values())
  for element, count in counts.items():
    fractions[ELEMENT_INDEX[element]] = count / total
  return fractions


class CompositionFeaturizer:
  """ElemNet's input: element fractions of a formula, raw (no scaling), 86 wide."""

  name = 'composition'
  input_kind = 'formula'
  width = len(ELEMENTS)

  def __init__(self, **options):
    if options:
      raise ValueError(f'featurizer composition takes no options, got {sorted(options)}')

  def description(self) -> dict:
    return {'name': self.name, 'width': self.width, 'elements': list(ELEMENTS)}

  def column_names(self) -> list[str]:
    return list(ELEMENTS)

  def featurize(self, inputs: Sequence[str]) -> tuple[np.ndarray, list[str], list[tuple[int, str]]]:
    """Returns (fractions [n, 86], grouping keys, [(index, reason)] of invalid inputs).

    Invalid rows are left as zeros. The key of a row is its normalised composition, so
    ``Fe2O3`` and ``Fe4O6`` fall in one group.
    """
    features = np.zeros((len(inputs), self.width), np.float32)
    keys: list[str] = [''] * len(inputs)
    invalid: list[tuple[int, str]] = []
    for i, formula in enumerate(inputs):
      try:
        counts = parse_formula(formula)
      except FormulaError as error:
        invalid.append((i, error.reason))
        continue
      total = sum(counts.values())
      for element, count in counts.items():
        features[i, ELEMENT_INDEX[element]] = count / total
      keys[i] = ' '.join(f'{element}{count / total:.6g}' for element, count in sorted(counts.items()))
    return features, keys, invalid
