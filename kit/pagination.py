"""Keyset pagination on (created_at, id), newest or oldest first: stable under inserts,
O(limit) per page."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select

from contracts.common import CURSOR_PATTERN  # the contracts state it; the kit must match it
from kit.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

_CURSOR_RE = re.compile(CURSOR_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    if created_at.tzinfo is None:
        raise ValueError("cursor times must be timezone-aware")
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}-{uuid.UUID(str(row_id)).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    match = _CURSOR_RE.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise ValidationFailed("The cursor is not valid.", {"cursor": ["not a cursor"]})
    micros, row_hex = cursor.split("-")
    return _EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(hex=row_hex))


def page(
    stmt: Any,
    model: Any,
    limit: int | None,
    cursor: str | None,
    *,
    oldest_first: bool = False,
    max_limit: int = MAX_LIMIT,
) -> Any:
    """Apply order, cursor and limit (+1 to know if another page exists).

    Newest first unless ``oldest_first`` (a thread of comments reads top to bottom).
    ``max_limit`` lifts the cap for internal paging, e.g. an export streamed in pages.
    """
    limit = max(1, min(limit or DEFAULT_LIMIT, max_limit))
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        if oldest_first:
            after = or_(
                model.created_at > created_at,
                and_(model.created_at == created_at, model.id > row_id),
            )
        else:
            after = or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < row_id),
            )
        stmt = stmt.where(after)
    if oldest_first:
        order = (model.created_at.asc(), model.id.asc())
    else:
        order = (model.created_at.desc(), model.id.desc())
    return stmt.order_by(*order).limit(limit + 1), limit


def read_page(
    session: Any,
    stmt: Any,
    model: Any,
    limit: int | None,
    cursor: str | None,
    *,
    oldest_first: bool = False,
    max_limit: int = MAX_LIMIT,
) -> tuple[list[Any], str | None]:
    """One page of ``stmt``'s ``model`` rows and the next page's cursor (None: no more)."""
    stmt, size = page(stmt, model, limit, cursor, oldest_first=oldest_first, max_limit=max_limit)
    return split(list(session.scalars(stmt)), size)


SNAPSHOT_MAX_LIMIT = 1000


def snapshot(
    session: Any, model: Any, limit: int | None, cursor: str | None
) -> tuple[list[Any], str | None]:
    """Every ``model`` row of the session's tenant, oldest first, page by page: what a
    service pages out for a rebuild of the gateway's views (``snapshot_*`` RPCs)."""
    return read_page(
        session, select(model), model, limit, cursor, oldest_first=True,
        max_limit=SNAPSHOT_MAX_LIMIT,
    )  # fmt: skip


def split(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(last.created_at, last.id)
