"""kit.money: exact sums, one rounding rule, allocation without losing a cent."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kit import money as m
from kit.money import CurrencyMismatch, Money, MoneyError, UnknownCurrency

LIMIT = 10**12  # keeps products and sums inside MAX_AMOUNT
currencies = st.sampled_from(m.CURRENCIES)
amounts = st.integers(min_value=-LIMIT, max_value=LIMIT)
bps = st.integers(min_value=0, max_value=m.MAX_TAX_BP)


@st.composite
def money(draw, currency=None):
    return Money(draw(amounts), currency or draw(currencies))


@st.composite
def quantities(draw, allow_negative=False):
    """Exact decimals with up to 3 places, as they arrive from strings."""
    low = -(10**6) if allow_negative else 0
    units = draw(st.integers(min_value=low, max_value=10**6))
    return Decimal(units).scaleb(-draw(st.integers(min_value=0, max_value=3)))


# -- the type ------------------------------------------------------------------------


def test_exponents_and_unknown_codes():
    assert (m.exponent("USD"), m.exponent("JPY"), m.exponent("BHD")) == (2, 0, 3)
    for bad in ("ZZZ", "usd", "", None, 840):
        with pytest.raises(UnknownCurrency) as err:
            m.exponent(bad)
        assert "ISO 4217" in str(err.value)
    with pytest.raises(UnknownCurrency):
        Money(1, "ABC")


@pytest.mark.parametrize("amount", [1.0, Decimal("1"), True, "1", None])
def test_amounts_are_integers_only(amount):
    with pytest.raises(MoneyError):
        Money(amount, "USD")


def test_amounts_stay_within_the_exact_range():
    Money(m.MAX_AMOUNT, "USD")
    Money(-m.MAX_AMOUNT, "USD")
    assert m.MAX_AMOUNT < 2**53
    with pytest.raises(MoneyError):
        Money(m.MAX_AMOUNT + 1, "USD")
    with pytest.raises(MoneyError):
        Money(m.MAX_AMOUNT, "USD") + Money(1, "USD")


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "USD", 1234),
        ("-0.05", "USD", -5),
        ("12", "USD", 1200),
        ("12.3", "USD", 1230),
        ("1200", "JPY", 1200),
        ("1.234", "BHD", 1234),
    ],
)
def test_major_units_from_exact_text(text, currency, minor):
    value = Money.of(text, currency)
    assert value == Money(minor, currency)
    assert Decimal(value.major()) == Decimal(text)


@pytest.mark.parametrize(
    ("text", "currency"),
    [("12.345", "USD"), ("1.5", "JPY"), ("1e3", "USD"), ("NaN", "USD"), ("12,34", "EUR")],
)
def test_major_units_refuse_what_the_currency_cannot_hold(text, currency):
    with pytest.raises(MoneyError):
        Money.of(text, currency)


def test_major_text_and_str():
    assert Money(1234, "USD").major() == "12.34"
    assert Money(-5, "USD").major() == "-0.05"
    assert Money(1200, "JPY").major() == "1200"
    assert str(Money(1234, "BHD")) == "1.234 BHD"


def test_different_currencies_are_refused():
    usd, eur = Money(100, "USD"), Money(100, "EUR")
    for op in (
        lambda: usd + eur,
        lambda: usd - eur,
        lambda: usd < eur,
        lambda: usd <= eur,
        lambda: usd > eur,
        lambda: usd >= eur,
        lambda: m.total([usd], "EUR"),
        lambda: m.total([usd, eur], "USD"),
    ):
        with pytest.raises(CurrencyMismatch):
            op()
    assert usd != eur  # equality is value equality; only arithmetic and order refuse
    assert len({usd, eur, Money(100, "USD")}) == 2


def test_money_does_not_multiply_or_mix_with_numbers():
    with pytest.raises(TypeError):
        Money(100, "USD") * 2
    with pytest.raises(TypeError):
        2 * Money(100, "USD")
    with pytest.raises(TypeError):
        Money(100, "USD") + 1  # type: ignore[operator]


@given(money(), money(), money())
def test_any_currency_mix_is_refused_or_exact(a, b, c):
    if a.currency == b.currency:
        assert (a + b).amount == a.amount + b.amount
    else:
        with pytest.raises(CurrencyMismatch):
            a + b
        with pytest.raises(CurrencyMismatch):
            a < b
    assume(a.currency == b.currency == c.currency)
    assert (a + b) + c == a + (b + c)


# -- sums ------------------------------------------------------------------------------


@given(currencies, st.lists(amounts, max_size=50))
def test_sums_are_exact_and_order_free(currency, values):
    items = [Money(v, currency) for v in values]
    assert m.total(items, currency) == Money(sum(values), currency)
    assert m.total(reversed(items), currency) == m.total(items, currency)
    assert m.total([], currency) == Money.zero(currency)


def test_a_sum_is_bounded_by_its_result_not_its_order():
    big, back = Money(m.MAX_AMOUNT, "USD"), Money(-m.MAX_AMOUNT, "USD")
    assert m.total([big, big, back], "USD") == big
    assert m.total([back, big, big], "USD") == big
    with pytest.raises(MoneyError):
        m.total([big, big], "USD")
    with pytest.raises(TypeError):
        m.total([big, 5], "USD")  # type: ignore[list-item]
    with pytest.raises(UnknownCurrency):
        m.total([], "ZZZ")


@given(money(), money())
def test_subtraction_undoes_addition(a, b):
    b = Money(b.amount, a.currency)
    assert (a + b) - b == a
    assert -(-a) == a
    assert a - a == Money.zero(a.currency)


# -- the rounding rule ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 10, 1), (15, 10, 2), (25, 10, 3), (-5, 10, -1), (-25, 10, -3), (4, 10, 0), (14, 10, 1)],
)
def test_half_up_away_from_zero(numerator, denominator, expected):
    assert m.round_div(numerator, denominator) == expected


@given(st.integers(min_value=-(10**20), max_value=10**20), st.integers(1, 10**8))
def test_round_div_is_within_half_a_unit_and_symmetric(numerator, denominator):
    result = m.round_div(numerator, denominator)
    error = Fraction(result) - Fraction(numerator, denominator)
    assert abs(error) <= Fraction(1, 2)
    if abs(error) == Fraction(1, 2):  # a tie goes away from zero
        assert abs(result) > abs(Fraction(numerator, denominator))
    assert m.round_div(-numerator, denominator) == -result


@given(money(), bps)
def test_tax_is_never_off_by_more_than_half_a_minor_unit(amount, bp):
    levied = m.tax(amount, bp)
    exact = Fraction(amount.amount * bp, 10_000)
    assert levied.currency == amount.currency
    assert abs(Fraction(levied.amount) - exact) <= Fraction(1, 2)
    assert m.tax(-amount, bp) == -levied  # a credit note mirrors its invoice


def test_tax_examples():
    assert m.tax(Money(1000, "USD"), 825) == Money(83, "USD")  # 82.5 -> 83
    assert m.tax(Money(1000, "USD"), 0) == Money(0, "USD")
    assert m.tax(Money(1000, "USD"), 10_000) == Money(1000, "USD")
    assert m.tax(Money(1, "USD"), 4999) == Money(0, "USD")  # 0.4999
    assert m.tax(Money(1, "USD"), 5000) == Money(1, "USD")  # 0.5 rounds up


@pytest.mark.parametrize("bp", [-1, 10_001, 8.25, "825", True, None])
def test_tax_rates_are_whole_basis_points_in_range(bp):
    with pytest.raises(MoneyError):
        m.tax(Money(100, "USD"), bp)


@given(money(), quantities(allow_negative=True))
def test_times_is_within_half_a_minor_unit(price, quantity):
    assume(abs(price.amount) * abs(quantity) <= m.MAX_AMOUNT // 2)
    line = m.line_total(price, quantity)
    exact = Fraction(price.amount) * Fraction(quantity)
    assert abs(Fraction(line.amount) - exact) <= Fraction(1, 2)
    assert price.times(-quantity) == -line


def test_times_examples_and_refusals():
    assert Money(1999, "USD").times(Decimal("2.5")) == Money(4998, "USD")  # 49.975 -> 49.98
    assert Money(3333, "USD").times(Decimal("0.5")) == Money(1667, "USD")
    assert Money(100, "JPY").times(Decimal("1E+2")) == Money(10000, "JPY")
    for bad in (2.5, 2, "2.5", Decimal("NaN"), Decimal("Infinity"), Decimal("1E+99")):
        with pytest.raises(MoneyError):
            Money(100, "USD").times(bad)  # type: ignore[arg-type]


@given(st.lists(money(currency="USD"), max_size=20), bps)
def test_totals_add_up(lines, bp):
    result = m.totals(lines, "USD", bp)
    assert result.subtotal == m.total(lines, "USD")
    assert result.tax == m.tax(result.subtotal, bp)
    assert result.total == result.subtotal + result.tax
    assert result.to_api()["total"] == result.total.to_api()


# -- allocation ----------------------------------------------------------------------


@given(money(), st.lists(st.integers(0, 1000), min_size=1, max_size=30))
def test_allocation_sums_exactly_and_stays_within_a_unit(amount, weights):
    assume(sum(weights) > 0)
    parts = m.allocate(amount, weights)
    assert len(parts) == len(weights)
    assert m.total(parts, amount.currency) == amount
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(amount.amount * weight, sum(weights))
        assert abs(Fraction(part.amount) - exact) < 1
        if weight == 0:
            assert part.amount == 0
    assert m.allocate(-amount, weights) == [-p for p in parts]


@given(money(), st.integers(1, 50))
def test_equal_parts_differ_by_at_most_one_unit(amount, n):
    parts = [p.amount for p in m.allocate(amount, n)]
    assert sum(parts) == amount.amount
    assert max(parts) - min(parts) <= 1
    assert parts == sorted(parts, key=abs, reverse=True)  # earlier parts take the extra


def test_allocation_examples_and_refusals():
    assert [p.amount for p in m.allocate(Money(100, "USD"), 3)] == [34, 33, 33]
    assert [p.amount for p in m.allocate(Money(5, "USD"), [1, 1, 2])] == [1, 1, 3]
    assert [p.amount for p in m.allocate(Money(-100, "USD"), [1, 2])] == [-33, -67]
    for weights in (0, -1, [], [0, 0], [1, -1], [1.5], True):
        with pytest.raises(MoneyError):
            m.allocate(Money(100, "USD"), weights)  # type: ignore[arg-type]


# -- the wire --------------------------------------------------------------------------


@given(money())
def test_api_round_trip(value):
    data = value.to_api()
    assert data == {"amount": value.amount, "currency": value.currency}
    assert Money.from_api(data) == value
    assert Money.of(value.major(), value.currency) == value


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "12.34 USD",
        {"amount": 1},
        {"currency": "USD"},
        {"amount": 1.5, "currency": "USD"},
        {"amount": "150", "currency": "USD"},
        {"amount": True, "currency": "USD"},
        {"amount": 1, "currency": "usd"},
        {"amount": 1, "currency": "USD", "scale": 2},
        {"amount": 10**16, "currency": "USD"},
    ],
)
def test_api_shape_is_strict(data):
    with pytest.raises(MoneyError):
        Money.from_api(data)


# -- quantities and hours as strings ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("2.5", Decimal("2.5")), ("0", Decimal(0)), ("10", Decimal(10)), ("0.125", Decimal("0.125"))],
)
def test_hours_parse_exactly(text, value):
    assert m.parse_hours(text) == value
    assert m.HOURS.format(m.parse_hours(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        2.5,
        2,
        Decimal("2.5"),
        True,
        None,
        "",
        "2.5000",  # more than 3 decimals: refused, never rounded
        "1e3",
        "1E+3",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "-1",
        "+1",
        " 1",
        "1 ",
        ".5",
        "5.",
        "1,5",
        "３",  # a full-width digit, which Decimal() would accept
        "١",
        "100000",  # more than 5 digits of hours on one line
    ],
)
def test_hours_refuse_anything_but_plain_decimal_text(text):
    with pytest.raises(MoneyError):
        m.parse_hours(text)


def test_negative_quantities_only_where_allowed():
    signed = m.DecimalSpec(scale=2, allow_negative=True)
    assert signed.parse("-1.25") == Decimal("-1.25")
    with pytest.raises(MoneyError) as err:
        m.parse_quantity("-1")
    assert str(err.value) == "must not be negative"


def test_bounds_and_pattern():
    spec = m.DecimalSpec(scale=2, minimum=Decimal("0.25"), maximum=Decimal("24"))
    assert spec.parse("0.25") == Decimal("0.25")
    for bad in ("0.2", "24.01"):
        with pytest.raises(MoneyError):
            spec.parse(bad)
    assert spec.pattern == r"^[0-9]{1,9}(\.[0-9]{1,2})?$"
    assert m.DecimalSpec(scale=0, allow_negative=True).pattern == r"^-?[0-9]{1,9}$"


@given(quantities())
def test_quantity_round_trip(value):
    text = m.format_decimal(value)
    assert "E" not in text and not text.endswith(".")
    assert m.parse_quantity(text) == value
    assert m.format_decimal(m.parse_quantity(text)) == text


def test_format_is_canonical():
    assert m.format_decimal(Decimal("2.50")) == "2.5"
    assert m.format_decimal(Decimal("1E+1")) == "10"
    assert m.format_decimal(Decimal("-0.0")) == "0"
    assert m.format_decimal(Decimal("3")) == "3"
    with pytest.raises(MoneyError):
        m.format_decimal(2.5)  # type: ignore[arg-type]
