"""The plumbing shared by every route: cursors, pages, If-Match, request bodies, errors."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import amqp.exceptions
import pytest
from kombu.exceptions import OperationalError as KombuOperationalError
from marshmallow import Schema, fields
from werkzeug.datastructures import Headers
from werkzeug.exceptions import MethodNotAllowed
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from kit.errors import ValidationFailed
from kit.pagination import CURSOR_PATTERN
from services.gateway.web import (
    MAX_JSON_BYTES,
    ROUTES,
    ApiError,
    Call,
    PageQuery,
    Route,
    decode_cursor,
    encode_cursor,
    error_response,
    expected_version,
    parse_if_match,
    parse_input,
    read_json,
)

ROW = str(uuid.UUID(int=7))


def call_with(body: dict | None = None, if_match: str | None = None) -> Call:
    headers = Headers({"If-Match": if_match} if if_match is not None else {})
    request = Request(EnvironBuilder(method="PATCH", headers=headers).get_environ())
    return Call(request=request, gw=None, path={}, query={}, body=body or {}, actor=None)


def test_cursor_round_trip() -> None:
    when = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    cursor = encode_cursor(when, ROW)
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == (when, ROW)


@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "!!!!",
        "WzEsMl0",  # garbage, bad base64, [1, 2]
        "1-" + "0" * 31,  # an id one digit short
        "1" * 17 + "-" + "0" * 32,  # past the year 9999
        "1-" + "0" * 31 + "A",  # upper-case hex: not what the server writes
        "1-" + "0" * 32 + "\n",
    ],
)
def test_malformed_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        decode_cursor(cursor)
    assert "cursor" in (err.value.errors or {})


def test_page_query() -> None:
    assert parse_input(PageQuery, {}, "query") == {"limit": 50}
    cursor = encode_cursor(datetime(2025, 1, 1, tzinfo=UTC), ROW)
    assert parse_input(PageQuery, {"limit": "200", "cursor": cursor}, "query") == {
        "limit": 200,
        "cursor": cursor,
    }
    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"cursor": ""}, {"other": "1"}):
        with pytest.raises(ApiError) as err:
            parse_input(PageQuery, bad, "query")
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


# The one If-Match parser every route uses (directory, settings, quote requests).
@pytest.mark.parametrize(
    ("header", "version"),
    [
        ("3", 3),
        ('"3"', 3),
        ('W/"3"', 3),
        ("*", None),
        (' "5" ', 5),
        ("", None),
        ("  ", None),
        (None, None),
        ('"123456789"', 123456789),
    ],
)
def test_if_match_names_a_version(header: str | None, version: int | None) -> None:
    assert parse_if_match(header) == version


@pytest.mark.parametrize(
    "header",
    [
        '"abc"',
        '"0"',
        "0",
        '"1", "2"',
        "*, 3",
        '"3',
        '3"',
        'W/""',
        'W/"0"',
        '"-1"',
        '"1.5"',
        'w/"3"',
        'W/ "3"',
        '""3""',
        '"1234567890"',
        "³",
        '"³"',
    ],
)
def test_malformed_if_match_is_a_422_naming_the_header(header: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_if_match(header)
    assert err.value.code == "validation_failed"
    assert "If-Match" in (err.value.errors or {})


# --- request bodies and error responses (found by tests/test_fuzz_openapi.py) -------------
def json_request(data: bytes, **headers: str) -> Request:
    builder = EnvironBuilder(
        method="POST", data=data, headers=Headers({"Content-Type": "application/json", **headers})
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
        headers=Headers({"Content-Type": "application/json", "Transfer-Encoding": "chunked"}),
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    with pytest.raises(ApiError) as err:
        read_json(Request(environ))
    assert err.value.code == "malformed_request"


def test_nul_characters_are_a_validation_error_naming_the_field() -> None:
    with pytest.raises(ApiError) as err:
        parse_input(Named, {"name": "ab\x00c"}, "query")
    assert err.value.code == "validation_failed"
    assert err.value.errors == {"name": ["must not contain control characters"]}


class Named(Schema):
    name = fields.String()


def route_for(endpoint: str) -> Route:
    from services.gateway import api_auth, api_directory  # noqa: F401 - register their routes

    return next(r for r in ROUTES if r.endpoint == endpoint)


# Issue 6 item 9: each of these answered 500 (the surrogate reached psycopg2's encoder).
# The bodies are raw JSON, with the escape a client sends: \\ud800 is a lone surrogate.
SURROGATE_BODIES = [
    (
        "POST /auth/token",
        rb'{"tenant": "acme", "email": "a\ud800@x.test", "password": "p"}',
        "email",
    ),
    ("POST /auth/refresh", rb'{"refresh_token": "abcdefghij\udc00"}', "refresh_token"),
    ("PATCH /me", rb'{"first_name": "Ann\ud800", "last_name": "Lee"}', "first_name"),
    ("POST /customers", rb'{"name": "Acme \udfff Ltd"}', "name"),
]


@pytest.mark.parametrize("endpoint, raw, field", SURROGATE_BODIES)
def test_a_lone_surrogate_in_a_json_string_is_422_naming_the_field(
    endpoint: str, raw: bytes, field: str
) -> None:
    loaded = read_json(json_request(raw))
    with pytest.raises(ApiError) as err:
        parse_input(route_for(endpoint).body, loaded, "request body")  # type: ignore[arg-type]
    assert err.value.code == "validation_failed"
    assert err.value.errors == {
        field: ["must be valid Unicode (it contains an unpaired surrogate)"]
    }
    response = error_response(err.value)
    assert response.status_code == 422 and response.mimetype == "application/problem+json"


# Issue 6 item 10: a name is one line of plain text.
@pytest.mark.parametrize(
    "name, message",
    [
        ("Ann\r\nBcc: victim@example.com", "must be a single line"),
        ("Ann\nBcc: x", "must be a single line"),
        ("Ann\u202egpj.exe", "must not contain bidirectional control characters"),
        ("Ann\u2066x\u2069", "must not contain bidirectional control characters"),
        ("Ann\tLee", "must not contain control characters"),
        ("Ann\x85Lee", "must not contain control characters"),
        ("Ann\x1bLee", "must not contain control characters"),
    ],
)
def test_names_with_line_breaks_controls_or_bidi_overrides_are_422(name: str, message: str) -> None:
    for endpoint, body in [
        ("PATCH /me", {"first_name": name, "last_name": "Lee"}),
        ("POST /customers", {"name": name}),
    ]:
        with pytest.raises(ApiError) as err:
            parse_input(route_for(endpoint).body, body, "request body")  # type: ignore[arg-type]
        field = next(iter(body))
        assert err.value.errors == {field: [message]}, endpoint


def test_multi_line_fields_keep_line_breaks_normalised() -> None:
    from contracts.quotes import CommentRequest

    loaded = parse_input(CommentRequest, {"body": "Line one\r\n\tLine two\n"}, "request body")
    assert loaded["body"] == "Line one\n\tLine two\n"
    with pytest.raises(ApiError) as err:
        parse_input(CommentRequest, {"body": "a\rb \u202e"}, "request body")
    assert err.value.errors == {"body": ["must use \\n (LF) for line breaks"]}


def test_method_not_allowed_names_the_allowed_methods() -> None:
    response = error_response(MethodNotAllowed(valid_methods=["PATCH", "GET", "HEAD"]))
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
    assert response.headers["Allow"] == "GET, HEAD, PATCH"


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(lambda: _connect_refused(), id="database-connect-refused"),
        pytest.param(lambda: KombuOperationalError("[Errno 111] Connection refused"), id="broker"),
        pytest.param(lambda: amqp.exceptions.ConnectionForced("shutdown"), id="broker-closed"),
    ],
)
def test_database_and_broker_failures_are_503_with_retry_after(exc: Any) -> None:
    response = error_response(exc())
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.mimetype == "application/problem+json"


def _connect_refused() -> BaseException:
    from sqlalchemy import create_engine

    from tests.support import free_port

    engine = create_engine(f"postgresql+psycopg2://x@127.0.0.1:{free_port()}/x")
    try:
        with engine.connect():
            pass
    except Exception as err:  # noqa: BLE001 - the error is what we want
        return err
    finally:
        engine.dispose()
    raise AssertionError("nothing listens on a free port")
