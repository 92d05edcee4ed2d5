"""The in-app feed at the edge (``GET /notifications``), read from the gateway's own
view, so reading it never crosses the broker.

Notify decides who is told (one rule for email, SMS and in-app) and stays the only
writer of the feed. Each item it stores arrives here as ``notification.created`` (the
whole item) and each reader's marks as ``notification.read``, through the gateway's one
event queue (:func:`to_feed`, an :func:`services.gateway.events.also` hook, in the
event's unit of work under the exactly-once ledger). Both are private events: never on
the live stream, never sent to integrations.

Correct under redelivery and reordering: an item is written once and replaced only by a
higher ``version`` (items never change today: a duplicate is a no-op); a mark is never
undone and keeps the earliest ``read_at``, and may arrive before its item (the item then
shows read from the start). ``POST /notifications/{id}/read`` and ``read-all`` go to
notify by RPC; its reply (the marks, :class:`contracts.notify.ReadMarks`) is applied
here before the answer (:func:`apply_marks`), so the caller reads its own write at once.

Whose items a caller reads (the twin of ``services.notify.domain.feed_owner``, proven
to agree by the tests): a staff member its own; a portal account its customer's, of its
units and of no unit when it is restricted to some units, each account with its own
marks. A page is the unread part then the read part, each newest first, so each part is
one range of the per-person feed index.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import and_, exists, func, not_, null, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from kit.context import Actor
from kit.db import UnitOfWork, utcnow
from kit.errors import Forbidden, ValidationFailed
from services.gateway import events as gateway_events
from services.gateway.feed_models import NotificationReadView, NotificationView

CREATED = "notification.created"
READ = "notification.read"
VIEW = "notifications"

ITEM_FIELDS: Final = (
    "recipient_kind", "recipient_id", "unit_id", "event_id", "event_type", "record_type",
    "record_id", "title", "body", "link", "created_at", "version",
)  # fmt: skip


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# --- writing the view -------------------------------------------------------------------


def upsert_item(uow: UnitOfWork, item: Mapping[str, Any], source_at: datetime) -> None:
    """Insert the item, or replace it if ``item`` is newer (higher version)."""
    row = {name: item.get(name) for name in ITEM_FIELDS}
    for name in ("recipient_id", "unit_id", "event_id", "record_id"):
        row[name] = None if row[name] is None else str(row[name])
    row["created_at"] = _when(row["created_at"])
    row["version"] = int(row["version"] or 1)
    stmt = pg_insert(NotificationView).values(
        id=str(item["notification_id"]), tenant_id=uow.tenant_id, source_at=source_at, **row
    )
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[NotificationView.id],
            set_={name: stmt.excluded[name] for name in (*ITEM_FIELDS, "source_at")},
            where=NotificationView.version < stmt.excluded.version,
        )
    )


def add_marks(
    uow: UnitOfWork, reader_kind: str, reader_id: str, read_at: Any, ids: Iterable[Any]
) -> None:
    """Mark these items read by this reader; a mark already there keeps the earlier
    ``read_at`` (never unread, whatever order the events come in)."""
    values = [
        {
            "notification_id": str(notification_id),
            "tenant_id": uow.tenant_id,
            "reader_kind": reader_kind,
            "reader_id": str(reader_id),
            "read_at": _when(read_at),
        }
        for notification_id in dict.fromkeys(str(i) for i in ids)
    ]
    if not values:
        return
    stmt = pg_insert(NotificationReadView).values(values)
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[
                NotificationReadView.notification_id,
                NotificationReadView.reader_kind,
                NotificationReadView.reader_id,
            ],
            set_={"read_at": func.least(NotificationReadView.read_at, stmt.excluded.read_at)},
            where=NotificationReadView.read_at > stmt.excluded.read_at,
        )
    )


def apply_marks(uow: UnitOfWork, marks: Mapping[str, Any]) -> None:
    """A ``ReadMarks`` (notify's reply to a mark, or a ``notification.read``'s data)."""
    add_marks(
        uow, marks["reader_kind"], marks["reader_id"], marks["read_at"], marks["notification_ids"]
    )


@gateway_events.also
def to_feed(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> Any:
    """The feed's part of the gateway's one event handler: a no-op for other events;
    returns the lag measurement to run after the commit."""
    if event["type"] == CREATED:
        occurred_at = _when(event["occurred_at"])
        upsert_item(uow, data, occurred_at)
    elif event["type"] == READ:
        occurred_at = _when(event["occurred_at"])
        apply_marks(uow, data)
    else:
        return None

    def measure() -> None:
        from services.gateway import views  # views may name this module (SNAPSHOTS)

        views.VIEW_LAG.labels(VIEW).observe((utcnow() - occurred_at).total_seconds())

    return measure


def apply_snapshot(uow: UnitOfWork, items: Iterable[Mapping[str, Any]]) -> None:
    """A page of notify's ``snapshot_notifications`` (items with every reader's marks):
    the apply function of the view's rebuild (``views.SNAPSHOTS["notifications"]``)."""
    now = utcnow()
    for item in items:
        upsert_item(uow, item, now)
        for mark in item.get("reads") or ():
            add_marks(
                uow,
                mark["reader_kind"],
                mark["reader_id"],
                mark["read_at"],
                [item["notification_id"]],
            )


# --- whose feed -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedOwner:
    """Whose feed a caller reads, and as which reader it marks items read."""

    recipient_kind: str  # "staff" | "customer"
    recipient_id: str
    unit_ids: tuple[str, ...] | None  # None: items of every unit
    reader_kind: str  # "staff" | "portal"
    reader_id: str


def feed_owner(actor: Actor) -> FeedOwner:
    """A staff member reads its own items; a portal user its customer's items of its
    allowed units and those about no unit; nobody else has a feed."""
    if actor.kind == "staff":
        return FeedOwner("staff", actor.id, None, "staff", actor.id)
    if actor.kind == "portal" and actor.customer_id:
        units = None if actor.unit_ids is None else tuple(str(u) for u in actor.unit_ids)
        return FeedOwner("customer", str(actor.customer_id), units, "portal", actor.id)
    raise Forbidden("Only staff and portal users have an in-app feed.")


def _in_feed(owner: FeedOwner) -> Any:
    clauses = [
        NotificationView.recipient_kind == owner.recipient_kind,
        NotificationView.recipient_id == owner.recipient_id,
    ]
    if owner.unit_ids is not None:
        clauses.append(
            or_(NotificationView.unit_id.is_(None), NotificationView.unit_id.in_(owner.unit_ids))
        )
    return and_(*clauses)


def _own_mark(owner: FeedOwner) -> Any:
    return and_(
        NotificationReadView.notification_id == NotificationView.id,
        NotificationReadView.reader_kind == owner.reader_kind,
        NotificationReadView.reader_id == owner.reader_id,
    )


# --- the cursor: kit.pagination's with the read flag in front (contracts.notify) ----------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR: Final = re.compile(r"^([01])-([0-9]{1,16})-([0-9a-f]{32})$")


def encode_cursor(read: bool, created_at: datetime, item_id: str) -> str:
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{int(read)}-{micros}-{uuid.UUID(str(item_id)).hex}"


def decode_cursor(cursor: str) -> tuple[bool, datetime, str]:
    match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise ValidationFailed("The cursor is not valid.", {"cursor": ["not a cursor"]})
    read, micros, item_hex = match.groups()
    return read == "1", _EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(hex=item_hex))


# --- reads ------------------------------------------------------------------------------

Row = tuple[NotificationView, datetime | None]


def _part(
    uow: UnitOfWork, owner: FeedOwner, read: bool, after: tuple[datetime, str] | None, n: int
) -> list[Row]:
    """Up to ``n`` items of the unread (or read) part, newest first, after a position."""
    stmt: Any
    if read:
        stmt = select(NotificationView, NotificationReadView.read_at).join(
            NotificationReadView, _own_mark(owner)
        )
    else:
        stmt = select(NotificationView, null()).where(not_(exists().where(_own_mark(owner))))
    stmt = stmt.where(_in_feed(owner))
    if after is not None:
        created_at, item_id = after
        stmt = stmt.where(
            or_(
                NotificationView.created_at < created_at,
                and_(NotificationView.created_at == created_at, NotificationView.id < item_id),
            )
        )
    stmt = stmt.order_by(NotificationView.created_at.desc(), NotificationView.id.desc()).limit(n)
    return [(row, when) for row, when in uow.session.execute(stmt).all()]


def unread_count(uow: UnitOfWork, owner: FeedOwner) -> int:
    stmt = select(func.count()).where(_in_feed(owner), not_(exists().where(_own_mark(owner))))
    return int(uow.session.scalar(stmt) or 0)


def item_dict(row: NotificationView, read_at: datetime | None) -> dict[str, Any]:
    """An item as ``contracts.notify.NotificationSchema`` shows it."""
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "record_type": row.record_type,
        "record_id": row.record_id,
        "unit_id": row.unit_id,
        "title": row.title,
        "body": row.body,
        "link": row.link,
        "read": read_at is not None,
        "read_at": read_at,
        "created_at": row.created_at,
    }


def feed_page(uow: UnitOfWork, actor: Actor, query: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's feed (``contracts.notify.NotificationPage``): unread first, then
    newest first, ``limit`` items from ``cursor``, with the unread count."""
    owner = feed_owner(actor)
    limit = int(query.get("limit") or 50)
    read_part, after = False, None
    if query.get("cursor"):
        read_part, created_at, item_id = decode_cursor(query["cursor"])
        after = (created_at, item_id)
    rows: list[Row] = []
    if not read_part:
        rows = _part(uow, owner, False, after, limit + 1)
        after = None
    if len(rows) <= limit:
        rows += _part(uow, owner, True, after, limit + 1 - len(rows))
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        last, last_read_at = page[-1]
        next_cursor = encode_cursor(last_read_at is not None, last.created_at, last.id)
    return {
        "items": [item_dict(row, read_at) for row, read_at in page],
        "next_cursor": next_cursor,
        "unread_count": unread_count(uow, owner),
    }
