"""What human text may contain: one rule for every name, title, comment and password.

Pure (standard library only), so domains use it as well as the schema loaders.

*Single-line* text (names, emails, numbers, passwords, tokens, search terms) refuses
every character that can change how the text is laid out or read back:

- C0 controls (CR, LF and TAB included), DEL and C1 controls: a CR/LF in a name
  becomes a new header-like line in a plain-text email (``Bcc: ...``);
- bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069):
  they make ``exe.txt`` render as ``txt.exe`` and reorder what a reader sees;
- the line and paragraph separators U+2028/U+2029 (line breaks by another name);
- lone UTF-16 surrogates (``"\\ud800"`` in JSON): not Unicode at all, they cannot be
  encoded as UTF-8, so PostgreSQL, email and JSON writers fail on them.

*Multi-line* text (descriptions, comments, reasons, terms) also allows LF and TAB;
CRLF is normalised to LF (what clients send from a textarea), and everything else in
the list above, a lone CR included, is refused.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
_ALWAYS_BAD = "\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_CONTROLS + "\u2028\u2029\ud800-\udfff"
_SINGLE_LINE_BAD = re.compile(f"[{_ALWAYS_BAD}\t\n]")
_MULTI_LINE_BAD = re.compile(f"[{_ALWAYS_BAD}]")


class TextError(ValueError):
    """Text a person should not have sent; ``str(error)`` is the message for them."""


def clean(value: str, *, multiline: bool = False) -> str:
    """``value`` as it may be stored (CRLF -> LF in multi-line text), else
    :class:`TextError` naming the first kind of character that is not allowed."""
    if multiline:
        value = value.replace("\r\n", "\n")
    bad = (_MULTI_LINE_BAD if multiline else _SINGLE_LINE_BAD).search(value)
    if bad is not None:
        raise TextError(_message(bad.group(), multiline))
    return value


def problem(value: str, *, multiline: bool = False) -> str | None:
    """The message :func:`clean` would raise, or None when the text is acceptable."""
    try:
        clean(value, multiline=multiline)
    except TextError as err:
        return str(err)
    return None


def _message(char: str, multiline: bool) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "must be valid Unicode (it contains an unpaired surrogate)"
    if char in "\r\n\u2028\u2029" and not multiline:
        return "must be a single line"
    if char == "\r" or char in "\u2028\u2029":
        return "must use \\n (LF) for line breaks"
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return "must not contain bidirectional control characters"
    return "must not contain control characters"


def field_text(
    errors: dict[str, list[str]],
    field: str,
    value: object,
    max_len: int,
    *,
    required: bool,
    single_line: bool = False,
) -> str | None:
    """A text field of a command as a domain stores it: stripped, or None when optional
    and blank; problems go into ``errors`` under ``field`` (the domain raises them all at
    once). What the text may contain is :func:`clean`'s rule (multi-line unless
    ``single_line``; CRLF comes back as LF)."""
    if value is None:
        if required:
            errors.setdefault(field, []).append("is required")
        return None
    if not isinstance(value, str):
        errors.setdefault(field, []).append("must be a string")
        return None
    text = value.strip()
    if not text:
        if required:
            errors.setdefault(field, []).append("must not be blank")
        return None
    problems: list[str] = []
    if len(text) > max_len:
        problems.append(f"must be at most {max_len} characters")
    try:
        text = clean(text, multiline=not single_line)
    except TextError as err:
        problems.append(str(err))
    if problems:
        errors.setdefault(field, []).extend(problems)
        return None
    return text
