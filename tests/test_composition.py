import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elemnet_jax.featurizers import composition
from elemnet_jax.featurizers.composition import (
  ELEMENT_INDEX,
  ELEMENTS,
  CompositionFeaturizer,
  composition_fractions,
  parse_formula,
)


def test_element_order_is_elemnets():
  assert len(ELEMENTS) == 86
  assert ELEMENTS[:4] == ['H', 'Li', 'Be', 'B'] and ELEMENTS[-3:] == ['U', 'Np', 'Pu']
  assert not {'He', 'Ne', 'Ar', 'Po', 'At', 'Rn', 'Fr', 'Ra', 'Am'} & set(ELEMENTS)


@pytest.mark.parametrize(
  'formula, expected',
  [
    ('Al1Sm1Tm1', {'Al': 1 / 3, 'Sm': 1 / 3, 'Tm': 1 / 3}),
    ('Fe2O3', {'Fe': 0.4, 'O': 0.6}),
    ('NaCl', {'Na': 0.5, 'Cl': 0.5}),
    ('Fe0.5Ni0.5', {'Fe': 0.5, 'Ni': 0.5}),
    ('Ca3(PO4)2', {'Ca': 3 / 13, 'P': 2 / 13, 'O': 8 / 13}),
    ('Mg(OH)2', {'Mg': 0.2, 'O': 0.4, 'H': 0.4}),
    ('K4[Fe(CN)6]', {'K': 4 / 17, 'Fe': 1 / 17, 'C': 6 / 17, 'N': 6 / 17}),
    ('  Fe 2 O3 ', {'Fe': 0.4, 'O': 0.6}),
    ('OFe', {'Fe': 0.5, 'O': 0.5}),
    ('Li.5Co.5O1', {'Li': 0.25, 'Co': 0.25, 'O': 0.5}),
    ('CuSO4·5H2O', {'Cu': 1 / 21, 'S': 1 / 21, 'O': 9 / 21, 'H': 10 / 21}),
    ('CuSO4*H2O', {'Cu': 1 / 9, 'S': 1 / 9, 'O': 5 / 9, 'H': 2 / 9}),
    ('Na0.3CoO2 · 1.3H2O', {'Na': 0.3 / 7.2, 'Co': 1 / 7.2, 'O': 3.3 / 7.2, 'H': 2.6 / 7.2}),
    ('Li0.5H2O', {'Li': 0.5 / 3.5, 'H': 2 / 3.5, 'O': 1 / 3.5}),  # no hydrate of Li0: not ambiguous
    ('Fe2\xa0O3', {'Fe': 0.4, 'O': 0.6}),  # a non-breaking space pasted into a formula
  ],
)
def test_fractions(formula, expected):
  fractions = composition_fractions(formula)
  want = np.zeros(86, np.float32)
  for element, value in expected.items():
    want[ELEMENT_INDEX[element]] = value
  np.testing.assert_allclose(fractions, want, rtol=1e-6)
  assert fractions.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
  'formula, reason',
  [
    ('', 'empty'),
    ('   ', 'empty'),
    ('Xx2O', "unknown element symbol 'Xx'"),
    ('He2', 'He is not among the 86'),
    ('Po', 'Po is not among the 86'),
    ('AmO2', 'Am is not among the 86'),
    ('Fe0O', 'amount 0 is not positive'),
    ('Fe-1O2', 'negative amount'),
    ('Ca3(PO4', 'unbalanced parentheses'),
    ('CaPO4)2', 'unbalanced parentheses'),
    ('Ca(PO4]2', 'unbalanced parentheses'),
    ('()2', 'empty parentheses'),
    ('2Fe', 'does not follow an element'),
    ('fe2o3', "unexpected character 'f'"),
    ('Fe2O3!', "unexpected character '!'"),
    ('Fe\u0663', "unexpected character '\u0663'"),  # an Arabic-Indic digit, not 3
    ('CuSO4.5H2O', "'4.5H2O' reads as an amount or as a hydrate or adduct; write one with '·' (CuSO4·5H2O)"),
    ('K4[Fe(CN)6].3H2O', "'.3H2O' reads as an amount or as a hydrate"),  # not 0.3 of the group
    ('CaCl2.6NH3', "'2.6NH3' reads as an amount or as a hydrate"),  # not Cl2.6
    ('CuSO4·', 'a hydrate or adduct part holds no elements'),
    ('CuSO4·0H2O', 'amount 0 is not positive'),
    (f'(Fe{"9" * 200}){"9" * 200}', 'amounts too large or too small'),
    (f'Fe{"9" * 308}O{"9" * 308}', 'amounts too large or too small'),
    (f'(Fe0.{"0" * 199}1)0.{"0" * 199}1', 'amounts too large or too small'),
  ],
)
def test_errors_name_formula_and_reason(formula, reason):
  with pytest.raises(ValueError) as error:
    parse_formula(formula)
  assert reason in str(error.value)
  assert repr(formula) in str(error.value)


def test_featurizer_reports_invalid_rows_and_groups_equal_compositions():
  x, keys, invalid = CompositionFeaturizer().featurize(['Fe2O3', 'Xx', 'Fe4O6', 'He', 'Fe: 2'])
  assert [i for i, _ in invalid] == [1, 3, 4]
  assert invalid[2][1] == "unexpected character ':'"
  assert keys[0] == keys[2] != ''
  np.testing.assert_array_equal(x[1], 0)
  np.testing.assert_allclose(x[0], x[2])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_strings_raise_only_value_error(text):
  try:
    counts = parse_formula(text)
  except ValueError:
    return
  assert counts and all(0 < v < float('inf') for v in counts.values())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(ELEMENTS), st.integers(1, 20), min_size=1, max_size=5))
def test_generated_formulas_round_trip(counts):
  formula = ''.join(f'{element}{count}' for element, count in counts.items())
  fractions = composition_fractions(formula)
  total = sum(counts.values())
  for element, count in counts.items():
    assert fractions[ELEMENT_INDEX[element]] == pytest.approx(count / total)


_PLAIN_OR_NOT = st.lists(
  st.tuples(
    st.sampled_from([*ELEMENTS[:20], 'Po', 'Xx', 'Fe', 'O']),
    st.sampled_from(['', '1', '2', '0', '0.5', '007', '2.', '.5', '1' * 400, ' 3', '.5H2O', '(', ')2']),
  ),
  min_size=1,
  max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(_PLAIN_OR_NOT)
def test_plain_formulas_read_in_one_pass_give_what_the_full_grammar_gives(parts):
  # The one-pass reader of symbols and amounts must give the same floats in the same order as the
  # full parser, and leave every other formula (and every mistake) to it.
  formula = ''.join(symbol + amount for symbol, amount in parts)
  plain = composition._plain_counts(formula)
  try:
    parsed = composition._parsed_counts(formula)
  except ValueError:
    assert plain is None, formula
    return
  assert plain is None or list(plain.items()) == list(parsed.items()), formula
  assert plain is not None or not composition._PLAIN.fullmatch(formula), formula  # it reads what it may read
  assert list(parse_formula(formula).items()) == list(parsed.items())


def test_the_one_pass_reader_takes_dataset_formulas_and_leaves_the_rest():
  assert composition._plain_counts('Fe2O3Fe0.5') == {'Fe': 2.5, 'O': 3.0}
  for other in ('Ca3(PO4)2', 'CuSO4·5H2O', 'Fe2 O3', 'Li0.5H2O ', 'Fe0', 'Po2', 'Xx', 'CuSO4.5H2O'):
    assert composition._plain_counts(other) is None, other
