"""Idempotency keys: the pure rules (key format, request fingerprint, what is kept)."""

from __future__ import annotations

import pytest

from kit.config import ConfigError, read_settings
from services.gateway.idempotency import canonical_body, fingerprint, kept, parse_key
from services.gateway.web import ApiError


def test_json_key_order_and_whitespace_do_not_change_the_fingerprint() -> None:
    a = b'{"description": "Hoses", "po_number": "PO-1", "nested": {"b": 1, "a": [1, 2]}}'
    b = b'{\n  "nested":{"a":[1,2],"b":1},"po_number":"PO-1",\n "description":"Hoses"}'
    assert canonical_body(a) == canonical_body(b)
    assert fingerprint("POST", "/api/v1/quote-requests", [], a) == fingerprint(
        "post", "/api/v1/quote-requests", [], b
    )


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (("POST", "/api/v1/quote-requests", [], b'{"description": "Hose"}'), "body value"),
        (("POST", "/api/v1/quote-requests", [], b'{"description": ["Hoses"]}'), "body type"),
        (("PATCH", "/api/v1/quote-requests", [], b'{"description": "Hoses"}'), "method"),
        (("POST", "/api/v1/quote-request", [], b'{"description": "Hoses"}'), "path"),
        (("POST", "/api/v1/quote-requests", [("a", "1")], b'{"description": "Hoses"}'), "query"),
        (("POST", "/api/v1/quote-requests", [], b""), "no body"),
    ],
)
def test_any_other_request_has_another_fingerprint(other: tuple, why: str) -> None:
    first = fingerprint("POST", "/api/v1/quote-requests", [], b'{"description": "Hoses"}')
    assert fingerprint(*other) != first, why


def test_unicode_escapes_and_literal_text_are_the_same_body() -> None:
    assert canonical_body(b'{"d": "Stra\\u00dfe"}') == canonical_body('{"d":"Straße"}'.encode())


def test_query_order_does_not_matter_but_values_do() -> None:
    one = fingerprint("POST", "/p", [("a", "1"), ("b", "2")], b"")
    assert one == fingerprint("POST", "/p", [("b", "2"), ("a", "1")], b"")
    assert one != fingerprint("POST", "/p", [("a", "2"), ("b", "1")], b"")


def test_uploaded_bytes_are_part_of_the_fingerprint() -> None:
    def upload(data: bytes, name: str = "a.pdf") -> str:
        return fingerprint("POST", "/p", [], b"", [("file", name, data), ("kind", "", b"x")])

    assert upload(b"%PDF-1 one") == upload(b"%PDF-1 one")
    assert upload(b"%PDF-1 one") != upload(b"%PDF-1 two")
    assert upload(b"%PDF-1 one") != upload(b"%PDF-1 one", "b.pdf")


def test_fields_cannot_run_into_each_other() -> None:
    # Length-prefixed parts: moving a character from the path to the body is another request.
    assert fingerprint("POST", "/ab", [], b"c") != fingerprint("POST", "/a", [], b"bc")


def test_a_body_that_is_not_json_is_taken_byte_for_byte() -> None:
    assert canonical_body(b"not json ") == b"not json "
    assert canonical_body(b"") == b""


@pytest.mark.parametrize(
    "key", ["a", "0f8fa0b4-57f1-4d7a-9a3f-1e6a5f0c2b11", "!~" * 100, "x" * 255]
)
def test_keys_are_visible_ascii(key: str) -> None:
    assert parse_key(key) == key


@pytest.mark.parametrize("key", ["", "two words", "x" * 256, "tab\there", "caf\u00e9", "\x7f"])
def test_anything_else_is_422(key: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_key(key)
    assert raised.value.code == "validation_failed"
    assert "Idempotency-Key" in (raised.value.errors or {})


def test_no_header_is_no_key() -> None:
    assert parse_key(None) is None


@pytest.mark.parametrize(
    ("status", "stored"),
    [(200, True), (201, True), (202, True), (404, True), (409, True), (422, True),
     (429, False), (500, False), (503, False)],
)  # fmt: skip
def test_refusals_are_kept_transient_failures_released(status: int, stored: bool) -> None:
    assert kept(status) is stored


def test_answers_are_kept_24_hours_unless_configured() -> None:
    assert read_settings({}).idempotency_ttl_hours == 24
    assert read_settings({"IDEMPOTENCY_TTL_HOURS": "0.5"}).idempotency_ttl_hours == 0.5
    for bad in ("0", "-1", "nan", "a day"):
        with pytest.raises(ConfigError, match="IDEMPOTENCY_TTL_HOURS|malformed"):
            read_settings({"IDEMPOTENCY_TTL_HOURS": bad})
