"""The list and concurrency plumbing shared by every route: cursors, pages, If-Match."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from kit.errors import ValidationFailed
from services.gateway.web import (
    ApiError,
    Call,
    PageQuery,
    decode_cursor,
    encode_cursor,
    expected_version,
    load,
)

ROW = str(uuid.UUID(int=7))


def call_with(body: dict | None = None, if_match: str | None = None) -> Call:
    headers = {"If-Match": if_match} if if_match is not None else {}
    request = Request(EnvironBuilder(method="PATCH", headers=headers).get_environ())
    return Call(request=request, gw=None, path={}, query={}, body=body or {}, actor=None)


def test_cursor_round_trip() -> None:
    when = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    cursor = encode_cursor(when, ROW)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (when, ROW)


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        "WzEsMl0",  # garbage, bad base64, [1, 2]
        encode_cursor(datetime(2025, 1, 1, tzinfo=UTC), "not-a-uuid"),
        encode_cursor(datetime(2025, 1, 1), ROW),  # naive time
    ],
)
def test_malformed_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        decode_cursor(cursor)
    assert "cursor" in (err.value.errors or {})


def test_page_query() -> None:
    assert load(PageQuery, {}, "query") == {"limit": 50}
    assert load(PageQuery, {"limit": "200", "cursor": "abc"}, "query") == {
        "limit": 200,
        "cursor": "abc",
    }
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"cursor": ""}, {"other": "1"}):
        with pytest.raises(ApiError) as err:
            load(PageQuery, bad, "query")
        assert err.value.code == "validation_failed"


@pytest.mark.parametrize(
    "body, header, expected",
    [
        ({}, None, None),
        ({}, "*", None),
        ({}, "3", 3),
        ({}, '"3"', 3),
        ({}, 'W/"12"', 12),
        ({"version": 4}, '"3"', 4),  # the body wins
    ],
)
def test_expected_version(body: dict, header: str | None, expected: int | None) -> None:
    assert expected_version(call_with(body, header)) == expected


@pytest.mark.parametrize("header", ["abc", '"0"', "-1", "1.5", "³", "9" * 12])
def test_malformed_if_match(header: str) -> None:
    with pytest.raises(ApiError) as err:
        expected_version(call_with({}, header))
    assert err.value.code == "validation_failed"
