"""Money and exact quantities: integer minor units with a currency, one rounding rule.

Pure and a leaf: the standard library only, no other kit module, so domains, contracts
and the kit can all import it.

- :class:`Money` is an ``int`` of minor units (cents, yen, fils) and an ISO 4217 code.
  Floats never enter: every constructor refuses them. Adding, subtracting or ordering two
  currencies is :class:`CurrencyMismatch` (equality is plain value equality, so that
  ``USD 1 != EUR 1`` and money can live in sets and dict keys).
- On the wire money is ``{"amount": <int minor units>, "currency": "USD"}``
  (:meth:`Money.to_api` / :meth:`Money.from_api`). Amounts stay within ``MAX_AMOUNT``
  (10**15 minor units), below 2**53 so that a JavaScript client reads them exactly and
  far inside PostgreSQL's ``bigint``.
- Quantities and hours are exact :class:`~decimal.Decimal` values that travel as strings
  (``"2.5"``), parsed and written by a :class:`DecimalSpec` with a maximum scale.

The rounding rule, the only one: **half-up, away from zero** (``ROUND_HALF_UP``), applied
once per computed amount (a line total, a tax). Why not half-even: the figures are read by
customers and shop staff who check a line with a calculator, and tax authorities and
invoice conventions round half a cent up; half-even's advantage (no drift over millions of
rounded values) does not arise when each document rounds a handful of values once. Away
from zero makes the rule symmetric: a credit note is exactly the negation of its invoice
(``tax(-a) == -tax(a)``). Splitting an amount never rounds at all: :func:`allocate`
hands out the remainder by largest remainder, so the parts always add up to the whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

_TWO_DIGITS = (
    "AED", "AUD", "BRL", "CAD", "CHF", "CNY", "COP", "CZK", "DKK", "EUR", "GBP",
    "HKD", "HUF", "ILS", "INR", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "QAR",
    "RON", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD", "ZAR",
)  # fmt: skip
# Minor-unit exponent per ISO 4217 code: a deliberate, small table of currencies shops
# invoice in. A code missing here is refused loudly rather than guessed at 2.
EXPONENTS: Mapping[str, int] = MappingProxyType(
    {
        # 0: no minor unit
        "CLP": 0,
        "ISK": 0,
        "JPY": 0,
        "KRW": 0,
        "VND": 0,
        # 3: thousandths
        "BHD": 3,
        "JOD": 3,
        "KWD": 3,
        "OMR": 3,
        "TND": 3,
        # 2: hundredths
        **dict.fromkeys(_TWO_DIGITS, 2),
    }
)
CURRENCIES: tuple[str, ...] = tuple(sorted(EXPONENTS))

MAX_AMOUNT = 10**15  # |minor units|; see the module docstring
MAX_TAX_BP = 10_000  # 100 %: a rate in basis points is 0..10 000 (825 is 8.25 %)
_BP = 10_000


class MoneyError(ValueError):
    """Money or a quantity that cannot be: a programming error inside a domain, a 422
    when it comes from a request (``contracts.fields`` turns it into one)."""


class UnknownCurrency(MoneyError):
    pass


class CurrencyMismatch(MoneyError):
    pass


def exponent(currency: object) -> int:
    """Minor-unit digits of ``currency`` (USD 2, JPY 0, BHD 3)."""
    if not isinstance(currency, str) or currency not in EXPONENTS:
        raise UnknownCurrency(
            f"unknown currency {currency!r}: one of {', '.join(CURRENCIES)} (ISO 4217)"
        )
    return EXPONENTS[currency]


def _int(value: object, what: str) -> int:
    # bool is an int subclass: True is not one cent.
    if isinstance(value, bool) or not isinstance(value, int):
        raise MoneyError(f"{what} must be an integer, not {type(value).__name__}")
    return value


def round_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half-up, away from zero: THE rounding rule."""
    if denominator <= 0:
        raise MoneyError("the divisor must be positive")
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if numerator >= 0 else -quotient


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units of one currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        _int(self.amount, "amount")
        exponent(self.currency)
        if abs(self.amount) > MAX_AMOUNT:
            raise MoneyError(f"amount must be within ±{MAX_AMOUNT} minor units")

    # -- construction and the wire --------------------------------------------------

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def of(cls, major: str, currency: str) -> Money:
        """``Money.of("12.34", "USD")``: major units as an exact decimal string with no
        more decimals than the currency has (never a float)."""
        digits = exponent(currency)
        spec = DecimalSpec(scale=digits, max_digits=16, allow_negative=True)
        value = spec.parse(major)
        return cls(int(value.scaleb(digits)), currency)

    @classmethod
    def from_api(cls, data: object) -> Money:
        """Parse ``{"amount": 1234, "currency": "USD"}``; nothing else is accepted."""
        if not isinstance(data, Mapping):
            raise MoneyError("money must be an object with amount and currency")
        extra = set(data) - {"amount", "currency"}
        if extra:
            raise MoneyError(f"unknown money fields: {', '.join(sorted(map(str, extra)))}")
        if "amount" not in data or "currency" not in data:
            raise MoneyError("money needs both amount and currency")
        return cls(data["amount"], data["currency"])

    def to_api(self) -> dict[str, Any]:
        return {"amount": self.amount, "currency": self.currency}

    def major(self) -> str:
        """The amount in major units as exact text: ``"12.34"``, ``"-0.05"``, ``"1200"``."""
        return format(Decimal(self.amount).scaleb(-exponent(self.currency)), "f")

    def __str__(self) -> str:
        return f"{self.major()} {self.currency}"

    # -- arithmetic -----------------------------------------------------------------

    def _same(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount + self._same(other).amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount - self._same(other).amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount < self._same(other).amount

    def __le__(self, other: Money) -> bool:
        return self.amount <= self._same(other).amount

    def __gt__(self, other: Money) -> bool:
        return self.amount > self._same(other).amount

    def __ge__(self, other: Money) -> bool:
        return self.amount >= self._same(other).amount

    def __mul__(self, other: object) -> Money:
        raise TypeError("multiply money with .times(Decimal quantity) (exact, rounded once)")

    __rmul__ = __mul__

    def times(self, quantity: Decimal) -> Money:
        """``self × quantity`` rounded once by the rule (a unit price times hours)."""
        numerator, denominator = _ratio(quantity)
        return Money(round_div(self.amount * numerator, denominator), self.currency)


def _ratio(quantity: object) -> tuple[int, int]:
    """An exact finite Decimal as ``(numerator, 10**k)``; floats are refused."""
    if not isinstance(quantity, Decimal):
        raise MoneyError(f"a quantity must be a Decimal, not {type(quantity).__name__}")
    if not quantity.is_finite():
        raise MoneyError("a quantity must be a finite number")
    sign, digits, exp = quantity.as_tuple()
    assert isinstance(exp, int)  # finite, checked above
    if abs(exp) > _MAX_EXPONENT or len(digits) > _MAX_EXPONENT:
        raise MoneyError("a quantity must be a plain number of sane size")
    coefficient = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exp >= 0:
        return coefficient * 10**exp, 1
    return coefficient, 10**-exp


_MAX_EXPONENT = 30  # 1e30 is beyond any price or quantity; larger is an attack or a bug


def tax(amount: Money, bp: int) -> Money:
    """Tax at ``bp`` basis points (825 = 8.25 %), rounded once by the rule."""
    rate = _int(bp, "a tax rate")
    if not 0 <= rate <= MAX_TAX_BP:
        raise MoneyError(f"a tax rate must be 0..{MAX_TAX_BP} basis points")
    return Money(round_div(amount.amount * rate, _BP), amount.currency)


def line_total(unit_price: Money, quantity: Decimal) -> Money:
    """A line: unit price × quantity (or hourly rate × hours), rounded once."""
    return unit_price.times(quantity)


def total(amounts: Iterable[Money], currency: str) -> Money:
    """The exact sum; ``currency`` names the result of an empty sum and is checked
    against every term. Only the result must be within ``MAX_AMOUNT``, so the sum does
    not depend on the order of the terms."""
    exponent(currency)
    whole = 0
    for amount in amounts:
        if not isinstance(amount, Money):
            raise TypeError(f"cannot add {type(amount).__name__} to money")
        if amount.currency != currency:
            raise CurrencyMismatch(f"cannot add {amount.currency} to a {currency} total")
        whole += amount.amount
    return Money(whole, currency)


@dataclass(frozen=True)
class Totals:
    subtotal: Money
    tax: Money
    total: Money

    def to_api(self) -> dict[str, Any]:
        return {k: getattr(self, k).to_api() for k in ("subtotal", "tax", "total")}


def totals(lines: Iterable[Money], currency: str, tax_bp: int) -> Totals:
    """Subtotal of the lines, tax on the subtotal (one rounding per document, not per
    line, so the tax is the rate of what the customer sees), and their sum."""
    subtotal = total(lines, currency)
    levy = tax(subtotal, tax_bp)
    return Totals(subtotal, levy, subtotal + levy)


def allocate(amount: Money, weights: Sequence[int] | int) -> list[Money]:
    """Split ``amount`` by integer ``weights`` (or into that many equal parts) by the
    largest-remainder method: the parts add up to ``amount`` exactly, each is within one
    minor unit of its exact share, earlier parts win ties, a negative amount splits as
    the negation of its positive."""
    if isinstance(weights, int):
        if _int(weights, "the number of parts") < 1:
            raise MoneyError("allocate over at least one part")
        shares = [1] * weights
    else:
        shares = [_int(w, "a weight") for w in weights]
    if not shares or any(w < 0 for w in shares) or sum(shares) == 0:
        raise MoneyError("weights must be non-negative and not all zero")
    whole, sign = abs(amount.amount), (-1 if amount.amount < 0 else 1)
    weight_sum = sum(shares)
    floors = [whole * w // weight_sum for w in shares]
    remainders = [whole * w % weight_sum for w in shares]
    leftover = whole - sum(floors)
    # The ``leftover`` parts with the largest remainders get one more unit each.
    for index in sorted(range(len(shares)), key=lambda i: (-remainders[i], i))[:leftover]:
        floors[index] += 1
    return [Money(sign * part, amount.currency) for part in floors]


# -- exact decimals as strings ---------------------------------------------------------


@dataclass(frozen=True)
class DecimalSpec:
    """How a quantity travels: a plain decimal string with at most ``scale`` decimals
    and ``max_digits`` before the point, within ``[minimum, maximum]``.

    Only ASCII ``[-]digits[.digits]`` is read: no floats, exponents, ``NaN``,
    ``Infinity``, spaces, ``+`` or non-ASCII digits (``Decimal`` itself would accept
    ``"1e999999"`` and ``"３"``). More decimals than ``scale`` are refused, not rounded:
    a rounded quantity would change a price silently.
    """

    scale: int = 3
    max_digits: int = 9
    allow_negative: bool = False
    minimum: Decimal | None = None
    maximum: Decimal | None = None

    @property
    def pattern(self) -> str:
        """The same grammar as a regular expression (for JSON Schema)."""
        sign = "-?" if self.allow_negative else ""
        fraction = rf"(\.[0-9]{{1,{self.scale}}})?" if self.scale else ""
        return rf"^{sign}[0-9]{{1,{self.max_digits}}}{fraction}$"

    def parse(self, text: object) -> Decimal:
        if isinstance(text, float | Decimal | int) and not isinstance(text, bool):
            raise MoneyError(f'must be a decimal string such as "2.5", not a {type(text).__name__}')
        if not isinstance(text, str):
            raise MoneyError("must be a decimal string")
        if text.startswith("-") and not self.allow_negative:
            raise MoneyError("must not be negative")
        if not re.fullmatch(self.pattern, text, flags=re.ASCII):
            raise MoneyError(self._grammar())
        return self.check(Decimal(text))

    def check(self, value: Decimal) -> Decimal:
        """Range and scale rules for a Decimal already in hand."""
        numerator, denominator = _ratio(value)
        if denominator > 10**self.scale and numerator * 10**self.scale % denominator:
            raise MoneyError(f"at most {self.scale} decimal places")
        if value < 0 and not self.allow_negative:
            raise MoneyError("must not be negative")
        if abs(value) >= Decimal(10) ** self.max_digits:
            raise MoneyError(f"at most {self.max_digits} digits before the point")
        if self.minimum is not None and value < self.minimum:
            raise MoneyError(f"must be at least {self.format(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise MoneyError(f"must be at most {self.format(self.maximum)}")
        return value

    def format(self, value: Decimal) -> str:
        """Canonical text: no exponent, no trailing zeros after the point (``"2.5"``)."""
        _ratio(value)  # a finite Decimal of sane size, never a float
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text

    def _grammar(self) -> str:
        sign = "an optional minus, " if self.allow_negative else ""
        decimals = f", and at most {self.scale} decimals" if self.scale else ", no decimals"
        return (
            f"must be a plain decimal string: {sign}at most {self.max_digits} digits"
            f'{decimals} (e.g. "2.5")'
        )


HOURS = DecimalSpec(scale=3, max_digits=5)  # up to 99 999.999 h on one line
QUANTITY = DecimalSpec(scale=3, max_digits=9)


def parse_hours(text: object) -> Decimal:
    return HOURS.parse(text)


def parse_quantity(text: object) -> Decimal:
    return QUANTITY.parse(text)


def format_decimal(value: Decimal) -> str:
    """A quantity or hours as the string it travels as."""
    return QUANTITY.format(value)
