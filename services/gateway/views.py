"""Read views at the edge: what clients read, kept in the gateway's own tables from the
owning services' events, so reads never cross the broker. Commands still go by RPC to
the owning service, which stays the only writer of its data.

Correct under redelivery and reordering: a quote request's row changes only for a
newer ``version`` (a duplicate or older event is a no-op); comments and files are
immutable once added, and a comment's deletion is a tombstone a late ``comment_added``
never revives. A client reads its own writes at once: the gateway applies a command's
reply to the view, under the same rule, before it answers (:func:`apply_quote_reply`).

``portico views rebuild`` (:func:`rebuild`) re-reads a view from its owner's paged
snapshot while events keep flowing: the same version rule means neither can overwrite
the other with older data. A tenant never built is caught up at gateway start.

Every read is scoped by the kit's one rule (``kit.access.Scope``, as SQL through
``kit.access_sql.scope_filter``): the same rule the owning service applies to commands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts.quotes import number_text, number_value
from kit import pagination
from kit.access import Fields, Scope
from kit.access_sql import columns_of, scope_filter
from kit.context import Actor
from kit.db import UnitOfWork, utcnow
from kit.errors import NotFound
from kit.ids import is_uuid
from services.gateway.models import (
    AttachmentView,
    CommentView,
    Customer,
    QuoteRequestView,
    ViewBuild,
)

log = logging.getLogger(__name__)

VIEW_LAG = Histogram(
    "portico_view_lag_seconds",
    "From an event's occurred_at to its change applied to the gateway's read views",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

QUOTE_REQUEST = "quote_request"
# The event data key naming the record, per kind of record with a discussion.
RECORD_KEYS: dict[str, str] = {QUOTE_REQUEST: "quote_request_id"}
QUOTE_FIELDS = Fields()  # quote request views have every scope field under its own name
QUOTE_SCOPE = columns_of(QuoteRequestView, QUOTE_FIELDS)

_QUOTE_COLUMNS = (
    "customer_id", "unit_id", "work_order_id", "description", "status", "created_by",
    "created_by_name", "created_by_customer", "visible_to_customer", "assigned_to",
    "po_number", "decision_reason", "decided_on_behalf", "decided_at", "version",
    "created_at", "updated_at",
)  # fmt: skip


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# --- writing the views ------------------------------------------------------------------


def upsert_quote(uow: UnitOfWork, record: Mapping[str, Any], source_at: datetime) -> None:
    """Insert the request, or replace it if ``record`` is newer (higher version)."""
    row: dict[str, Any] = {name: record.get(name) for name in _QUOTE_COLUMNS}
    for name in ("decided_at", "created_at", "updated_at"):
        row[name] = _when(row[name])
    row["decided_on_behalf"] = bool(row["decided_on_behalf"])
    row["created_by_name"] = row["created_by_name"] or ""
    values = {
        **row,
        "id": str(record["id"]),
        "tenant_id": uow.tenant_id,
        "number": number_value(record["number"]),
        "source_at": source_at,
    }
    stmt = pg_insert(QuoteRequestView).values(**values)
    changed = {name: stmt.excluded[name] for name in (*_QUOTE_COLUMNS, "number", "source_at")}
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[QuoteRequestView.id],
            set_=changed,
            where=QuoteRequestView.version < stmt.excluded.version,
        )
    )


def add_comment(uow: UnitOfWork, record: str, record_id: str, c: Mapping[str, Any]) -> None:
    """A comment once (comments never change; a tombstone already there stays)."""
    stmt = pg_insert(CommentView).values(
        id=str(c["id"]),
        tenant_id=uow.tenant_id,
        record=record,
        record_id=str(record_id),
        author_kind=c.get("author_kind") or "",
        author_id=c.get("author_id"),
        author_name=c.get("author_name") or "",
        body=c.get("body") or "",
        created_at=_when(c["created_at"]),
        deleted_at=_when(c.get("deleted_at")),
    )
    uow.session.execute(stmt.on_conflict_do_nothing(index_elements=[CommentView.id]))


def delete_comment(
    uow: UnitOfWork, record: str, record_id: str, comment_id: str, deleted_at: Any
) -> None:
    """Mark the comment deleted; if it has not arrived yet, leave a tombstone for it."""
    when = _when(deleted_at) or utcnow()
    stmt = pg_insert(CommentView).values(
        id=str(comment_id),
        tenant_id=uow.tenant_id,
        record=record,
        record_id=str(record_id),
        author_kind="",
        author_name="",
        body="",
        created_at=when,
        deleted_at=when,
    )
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[CommentView.id],
            set_={"deleted_at": func.coalesce(CommentView.deleted_at, stmt.excluded.deleted_at)},
        )
    )


def add_attachment(uow: UnitOfWork, record: str, record_id: str, a: Mapping[str, Any]) -> None:
    """A file's metadata once (files never change)."""
    stmt = pg_insert(AttachmentView).values(
        id=str(a["id"]),
        tenant_id=uow.tenant_id,
        record=record,
        record_id=str(record_id),
        kind=a["kind"],
        filename=a["filename"],
        content_type=a["content_type"],
        size=int(a["size"]),
        sha256=a["sha256"],
        uploaded_by_name=a.get("uploaded_by_name") or "",
        created_at=_when(a["created_at"]),
    )
    uow.session.execute(stmt.on_conflict_do_nothing(index_elements=[AttachmentView.id]))


# --- from events ------------------------------------------------------------------------


def quote_from_event(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The request's record as an event states it; None for an event published before
    events carried the whole state (a rebuild brings those rows)."""
    if data.get("created_at") is None or data.get("updated_at") is None:
        return None
    return {
        **{name: data.get(name) for name in _QUOTE_COLUMNS},
        "id": data["quote_request_id"],
        "number": data["number"],
        "decision_reason": data.get("reason"),
    }


def _discussion_change(uow: UnitOfWork, record: str, kind: str, data: Mapping[str, Any]) -> None:
    record_id = data[RECORD_KEYS[record]]
    if kind == "comment_added" and data.get("comment_created_at"):
        comment = {
            "id": data["comment_id"],
            "author_kind": data.get("author_kind"),
            "author_id": data.get("author_id"),
            "author_name": data.get("author_name"),
            "body": data.get("comment_body"),
            "created_at": data["comment_created_at"],
        }
        add_comment(uow, record, record_id, comment)
    elif kind == "comment_deleted" and data.get("comment_id"):
        delete_comment(uow, record, record_id, data["comment_id"], data.get("comment_deleted_at"))
    elif kind == "attachment_added" and data.get("attachment_created_at"):
        attachment = {
            "id": data["attachment_id"],
            "kind": data.get("attachment_kind"),
            "filename": data.get("filename"),
            "content_type": data.get("content_type"),
            "size": data.get("size"),
            "sha256": data.get("sha256"),
            "uploaded_by_name": data.get("author_name"),
            "created_at": data["attachment_created_at"],
        }
        add_attachment(uow, record, record_id, attachment)


def apply(uow: UnitOfWork, event: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
    """Apply one event to the views it feeds (a no-op for any other); returns what to
    run after the commit (the lag measurement)."""
    record, _, kind = str(event["type"]).partition(".")
    if record != QUOTE_REQUEST:
        return None
    occurred_at = _when(event["occurred_at"]) or utcnow()
    state = quote_from_event(data)
    if state is not None:
        upsert_quote(uow, state, occurred_at)
    if record in RECORD_KEYS:
        _discussion_change(uow, record, kind, data)

    def measure() -> None:
        VIEW_LAG.labels("quote_requests").observe((utcnow() - occurred_at).total_seconds())

    return measure


# --- read-your-writes -------------------------------------------------------------------


def apply_quote_reply(uow: UnitOfWork, record: Mapping[str, Any]) -> None:
    """A command's reply (the request after the change) into the view before the answer."""
    upsert_quote(uow, record, utcnow())


# --- reads ------------------------------------------------------------------------------


def quote_dict(row: QuoteRequestView, attachment_count: int | None = None) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in _QUOTE_COLUMNS}
    out.update(id=row.id, number=number_text(row.number))
    if attachment_count is not None:
        out["attachment_count"] = attachment_count
    return out


def visible_quote(uow: UnitOfWork, actor: Actor, quote_id: str) -> QuoteRequestView:
    """The request if ``actor`` may see it, else ``not_found`` (never revealing it)."""
    row = None
    if is_uuid(quote_id):
        row = uow.session.scalars(
            select(QuoteRequestView).where(QuoteRequestView.id == quote_id)
        ).first()
    if row is None or not Scope.of(actor).matches(row, QUOTE_FIELDS):
        raise NotFound("No such quote request.")
    return row


def quote_detail(uow: UnitOfWork, actor: Actor, quote_id: str) -> dict[str, Any]:
    """The request as ``GET /quote-requests/{id}`` shows it (with its customer's name
    and how many files it has), in one statement; ``not_found`` if not the caller's."""
    found = None
    if is_uuid(quote_id):
        files = (
            select(func.count())
            .where(AttachmentView.record == QUOTE_REQUEST, AttachmentView.record_id == quote_id)
            .scalar_subquery()
        )
        name = (
            select(Customer.name).where(Customer.id == QuoteRequestView.customer_id)
        ).scalar_subquery()
        found = uow.session.execute(
            select(QuoteRequestView, name, files).where(QuoteRequestView.id == quote_id)
        ).first()
    if found is None or not Scope.of(actor).matches(found[0], QUOTE_FIELDS):
        raise NotFound("No such quote request.")
    row, customer_name, count = found
    return {**quote_dict(row, int(count)), "customer_name": customer_name}


def _filtered(stmt: Any, f: Mapping[str, Any]) -> Any:
    if "status" in f:
        stmt = stmt.where(QuoteRequestView.status == f["status"])
    if "created_by_customer" in f:
        stmt = stmt.where(QuoteRequestView.created_by_customer.is_(f["created_by_customer"]))
    for key in ("created_by", "assigned_to", "customer_id", "unit_id"):
        if f.get(key) is not None:
            stmt = stmt.where(getattr(QuoteRequestView, key) == str(f[key]))
    if f.get("q"):
        term = f["q"].strip()
        like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions: list[ColumnElement[bool]] = [
            QuoteRequestView.description.ilike(like, escape="\\"),
            QuoteRequestView.po_number.ilike(like, escape="\\"),
        ]
        digits = term.upper().removeprefix("Q-").lstrip("0")
        # ASCII digits only: "³".isdigit() is true, and int() refuses it
        if digits.isascii() and digits.isdigit() and len(digits) < 15:
            conditions.append(QuoteRequestView.number == int(digits))
        stmt = stmt.where(or_(*conditions))
    return stmt


def quote_page(
    uow: UnitOfWork, actor: Actor, f: Mapping[str, Any], max_limit: int = pagination.MAX_LIMIT
) -> tuple[list[QuoteRequestView], str | None]:
    """A page, newest first, of the requests ``actor`` sees under the filters ``f``."""
    stmt = select(QuoteRequestView).where(scope_filter(Scope.of(actor), QUOTE_SCOPE))
    return pagination.read_page(
        uow.session, _filtered(stmt, f), QuoteRequestView, f.get("limit"), f.get("cursor"),
        max_limit=max_limit,
    )  # fmt: skip


def quote_counts(uow: UnitOfWork, actor: Actor, f: Mapping[str, Any]) -> dict[str, int]:
    """Requests per status under every filter but ``status`` (the tabs)."""
    stmt = (
        select(QuoteRequestView.status, func.count())
        .where(scope_filter(Scope.of(actor), QUOTE_SCOPE))
        .group_by(QuoteRequestView.status)
    )
    rows = uow.session.execute(_filtered(stmt, {k: v for k, v in f.items() if k != "status"}))
    return {str(status): int(n) for status, n in rows}


def comments_page(
    uow: UnitOfWork, record: str, record_id: str, limit: int | None, cursor: str | None
) -> tuple[list[CommentView], str | None]:
    stmt = select(CommentView).where(
        CommentView.record == record,
        CommentView.record_id == record_id,
        CommentView.deleted_at.is_(None),
    )
    return pagination.read_page(uow.session, stmt, CommentView, limit, cursor, oldest_first=True)


def attachments_page(
    uow: UnitOfWork, record: str, record_id: str, limit: int | None, cursor: str | None
) -> tuple[list[AttachmentView], str | None]:
    stmt = select(AttachmentView).where(
        AttachmentView.record == record, AttachmentView.record_id == record_id
    )
    return pagination.read_page(uow.session, stmt, AttachmentView, limit, cursor, oldest_first=True)


def attachment_of(
    uow: UnitOfWork, record: str, record_id: str, attachment_id: str
) -> AttachmentView:
    row = None
    if is_uuid(attachment_id):
        row = uow.session.scalars(
            select(AttachmentView).where(
                AttachmentView.id == attachment_id,
                AttachmentView.record == record,
                AttachmentView.record_id == record_id,
            )
        ).first()
    if row is None:
        raise NotFound("No such attachment.")
    return row


def attachment_count(uow: UnitOfWork, record: str, record_id: str) -> int:
    stmt = select(func.count()).where(
        AttachmentView.record == record, AttachmentView.record_id == record_id
    )
    return int(uow.session.scalar(stmt) or 0)


def comment_dict(row: CommentView, record_key: str) -> dict[str, Any]:
    return {
        "id": row.id,
        record_key: row.record_id,
        "author_kind": row.author_kind,
        "author_id": row.author_id,
        "author_name": row.author_name,
        "body": row.body,
        "created_at": row.created_at,
    }


def attachment_dict(row: AttachmentView, record_key: str) -> dict[str, Any]:
    return {
        "id": row.id,
        record_key: row.record_id,
        "kind": row.kind,
        "filename": row.filename,
        "content_type": row.content_type,
        "size": row.size,
        "sha256": row.sha256,
        "uploaded_by_name": row.uploaded_by_name,
        "created_at": row.created_at,
    }


# --- rebuild from the owner's snapshot --------------------------------------------------

SnapshotCall = Callable[[str, str, dict[str, Any]], Mapping[str, Any]]


def _apply_quotes(uow: UnitOfWork, items: Iterable[Mapping[str, Any]]) -> None:
    now = utcnow()
    for item in items:
        upsert_quote(uow, item, now)


def _apply_comments(uow: UnitOfWork, items: Iterable[Mapping[str, Any]]) -> None:
    for item in items:
        add_comment(uow, QUOTE_REQUEST, item["quote_request_id"], item)
        if item.get("deleted_at"):
            delete_comment(
                uow, QUOTE_REQUEST, item["quote_request_id"], item["id"], item["deleted_at"]
            )


def _apply_attachments(uow: UnitOfWork, items: Iterable[Mapping[str, Any]]) -> None:
    for item in items:
        add_attachment(uow, QUOTE_REQUEST, item["quote_request_id"], item)


def _apply_notifications(uow: UnitOfWork, items: Iterable[Mapping[str, Any]]) -> None:
    from services.gateway import feed  # feed hooks into events, which imports this module

    feed.apply_snapshot(uow, items)


# view -> (owning service, its snapshot RPC method, how a page is applied)
SNAPSHOTS: dict[str, tuple[str, str, Callable[[UnitOfWork, Iterable[Any]], None]]] = {
    "quote_requests": ("quotes", "snapshot_quote_requests", _apply_quotes),
    "quote_comments": ("quotes", "snapshot_comments", _apply_comments),
    "quote_attachments": ("quotes", "snapshot_attachments", _apply_attachments),
    "notifications": ("notify", "snapshot_notifications", _apply_notifications),
}


def rebuild(core: Any, tenant_id: str, view: str, fetch: SnapshotCall) -> int:
    """Re-read ``view`` of one tenant from its owner's snapshot, page by page (each page
    its own transaction, so events keep applying in between); returns the rows read.
    ``fetch(service, method, query)`` calls the owner as the tenant's system actor."""
    service, method, apply_page = SNAPSHOTS[view]
    cursor: str | None = None
    count = 0
    while True:
        query: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = fetch(service, method, query)
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            apply_page(uow, page["items"])
        count += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        stmt = pg_insert(ViewBuild).values(
            view=view, tenant_id=tenant_id, built_at=datetime.now(UTC), rows=count
        )
        uow.session.execute(
            stmt.on_conflict_do_update(
                index_elements=[ViewBuild.view, ViewBuild.tenant_id],
                set_={"built_at": stmt.excluded.built_at, "rows": stmt.excluded.rows},
            )
        )
    log.info("rebuilt view %s of tenant %s: %d rows", view, tenant_id, count)
    return count


def unbuilt(core: Any, tenant_ids: Iterable[str]) -> list[tuple[str, str]]:
    """(tenant, view) pairs never built: what a gateway catches up by itself (one small
    read per tenant, in the tenant: the bookkeeping is tenant data like any other)."""
    pending = []
    for tenant_id in tenant_ids:
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            built = set(uow.session.scalars(select(ViewBuild.view)))
        pending += [(str(tenant_id), v) for v in SNAPSHOTS if v not in built]
    return pending
