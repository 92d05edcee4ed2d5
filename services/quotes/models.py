"""Tables of the quotes service (schema ``quotes``).

``customers``, ``units`` and ``staff`` are local copies of directory facts, kept from
``directory.*`` events (rule 1: no reads of another service's tables); every reference
a caller sends (customer, unit, assignee) is checked against them. Each copy remembers
the ``occurred_at`` of the fact it holds, so an older event arriving late never
overwrites newer data.

Every foreign key between these tables includes ``tenant_id``: PostgreSQL checks
foreign keys without row-level security, so a plain ``id`` reference could point into
another tenant.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import TenantScoped, infra_tables, make_metadata, new_id, utcnow
from kit.discussion_store import discussion_models as discussion_models_of
from services.quotes.domain import DISCUSSION

metadata = make_metadata("quotes")
outbox, processed_events = infra_tables(metadata)
UUID = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = metadata


class QuoteCounter(TenantScoped, Base):
    """Per-tenant sequence for human quote numbers (Q-000123)."""

    __tablename__ = "quote_counters"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)
    __table_args__ = (UniqueConstraint("tenant_id"),)


class QuoteRequest(TenantScoped, Base):
    __tablename__ = "quote_requests"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    number: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(UUID, index=True)
    unit_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    work_order_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(UUID)
    created_by_kind: Mapped[str] = mapped_column(String(16))
    created_by_name: Mapped[str] = mapped_column(String(200), default="")
    created_by_customer: Mapped[bool] = mapped_column(Boolean)
    visible_to_customer: Mapped[bool] = mapped_column(Boolean, default=True)
    assigned_to: Mapped[str | None] = mapped_column(UUID, nullable=True)
    po_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(UUID, nullable=True)
    decided_on_behalf: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        # The target of the tenant-bound foreign keys of comments and attachments.
        UniqueConstraint("tenant_id", "id"),
        Index("ix_quote_requests_list", "tenant_id", "created_at", "id"),
        Index("ix_quote_requests_status", "tenant_id", "status"),
    )


# Comments and files of a request: the kit's discussion tables (``comments``,
# ``attachments``), each row bound to its request by (tenant_id, quote_request_id).
discussion_models = discussion_models_of(Base, DISCUSSION, "quote_requests")
Comment = discussion_models.comment
Attachment = discussion_models.attachment


# --- local copies of directory facts -----------------------------------------------


def _source_occurred_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True))


class KnownCustomer(TenantScoped, Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    source_occurred_at: Mapped[datetime] = _source_occurred_at()


class KnownUnit(TenantScoped, Base):
    __tablename__ = "units"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(UUID)
    label: Mapped[str] = mapped_column(Text, default="")
    source_occurred_at: Mapped[datetime] = _source_occurred_at()


class KnownStaff(TenantScoped, Base):
    __tablename__ = "staff"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean)
    source_occurred_at: Mapped[datetime] = _source_occurred_at()
