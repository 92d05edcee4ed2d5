"""The tables and commands of a :class:`kit.discussion.Discussion`.

``discussion_models(Base, DISCUSSION, "quote_requests")`` declares the two tables in a
service's own schema (tenant-scoped, each row bound to its record by a tenant-carrying
foreign key); :class:`DiscussionStore` reads and writes them inside the service's unit
of work. The record itself is loaded by the caller, through the service's visibility
rule, before any of these run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKeyConstraint,
    String,
    Text,
    Uuid,
    func,
    select,
)
from sqlalchemy.orm import mapped_column

from kit.access import ActorLike
from kit.db import TenantScoped, UnitOfWork, new_id, utcnow
from kit.discussion import Discussion
from kit.errors import NotFound
from kit.ids import is_uuid

UUID = Uuid(as_uuid=False)


@dataclass(frozen=True)
class DiscussionModels:
    d: Discussion
    comment: Any
    attachment: Any


def discussion_models(base: type, d: Discussion, record_table: str) -> DiscussionModels:
    """The comment and attachment tables of ``d``, declared on ``base`` (the service's
    declarative base). ``record_table`` needs a unique ``(tenant_id, id)``."""

    def bound_to_record() -> ForeignKeyConstraint:
        return ForeignKeyConstraint(
            ["tenant_id", d.record_key], [f"{record_table}.tenant_id", f"{record_table}.id"]
        )

    def common() -> dict[str, Any]:
        return {
            "id": mapped_column(UUID, primary_key=True, default=new_id),
            d.record_key: mapped_column(UUID, index=True, nullable=False),
            "created_at": mapped_column(DateTime(timezone=True), default=utcnow, nullable=False),
        }

    prefix = "".join(part.title() for part in f"{d.name}{d.record}".split("_"))
    comment = type(
        f"{prefix}Comment",
        (TenantScoped, base),
        {
            "__tablename__": d.comments_table,
            "__table_args__": (bound_to_record(),),
            **common(),
            "author_kind": mapped_column(String(16), nullable=False),
            "author_id": mapped_column(UUID, nullable=False),
            "author_name": mapped_column(String(200), default="", nullable=False),
            "body": mapped_column(Text, nullable=False),
            "deleted_at": mapped_column(DateTime(timezone=True), nullable=True),
            "deleted_by": mapped_column(UUID, nullable=True),
        },
    )
    attachment = type(
        f"{prefix}Attachment",
        (TenantScoped, base),
        {
            "__tablename__": d.attachments_table,
            "__table_args__": (bound_to_record(),),
            **common(),
            "kind": mapped_column(String(32), nullable=False),
            "filename": mapped_column(String(255), nullable=False),
            "content_type": mapped_column(String(100), nullable=False),
            "size": mapped_column(BigInteger, nullable=False),
            "sha256": mapped_column(String(64), nullable=False),
            "uploaded_by": mapped_column(UUID, nullable=False),
            "uploaded_by_kind": mapped_column(String(16), nullable=False),
            "uploaded_by_name": mapped_column(String(200), default="", nullable=False),
        },
    )
    return DiscussionModels(d, comment, attachment)


class DiscussionStore:
    """Commands and reads of one discussion, in the caller's unit of work."""

    def __init__(self, models: DiscussionModels) -> None:
        self.d = models.d
        self.comment = models.comment
        self.attachment = models.attachment

    def _of(self, model: Any, record_id: str) -> Any:
        return select(model).where(getattr(model, self.d.record_key) == record_id)

    # --- comments ---------------------------------------------------------------------
    def add_comment(self, uow: UnitOfWork, record_id: str, actor: ActorLike, text: str) -> Any:
        row = self.comment(
            author_kind=actor.kind,
            author_id=actor.id,
            author_name=getattr(actor, "name", ""),
            body=text,
            created_at=utcnow(),
            **{self.d.record_key: record_id},
        )
        uow.session.add(row)
        uow.session.flush()
        return row

    def delete_comment(
        self, uow: UnitOfWork, record_id: str, comment_id: str, actor: ActorLike
    ) -> Any:
        row = self._find(uow, self.comment, record_id, comment_id)
        if row is None or row.deleted_at is not None:
            raise NotFound("No such comment.")
        row.deleted_at = utcnow()
        row.deleted_by = actor.id
        return row

    # --- attachments ------------------------------------------------------------------
    def add_attachment(
        self, uow: UnitOfWork, record_id: str, actor: ActorLike, kind: str, meta: dict[str, Any]
    ) -> Any:
        row = self.attachment(
            kind=kind,
            filename=meta["filename"],
            content_type=meta["content_type"],
            size=int(meta["size"]),
            sha256=meta["sha256"],
            uploaded_by=actor.id,
            uploaded_by_kind=actor.kind,
            uploaded_by_name=getattr(actor, "name", ""),
            created_at=utcnow(),
            **{self.d.record_key: record_id},
        )
        uow.session.add(row)
        uow.session.flush()
        return row

    def attachment_kinds(self, uow: UnitOfWork, record_id: str) -> list[str]:
        stmt = select(self.attachment.kind).where(
            getattr(self.attachment, self.d.record_key) == record_id
        )
        return list(uow.session.scalars(stmt.distinct()))

    def attachment_count(self, uow: UnitOfWork, record_id: str) -> int:
        stmt = (
            select(func.count())
            .select_from(self.attachment)
            .where(getattr(self.attachment, self.d.record_key) == record_id)
        )
        return uow.session.scalar(stmt) or 0

    def _find(self, uow: UnitOfWork, model: Any, record_id: str, row_id: str) -> Any:
        if not is_uuid(row_id):
            return None
        return uow.session.scalars(self._of(model, record_id).where(model.id == row_id)).first()

    # --- records as the contract shows them -------------------------------------------
    def comment_record(self, row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            self.d.record_key: getattr(row, self.d.record_key),
            "author_kind": row.author_kind,
            "author_id": row.author_id,
            "author_name": row.author_name,
            "body": row.body,
            "created_at": row.created_at,
        }

    def attachment_record(self, row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            self.d.record_key: getattr(row, self.d.record_key),
            "kind": row.kind,
            "filename": row.filename,
            "content_type": row.content_type,
            "size": row.size,
            "sha256": row.sha256,
            "uploaded_by_name": row.uploaded_by_name,
            "created_at": row.created_at,
        }
