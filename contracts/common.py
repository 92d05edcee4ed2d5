"""What every contract module shares: one instance per schema class, the cursor pattern.

Contracts are pure schemas (marshmallow and the standard library): the kit imports them,
never the other way round, so what both need lives here and ``kit.schemas`` and
``kit.pagination`` re-export it.
"""

from __future__ import annotations

from functools import cache
from typing import TypeVar

from marshmallow import Schema, fields, validate

S = TypeVar("S", bound=Schema)

# A list cursor is "<microseconds since 1970 UTC>-<row id as 32 hex digits>": opaque to
# clients, yet exactly describable by a pattern (the OpenAPI document states it), so
# every string that matches it is a cursor the server accepts and no other string is.
CURSOR_PATTERN = r"^[0-9]{1,16}-[0-9a-f]{32}$"


@cache
def shared(schema_cls: type[S]) -> S:
    """The one instance of ``schema_cls``: building a Schema deep-copies its declared
    fields (~0.3 ms each time); instances hold no per-call state for load/dump."""
    return schema_cls()


LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 200


class PageQuery(Schema):
    """``?limit=&cursor=`` of every list; the cursor is the opaque ``next_cursor`` of
    the previous page."""

    limit = fields.Integer(
        load_default=LIST_LIMIT_DEFAULT, validate=validate.Range(min=1, max=LIST_LIMIT_MAX)
    )
    cursor = fields.String(validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor"))
