"""The plumbing shared by every route: cursors, pages, If-Match, request bodies, errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from kit.errors import ValidationFailed
from services.gateway.web import (
    MAX_JSON_BYTES,
    ApiError,
    Call,
    PageQuery,
    decode_cursor,
    encode_cursor,
    error_response,
    expected_version,
    load,
    nul_fields,
    read_json,
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


# --- request bodies and error responses (found by tests/test_fuzz_openapi.py) -------------
def json_request(data: bytes, **headers: str) -> Request:
    builder = EnvironBuilder(
        method="POST", data=data, headers={"Content-Type": "application/json", **headers}
    )
    return Request(builder.get_environ())


def test_json_nested_deeper_than_the_parser_is_malformed_not_a_crash() -> None:
    with pytest.raises(ApiError) as err:
        read_json(json_request(b"[" * 100_000))
    assert err.value.code == "malformed_request"


def test_json_over_one_mebibyte_is_too_large() -> None:
    body = b'{"name": "' + b"a" * MAX_JSON_BYTES + b'"}'
    with pytest.raises(ApiError) as err:
        read_json(json_request(body))
    assert err.value.code == "payload_too_large"


def test_chunked_body_is_refused_rather_than_read_as_empty() -> None:
    environ = EnvironBuilder(
        method="PATCH",
        data=b'{"name": "x"}',
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    with pytest.raises(ApiError) as err:
        read_json(Request(environ))
    assert err.value.code == "malformed_request"


def test_nul_characters_are_a_validation_error_naming_the_field() -> None:
    assert nul_fields({"a": "ok", "b": ["x", "y\x00"], "c": {"d": "\x00"}, "e\x00": 1}) == [
        "b.1",
        "c.d",
        "e\\0",
    ]
    deep: object = "\x00"
    for _ in range(5000):  # deeper than Python recursion
        deep = [deep]
    assert nul_fields(deep) == ["0." * 4999 + "0"]
    with pytest.raises(ApiError) as err:
        load(PageQuery, {"cursor": "ab\x00c"}, "query")
    assert err.value.code == "validation_failed"
    assert err.value.errors == {"cursor": ["must not contain NUL characters"]}


def test_method_not_allowed_names_the_allowed_methods() -> None:
    response = error_response(MethodNotAllowed(valid_methods=["PATCH", "GET", "HEAD"]))
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert response.headers["Allow"] == "GET, HEAD, PATCH"
