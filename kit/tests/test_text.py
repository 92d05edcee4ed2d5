"""kit.text: what human text may contain, and the loaders that apply it to every string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from marshmallow import Schema, fields

from kit.errors import ValidationFailed
from kit.schemas import parse, text_errors
from kit.text import TextError, clean, problem

C0 = [chr(c) for c in range(0x20)]
C1 = [chr(c) for c in range(0x7F, 0xA0)]
BIDI = [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
SEPARATORS = ["\u2028", "\u2029"]
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
NEVER = st.sampled_from([*(c for c in C0 if c not in "\n\t"), *C1, *BIDI, *SEPARATORS]) | SURROGATES
LINE = ["\n", "\t"]  # allowed in multi-line text only
FORBIDDEN = set(C0) | set(C1) | set(BIDI) | set(SEPARATORS)

ok_chars = st.characters(exclude_categories=["Cs"], exclude_characters="".join(sorted(FORBIDDEN)))
ok_text = st.text(ok_chars, max_size=40)
multi_text = st.lists(st.one_of(ok_chars, st.sampled_from([*LINE, "\r\n"])), max_size=40).map(
    "".join
)


@given(ok_text)
def test_ordinary_text_is_kept_as_it_is(value: str) -> None:
    assert clean(value) == value
    assert clean(value, multiline=True) == value
    assert problem(value) is None


@given(ok_text, NEVER, ok_text)
def test_a_forbidden_character_anywhere_is_refused_in_both_modes(
    before: str, bad: str, after: str
) -> None:
    for multiline in (False, True):
        with pytest.raises(TextError):
            clean(before + bad + after, multiline=multiline)


@given(ok_text, st.sampled_from(["\n", "\t", "\r\n", "\r"]), ok_text)
def test_line_breaks_and_tabs_are_refused_in_single_line_text(
    before: str, bad: str, after: str
) -> None:
    assert problem(before + bad + after) is not None


@given(multi_text)
def test_multi_line_text_is_normalised_to_lf(value: str) -> None:
    cleaned = clean(value, multiline=True)
    assert cleaned == value.replace("\r\n", "\n")
    assert "\r" not in cleaned
    assert clean(cleaned, multiline=True) == cleaned  # idempotent


@given(ok_text, ok_text)
def test_a_lone_cr_is_refused_in_multi_line_text(before: str, after: str) -> None:
    value = before + "\r" + after
    if "\r\n" in value:  # it became a CRLF: that one is a line break
        return
    with pytest.raises(TextError, match="line breaks"):
        clean(value, multiline=True)


def test_messages_name_the_kind_of_character() -> None:
    assert problem("a\ud800") == "must be valid Unicode (it contains an unpaired surrogate)"
    assert problem("Ann\r\nBcc: x") == "must be a single line"
    assert problem("a\u2028b") == "must be a single line"
    assert problem("a\u2028b", multiline=True) == "must use \\n (LF) for line breaks"
    assert problem("a\u202eb") == "must not contain bidirectional control characters"
    assert problem("a\x00b", multiline=True) == "must not contain control characters"
    # right-to-left script and its ordinary marks are text, not controls
    assert problem("שלום \u200f עולם") is None


class Inner(Schema):
    title = fields.String()
    notes = fields.String(metadata={"multiline": True})


class Outer(Schema):
    name = fields.String(data_key="displayName")
    items = fields.List(fields.Nested(Inner))
    tags = fields.List(fields.String())
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    extra = fields.Raw()


def test_text_errors_walk_nested_lists_dicts_and_raw_values() -> None:
    schema = Outer()
    loaded = schema.load(
        {
            "displayName": "A\nB",
            "items": [{"title": "ok", "notes": "one\r\ntwo"}, {"title": "x\u202e"}],
            "tags": ["fine", "bad\t"],
            "labels": {"k\n": "v", "k": "v\x00"},
            "extra": {"deep": [["ok\nfine", "nul\x00"]]},
        }
    )
    assert text_errors(schema, loaded) == {
        "displayName": ["must be a single line"],
        "extra.deep.0.1": ["must not contain control characters"],
        "items.1.title": ["must not contain bidirectional control characters"],
        "labels.k": ["must not contain control characters"],
        "labels.k\n": ["key must be a single line"],
        "tags.1": ["must not contain control characters"],
    }
    assert loaded["items"][0]["notes"] == "one\ntwo"  # normalised in place


def test_text_errors_walk_deeper_than_python_recursion() -> None:
    deep: object = "\x00"
    for _ in range(5000):
        deep = [deep]
    schema = Outer()
    assert text_errors(schema, {"extra": deep}) == {
        "extra" + ".0" * 5000: ["must not contain control characters"]
    }


def test_rpc_payloads_are_checked_by_the_same_loader() -> None:
    with pytest.raises(ValidationFailed) as err:
        parse(Outer, {"displayName": "Ann\u202e"})
    assert err.value.errors == {
        "displayName": ["must not contain bidirectional control characters"]
    }
    assert parse(Inner, {"notes": "a\r\nb"}) == {"notes": "a\nb"}
