"""Keyset pagination on (created_at, id), newest or oldest first: stable under inserts,
O(limit) per page."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_

from kit.errors import ValidationFailed

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = datetime.fromisoformat(created)
        # Both halves reach SQL: a naive time or a non-UUID id would be a database error.
        if created_at.tzinfo is None:
            raise ValueError("naive cursor time")
        return created_at, str(uuid.UUID(row_id))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValidationFailed("The cursor is not valid.", {"cursor": ["not a cursor"]}) from exc


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


def split(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(last.created_at, last.id)
