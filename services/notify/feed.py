"""The in-app feed: items stored when an event notifies someone in-app (the same plan
as email and SMS, :func:`services.notify.domain.plan_deliveries`), each reader's marks,
and what the gateway's feed view is kept from.

Every item stored emits ``notification.created`` (the whole item) and every new mark
``notification.read`` (the reader, ``read_at``, the item ids), through the outbox in the
same transaction; both are private events (per person). ``mark_read`` and
``mark_all_read`` answer the marks (:class:`contracts.notify.ReadMarks`) for the gateway
to apply before it answers (read-your-writes); ``notification_snapshot`` pages every
item with its marks for a rebuild of that view. An item never changes once stored and a
mark is never undone (it keeps the first ``read_at``), so the view is correct under
redelivery and reordering. :func:`notification_page` is the owner's own reading of a
feed (the gateway reads its view instead).
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts import notify as c
from contracts.discussion import SnapshotPage
from kit import pagination
from kit.context import Actor
from kit.db import UnitOfWork
from kit.errors import Forbidden, NotFound, ValidationFailed
from kit.ids import new_id
from kit.schemas import parse as load_payload
from kit.schemas import shared
from services.notify import domain
from services.notify.models import Notification, NotificationRead

# In-app items never change once stored: every ``notification.created`` says version 1.
FEED_ITEM_VERSION = 1
READ_EVENT_BATCH = 500  # item ids per ``notification.read`` event

_N = cast(Table, Notification.__table__)


def store_in_app(
    uow: UnitOfWork,
    event: dict[str, Any],
    recipient: domain.Recipient,
    message: Any,
    ctx: dict[str, Any],
) -> None:
    """Store one in-app item (once per event and recipient) and, when it is new, emit
    ``notification.created`` with the whole item in the same transaction."""
    data = event["data"]
    record_type, record_id = domain.record_of(event["type"], data)
    stmt = pg_insert(_N).values(
        id=new_id(),
        tenant_id=uow.tenant_id,
        recipient_kind=recipient.kind,
        recipient_id=recipient.id,
        unit_id=data.get("unit_id"),
        event_id=event["id"],
        event_type=event["type"],
        record_type=record_type,
        record_id=record_id,
        title=message.subject,
        body=message.in_app,
        link=ctx["portal_url"],
        created_at=func.now(),
    )
    new = uow.session.execute(stmt.on_conflict_do_nothing().returning(*_N.c)).first()
    if new is not None:  # the gateway's feed view copies it (same transaction: outbox)
        uow.emit("notification.created", item_data(new))


def item_data(n: Any) -> dict[str, Any]:
    """An item as ``notification.created`` and the snapshot carry it (a row or model)."""
    return {
        "notification_id": str(n.id),
        "recipient_kind": n.recipient_kind,
        "recipient_id": str(n.recipient_id),
        "unit_id": n.unit_id and str(n.unit_id),
        "event_id": str(n.event_id),
        "event_type": n.event_type,
        "record_type": n.record_type,
        "record_id": n.record_id and str(n.record_id),
        "title": n.title,
        "body": n.body,
        "link": n.link,
        "created_at": n.created_at.isoformat(),
        "version": FEED_ITEM_VERSION,
    }


def _read_marks(
    uow: UnitOfWork, owner: domain.FeedOwner, read_at: Any, new_ids: list[str], ids: list[str]
) -> dict[str, Any]:
    """Emit ``notification.read`` for the marks just made (in batches) and answer the
    marks ``ids`` stand for, for the gateway to apply to its feed view."""
    marks = {"reader_kind": owner.reader_kind, "reader_id": owner.reader_id, "read_at": read_at}
    for start in range(0, len(new_ids), READ_EVENT_BATCH):
        batch = new_ids[start : start + READ_EVENT_BATCH]
        uow.emit(
            "notification.read", shared(c.ReadMarks).dump({**marks, "notification_ids": batch})
        )
    return dict(shared(c.ReadMarks).dump({**marks, "notification_ids": ids}))


def _feed_owner(actor: Actor) -> domain.FeedOwner:
    try:
        return domain.feed_owner(actor.kind, actor.id, actor.customer_id, actor.unit_ids)
    except domain.NoFeed as exc:
        raise Forbidden("Only staff and portal users have an in-app feed.") from exc


def _in_feed(uow: UnitOfWork, owner: domain.FeedOwner) -> Any:
    """The items of the owner's feed (a restricted portal account: its units, or none)."""
    clauses = [
        Notification.tenant_id == uow.tenant_id,
        Notification.recipient_kind == owner.recipient_kind,
        Notification.recipient_id == owner.recipient_id,
    ]
    if owner.unit_ids is not None:
        clauses.append(
            or_(Notification.unit_id.is_(None), Notification.unit_id.in_(owner.unit_ids))
        )
    return and_(*clauses)


def _own_mark(owner: domain.FeedOwner) -> Any:
    return and_(
        NotificationRead.tenant_id == Notification.tenant_id,
        NotificationRead.notification_id == Notification.id,
        NotificationRead.reader_kind == owner.reader_kind,
        NotificationRead.reader_id == owner.reader_id,
    )


def notification_page(uow: UnitOfWork, actor: Actor, query: dict[str, Any]) -> dict[str, Any]:
    """The caller's in-app feed, unread first then newest first, with its unread count."""
    owner = _feed_owner(actor)
    f = load_payload(c.NotificationListQuery, query)
    limit = f["limit"]
    is_read = case((NotificationRead.read_at.is_(None), 0), else_=1)
    stmt = (
        select(Notification, NotificationRead.read_at)
        .outerjoin(NotificationRead, _own_mark(owner))
        .where(_in_feed(uow, owner))
    )
    if f.get("cursor"):
        try:
            read, created_at, item_id = domain.decode_feed_cursor(f["cursor"])
        except ValueError as exc:
            raise ValidationFailed(
                "The cursor is not valid.", {"cursor": ["not a cursor"]}
            ) from exc
        after = or_(
            Notification.created_at < created_at,
            and_(Notification.created_at == created_at, Notification.id < item_id),
        )
        stmt = stmt.where(or_(is_read > int(read), and_(is_read == int(read), after)))
    stmt = stmt.order_by(is_read, Notification.created_at.desc(), Notification.id.desc())
    rows = uow.session.execute(stmt.limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        last, last_read_at = page[-1]
        next_cursor = domain.encode_feed_cursor(last_read_at is not None, last.created_at, last.id)
    unread = uow.session.scalar(
        select(func.count(Notification.id))
        .outerjoin(NotificationRead, _own_mark(owner))
        .where(_in_feed(uow, owner), NotificationRead.read_at.is_(None))
    )
    schema = c.NotificationSchema()
    items = [
        schema.dump(
            {
                **{k: getattr(n, k) for k in schema.fields if hasattr(Notification, k)},
                "read": read_at is not None,
                "read_at": read_at,
            }
        )
        for n, read_at in page
    ]
    return {"items": items, "next_cursor": next_cursor, "unread_count": int(unread or 0)}


def _writable_feed(actor: Actor) -> domain.FeedOwner:
    owner = _feed_owner(actor)
    if actor.read_only:
        raise Forbidden("A preview is read-only.")
    return owner


def mark_read(uow: UnitOfWork, actor: Actor, notification_id: str) -> dict[str, Any]:
    """Mark one item of the caller's feed read (again: no change); answers the mark
    (:class:`contracts.notify.ReadMarks`, with the first ``read_at``)."""
    owner = _writable_feed(actor)
    try:
        wanted = str(uuid.UUID(str(notification_id)))
    except ValueError as exc:
        raise NotFound("No such notification.") from exc
    found = uow.session.scalar(
        select(Notification.id).where(_in_feed(uow, owner), Notification.id == wanted)
    )
    if found is None:
        raise NotFound("No such notification.")
    read_at = uow.session.execute(
        pg_insert(NotificationRead)
        .values(
            tenant_id=uow.tenant_id,
            notification_id=wanted,
            reader_kind=owner.reader_kind,
            reader_id=owner.reader_id,
            read_at=func.now(),
        )
        .on_conflict_do_nothing()
        .returning(NotificationRead.read_at)
    ).scalar()
    if read_at is not None:
        return _read_marks(uow, owner, read_at, [wanted], [wanted])
    earlier = uow.session.scalar(
        select(NotificationRead.read_at).where(
            NotificationRead.notification_id == wanted,
            NotificationRead.reader_kind == owner.reader_kind,
            NotificationRead.reader_id == owner.reader_id,
        )
    )
    return _read_marks(uow, owner, earlier, [], [wanted])


def mark_all_read(uow: UnitOfWork, actor: Actor) -> dict[str, Any]:
    """Mark every item of the caller's feed read, in one statement; answers the items
    it marked now (:class:`contracts.notify.ReadMarks`)."""
    owner = _writable_feed(actor)
    unread = select(
        Notification.tenant_id,
        Notification.id,
        literal(owner.reader_kind),
        literal(owner.reader_id),
        func.now(),
    ).where(_in_feed(uow, owner))
    marked = uow.session.execute(
        pg_insert(NotificationRead)
        .from_select(
            ["tenant_id", "notification_id", "reader_kind", "reader_id", "read_at"], unread
        )
        .on_conflict_do_nothing()
        .returning(NotificationRead.notification_id, NotificationRead.read_at)
    ).all()
    ids = sorted(str(notification_id) for notification_id, _ in marked)
    read_at = marked[0][1] if marked else uow.session.scalar(select(func.now()))
    return _read_marks(uow, owner, read_at, ids, ids)


def notification_snapshot(uow: UnitOfWork, query: dict[str, Any]) -> dict[str, Any]:
    """Every in-app item of the tenant, oldest first, each with every reader's mark:
    what the gateway's feed view is rebuilt from."""
    f = load_payload(SnapshotPage, query)
    rows, next_cursor = pagination.snapshot(
        uow.session, Notification, f.get("limit"), f.get("cursor")
    )
    reads: dict[str, list[dict[str, Any]]] = {}
    if rows:
        marks = uow.session.scalars(
            select(NotificationRead)
            .where(NotificationRead.notification_id.in_([n.id for n in rows]))
            .order_by(NotificationRead.reader_kind, NotificationRead.reader_id)
        )
        for m in marks:
            reads.setdefault(str(m.notification_id), []).append(
                {
                    "reader_kind": m.reader_kind,
                    "reader_id": str(m.reader_id),
                    "read_at": m.read_at.isoformat(),
                }
            )
    items = [{**item_data(n), "reads": reads.get(str(n.id), [])} for n in rows]
    return {"items": items, "next_cursor": next_cursor}
