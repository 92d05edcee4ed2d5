"""Local copies of facts another service owns, kept from its events (rule 1: a service
never reads another's tables).

A copy row remembers the ``occurred_at`` of the fact it holds, so an event that arrives
late (a retry, a replay from the dead-letter queue) never overwrites a newer fact.
Call :func:`upsert_newer` inside the handler's unit of work, after ``uow.claim_event``,
so the copy and the processed-event record commit together.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert

from kit.db import UnitOfWork


def occurred_at(value: str) -> datetime:
    """An envelope's ``occurred_at`` as an aware datetime (naive values are UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"occurred_at is not an ISO 8601 timestamp: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def upsert_newer(
    uow: UnitOfWork, model: Any, row_id: str, values: dict[str, Any], at: datetime
) -> None:
    """Insert the copy, or update it if the one held is not newer than ``at``.

    ``model`` is a tenant-scoped table with ``id`` and ``source_occurred_at`` columns.
    """
    stmt = pg_insert(model).values(
        id=row_id, tenant_id=uow.tenant_id, source_occurred_at=at, **values
    )
    table = model.__table__
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={name: stmt.excluded[name] for name in (*values, "source_occurred_at")},
            where=table.c.source_occurred_at <= stmt.excluded.source_occurred_at,
        )
    )
