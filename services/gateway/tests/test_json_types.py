"""JSON bodies are typed as the OpenAPI document says (web.json_type_errors): a boolean
field takes true/false only and a number field numbers only, wherever the field sits
(nested schemas, lists, dict values); marshmallow alone would read "yes", 1 or "5"."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema, fields

from services.gateway.web import ApiError, json_type_errors, parse_input


class Line(Schema):
    qty = fields.Integer()
    taxable = fields.Boolean()


class Order(Schema):
    urgent = fields.Boolean()
    total = fields.Float()
    count = fields.Integer(data_key="n")
    note = fields.String()
    lines = fields.List(fields.Nested(Line))
    first = fields.Nested(Line, allow_none=True)
    flags = fields.Dict(keys=fields.String(), values=fields.Boolean())
    scores = fields.List(fields.Integer())


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"urgent": True, "total": 1.5, "n": 3, "note": "5"},
        {"total": 2, "n": 0, "urgent": False},  # an integer is a number
        {"lines": [{"qty": 1, "taxable": False}], "first": None, "flags": {"a": True}},
        {"urgent": None, "scores": [1, 2]},  # null is for the schema to judge (allow_none)
        {"unknown": "yes"},  # not a declared field: the schema refuses it, not this
    ],
)
def test_values_of_the_declared_json_type_pass(body: dict[str, Any]) -> None:
    assert json_type_errors(Order(), body) == {}


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ({"urgent": "yes"}, "urgent", "Not a valid boolean."),
        ({"urgent": 1}, "urgent", "Not a valid boolean."),
        ({"urgent": "true"}, "urgent", "Not a valid boolean."),
        ({"total": "5"}, "total", "Not a valid number."),
        ({"total": True}, "total", "Not a valid number."),  # bool is an int in Python
        ({"n": "3"}, "n", "Not a valid number."),  # named by its data_key
        ({"lines": [{"qty": 1}, {"qty": "2"}]}, "lines.1.qty", "Not a valid number."),
        ({"first": {"taxable": "no"}}, "first.taxable", "Not a valid boolean."),
        ({"flags": {"a": "on"}}, "flags.a", "Not a valid boolean."),
        ({"scores": [1, "2"]}, "scores.1", "Not a valid number."),
    ],
)
def test_values_of_another_json_type_are_named(body: dict[str, Any], where: str, message: str):
    assert json_type_errors(Order(), body) == {where: [message]}


def test_load_refuses_them_as_a_422_before_marshmallow_coerces_them() -> None:
    with pytest.raises(ApiError) as err:
        parse_input(Order, {"urgent": "yes", "total": "5"}, "request body")
    assert err.value.code == "validation_failed"
    assert err.value.errors == {
        "urgent": ["Not a valid boolean."],
        "total": ["Not a valid number."],
    }


def test_query_strings_are_text_and_are_not_checked() -> None:
    assert parse_input(Order, {"urgent": "true", "n": "3"}, "query") == {"urgent": True, "count": 3}
