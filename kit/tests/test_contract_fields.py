"""contracts.fields: money and exact decimals through marshmallow and OpenAPI.

Here rather than under contracts/: the contracts folder holds pure schemas only (the
layering test reads every file there)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from contracts.fields import DecimalString, Hours, MoneyField, MoneySchema
from kit.money import CURRENCIES, MAX_AMOUNT, DecimalSpec, Money


class Line(Schema):
    unit_price = MoneyField(required=True)
    hours = Hours()
    quantity = DecimalString()
    discount = MoneyField(allow_none=True)


LINE = Line()


def test_loads_to_money_and_decimals_and_dumps_back():
    data = {
        "unit_price": {"amount": 1234, "currency": "USD"},
        "hours": "2.50",
        "quantity": "3",
        "discount": None,
    }
    loaded = LINE.load(data)
    assert loaded == {
        "unit_price": Money(1234, "USD"),
        "hours": Decimal("2.5"),
        "quantity": Decimal(3),
        "discount": None,
    }
    assert LINE.dump(loaded) == {**data, "hours": "2.5"}


@given(
    st.integers(-MAX_AMOUNT, MAX_AMOUNT),
    st.sampled_from(CURRENCIES),
    st.integers(0, 10**5 - 1),
    st.integers(0, 3),
)
def test_round_trip(amount, currency, units, places):
    hours = Decimal(units).scaleb(-places)
    value = {"unit_price": Money(amount, currency), "hours": hours}
    dumped = LINE.dump(value)
    assert dumped["unit_price"] == {"amount": amount, "currency": currency}
    assert isinstance(dumped["hours"], str)
    assert LINE.load(dumped) == value


@pytest.mark.parametrize(
    ("price", "where"),
    [
        ({"amount": 1.5, "currency": "USD"}, "amount"),
        ({"amount": 12.0, "currency": "USD"}, "amount"),
        ({"amount": "1234", "currency": "USD"}, "amount"),
        ({"amount": True, "currency": "USD"}, "amount"),
        ({"amount": MAX_AMOUNT + 1, "currency": "USD"}, "amount"),
        ({"amount": 1, "currency": "usd"}, "currency"),
        ({"amount": 1, "currency": "ZZZ"}, "currency"),
        ({"currency": "USD"}, "amount"),
        ({"amount": 1}, "currency"),
        ({"amount": 1, "currency": "USD", "scale": 2}, "scale"),
    ],
)
def test_money_on_the_wire_is_strict(price, where):
    with pytest.raises(ValidationError) as err:
        LINE.load({"unit_price": price})
    messages = err.value.normalized_messages()
    assert where in messages["unit_price"]


@pytest.mark.parametrize("price", [1234, "12.34 USD", [1234, "USD"], None])
def test_money_must_be_the_object(price):
    with pytest.raises(ValidationError) as err:
        LINE.load({"unit_price": price})
    assert "unit_price" in err.value.messages


@pytest.mark.parametrize(
    "hours", [2.5, 2, True, "NaN", "1e3", "-1", "2.5000", " 2", "３", "100000", ""]
)
def test_decimals_travel_as_plain_strings(hours):
    with pytest.raises(ValidationError) as err:
        LINE.load({"unit_price": {"amount": 1, "currency": "USD"}, "hours": hours})
    assert list(err.value.messages) == ["hours"]


def test_a_spec_sets_sign_scale_and_bounds():
    class Adjust(Schema):
        delta = DecimalString(DecimalSpec(scale=1, allow_negative=True, maximum=Decimal(10)))

    schema = Adjust()
    assert schema.load({"delta": "-2.5"}) == {"delta": Decimal("-2.5")}
    for bad in ("2.55", "10.1"):
        with pytest.raises(ValidationError):
            schema.load({"delta": bad})


def test_dumping_the_wrong_type_is_a_bug():
    with pytest.raises(TypeError):
        LINE.dump({"unit_price": 1234})
    with pytest.raises(TypeError):
        LINE.dump({"unit_price": Money(1, "USD"), "hours": 2.5})
    with pytest.raises(ValueError):  # more places than the wire carries: round it first
        LINE.dump({"unit_price": Money(1, "USD"), "hours": Decimal("2.3333")})


def test_money_schema_decides_with_kit_money():
    assert MoneySchema().load({"amount": -5, "currency": "BHD"}) == Money(-5, "BHD")


def test_openapi_describes_what_the_fields_accept():
    spec = APISpec(title="t", version="1", openapi_version="3.1.0", plugins=[MarshmallowPlugin()])
    spec.components.schema("Line", schema=Line)
    document = spec.to_dict()["components"]["schemas"]
    money = document["Money"]
    assert money["properties"]["amount"]["type"] == "integer"
    assert money["properties"]["amount"]["maximum"] == MAX_AMOUNT
    assert money["properties"]["currency"]["enum"] == list(CURRENCIES)
    assert sorted(money["required"]) == ["amount", "currency"]
    hours = document["Line"]["properties"]["hours"]
    assert hours["type"] == "string"
    pattern = re.compile(hours["pattern"])
    assert pattern.match("2.5") and pattern.match("0.125")
    for bad in ("2.5000", "1e3", "-1", "NaN", ".5"):
        assert not pattern.match(bad)
    assert "not negative" in hours["description"]
