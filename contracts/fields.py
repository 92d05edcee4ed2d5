"""Marshmallow fields for money and exact decimals, so every contract reads them alike.

- :class:`MoneyField`: ``{"amount": <int minor units>, "currency": "USD"}`` on the wire,
  a :class:`kit.money.Money` in Python. Integers only (no floats, no numeric strings,
  no booleans), a currency from :data:`kit.money.CURRENCIES`, no other keys. In OpenAPI
  it is the ``Money`` object schema with the currency enum.
- :class:`DecimalString`: a quantity or hours as a plain decimal *string* (``"2.5"``) on
  the wire, an exact :class:`~decimal.Decimal` in Python, read by a
  :class:`kit.money.DecimalSpec` (max scale, sign, bounds); in OpenAPI a string with
  that spec's pattern.

The rules themselves are :mod:`kit.money`'s: a stdlib-only leaf module that imports
nothing from the project, so contracts may use it without making a cycle (the layering
test checks both halves of that).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate

from kit.money import CURRENCIES, HOURS, MAX_AMOUNT, QUANTITY, DecimalSpec, Money, MoneyError


class MoneySchema(Schema):
    """The wire shape of money (the field below nests it)."""

    amount = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=-MAX_AMOUNT, max=MAX_AMOUNT),
        metadata={"description": "Minor units (cents): 1234 is 12.34 USD; never a float"},
    )
    currency = fields.String(
        required=True,
        validate=validate.OneOf(CURRENCIES),
        metadata={"description": "ISO 4217 code"},
    )

    @post_load
    def _money(self, data: Mapping[str, Any], **_: Any) -> Money:
        try:
            return Money(data["amount"], data["currency"])
        except MoneyError as err:  # the validators above say the same; Money decides
            raise ValidationError(str(err)) from err


class MoneyField(fields.Nested):
    """Money as ``{"amount", "currency"}``; loads to and dumps from :class:`Money`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(MoneySchema, **kwargs)

    # marshmallow names the first parameter differently in Nested and Field: mypy cannot
    # match both, whichever name is used.
    def _serialize(self, nested_obj: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if nested_obj is None:
            return None
        if not isinstance(nested_obj, Money):
            raise TypeError(f"MoneyField dumps Money, not {type(nested_obj).__name__}")
        return nested_obj.to_api()


class DecimalString(fields.String):
    """An exact decimal that travels as a string, per ``spec`` (default: quantities)."""

    def __init__(self, spec: DecimalSpec = QUANTITY, **kwargs: Any) -> None:
        metadata = {
            "pattern": spec.pattern,
            "description": _describe(spec),
            "example": "2.5" if spec.scale else "2",
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)
        self.spec = spec

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str):
            # "2.5" only: a JSON number has already been through a float
            raise ValidationError('must be a string such as "2.5", not a number')
        try:
            return self.spec.parse(value)
        except MoneyError as err:
            raise ValidationError(str(err)) from err

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"DecimalString dumps a Decimal, not {type(value).__name__}")
        # What we send must be what we would accept: a value the spec refuses is a bug.
        return self.spec.format(self.spec.check(value))


class Hours(DecimalString):
    """Hours on a time line (:data:`kit.money.HOURS`: up to 3 decimals, not negative)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(HOURS, **kwargs)


def _describe(spec: DecimalSpec) -> str:
    parts = [f"An exact decimal as a string, at most {spec.scale} decimal places"]
    if not spec.allow_negative:
        parts.append("not negative")
    if spec.minimum is not None:
        parts.append(f"at least {spec.format(spec.minimum)}")
    if spec.maximum is not None:
        parts.append(f"at most {spec.format(spec.maximum)}")
    return ", ".join(parts) + "."
