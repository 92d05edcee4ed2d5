"""The RPC entrypoints of a discussion, by declaration.

::

    QuoteDiscussion = discussion_entrypoints(
        store.DISCUSSION,
        load_record=store.visible_quote,   # (uow, actor, id) -> the record, or NotFound
        event_data=serialise.event_data,   # (record, **extra) -> the event's data
        comment_schema=c.CommentSchema,      # contracts.discussion's shapes, named for
        attachment_schema=c.AttachmentSchema,  # the record (quote_request_id)
    )

    class QuotesService(QuoteDiscussion, HealthEndpoints): ...

gives the service the commands ``add_comment``, ``delete_comment``,
``authorize_upload`` and ``add_attachment`` (prefixed with the discussion's ``name``).
Each loads the record first, through the service's own visibility rule, so only who
sees the record takes part; each emits ``<record>.comment_added`` / ``comment_deleted``
/ ``attachment_added`` with the record's state and the whole comment or file's metadata
in the same transaction. Clients read comments and files from the gateway's views,
fed by those events; ``snapshot_comments`` and ``snapshot_attachments`` page through
them all for a rebuild of those views (the system only). The service class
needs the kit's ``db`` (Database) and ``ctx`` (RequestContext) dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema

from contracts.discussion import CommentRequest, SnapshotPage
from kit import pagination
from kit.access import require_system
from kit.discussion_store import DiscussionStore
from kit.providers import rpc
from kit.schemas import parse, shared

LoadRecord = Callable[[Any, Any, str], Any]
EventData = Callable[..., dict[str, Any]]


def discussion_entrypoints(
    store: DiscussionStore,
    *,
    load_record: LoadRecord,
    event_data: EventData,
    comment_schema: type[Schema],
    attachment_schema: type[Schema],
) -> type:
    """A mixin class holding the discussion's RPC entrypoints (see the module's doc)."""
    d = store.d

    def comment_out(row: Any) -> dict[str, Any]:
        return shared(comment_schema).dump(store.comment_record(row))

    def attachment_out(row: Any) -> dict[str, Any]:
        return shared(attachment_schema).dump(store.attachment_record(row))

    def by(actor: Any) -> dict[str, Any]:
        return {"author_kind": actor.kind, "author_name": actor.name, "author_id": actor.id}

    def when(value: Any) -> str:
        return str(value.isoformat())

    def add_comment(self: Any, record_id: str, payload: dict[str, Any]) -> Any:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            record = load_record(uow, actor, record_id)
            text = d.validate_comment(actor, parse(CommentRequest, payload)["body"])
            row = store.add_comment(uow, record.id, actor, text)
            uow.emit(
                d.comment_added,
                event_data(
                    record,
                    comment_id=row.id,
                    comment_body=text,
                    comment_created_at=when(row.created_at),
                    **by(actor),
                ),
            )
            return comment_out(row)

    def delete_comment(self: Any, record_id: str, comment_id: str) -> Any:
        """Soft-deletes; returns the comment's id and when it was deleted."""
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            record = load_record(uow, actor, record_id)
            d.authorize_delete(actor)
            row = store.delete_comment(uow, record.id, comment_id, actor)
            deleted_at = when(row.deleted_at)
            uow.emit(
                d.comment_deleted,
                event_data(record, comment_id=row.id, comment_deleted_at=deleted_at, **by(actor)),
            )
            return {"id": row.id, "deleted_at": deleted_at}

    def authorize_upload(self: Any, record_id: str, kind: str) -> str:
        """Checked before the gateway stores any bytes, so refused uploads leave none."""
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            load_record(uow, actor, record_id)
            return d.authorize_attachment(actor, kind)

    def add_attachment(self: Any, record_id: str, meta: dict[str, Any]) -> Any:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            record = load_record(uow, actor, record_id)
            kind = d.authorize_attachment(actor, meta.get("kind"))
            row = store.add_attachment(uow, record.id, actor, kind, meta)
            uow.emit(
                d.attachment_added,
                event_data(
                    record,
                    attachment_id=row.id,
                    filename=row.filename,
                    attachment_kind=kind,
                    content_type=row.content_type,
                    size=row.size,
                    sha256=row.sha256,
                    attachment_created_at=when(row.created_at),
                    **by(actor),
                ),
            )
            return attachment_out(row)

    def snapshot_comments(self: Any, query: dict[str, Any] | None = None) -> Any:
        """Every comment of the tenant, deleted ones too, oldest first: what the
        gateway's views are rebuilt from (the system only)."""
        actor = self.ctx.require_actor()
        require_system(actor)
        f = parse(SnapshotPage, query or {})
        with self.db.unit_of_work() as uow:
            rows, cursor = pagination.snapshot(
                uow.session, store.comment, f.get("limit"), f.get("cursor")
            )
            items = [
                {**comment_out(x), "deleted_at": x.deleted_at and when(x.deleted_at)} for x in rows
            ]
            return {"items": items, "next_cursor": cursor}

    def snapshot_attachments(self: Any, query: dict[str, Any] | None = None) -> Any:
        """Every file's metadata of the tenant, oldest first (the system only)."""
        actor = self.ctx.require_actor()
        require_system(actor)
        f = parse(SnapshotPage, query or {})
        with self.db.unit_of_work() as uow:
            rows, cursor = pagination.snapshot(
                uow.session, store.attachment, f.get("limit"), f.get("cursor")
            )
            return {"items": [attachment_out(a) for a in rows], "next_cursor": cursor}

    methods: dict[str, Callable[..., Any]] = {
        "add_comment": add_comment,
        "delete_comment": delete_comment,
        "authorize_upload": authorize_upload,
        "add_attachment": add_attachment,
        "snapshot_comments": snapshot_comments,
        "snapshot_attachments": snapshot_attachments,
    }
    namespace = {f"{d.name}{name}": rpc(fn) for name, fn in methods.items()}
    return type(f"{d.record.title().replace('_', '')}Discussion", (), namespace)


def rpc_names(store_or_discussion: Any) -> tuple[str, ...]:
    """The RPC method names a discussion adds to its service."""
    d = getattr(store_or_discussion, "d", store_or_discussion)
    return tuple(
        f"{d.name}{name}"
        for name in (
            "add_comment",
            "delete_comment",
            "authorize_upload",
            "add_attachment",
            "snapshot_comments",
            "snapshot_attachments",
        )
    )
