"""Tables of the notify service (schema ``notify``).

``tenants``, ``customers``, ``contacts`` and ``staff`` are local copies of directory
facts, kept from ``directory.*`` events (rule 1: no reads of another service's
tables). Each copy remembers the ``occurred_at`` of the fact it holds, so an older
event arriving late never overwrites newer data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import TenantScoped, infra_tables, make_metadata, new_id, utcnow

metadata = make_metadata("notify")
outbox, processed_events = infra_tables(metadata)
UUID = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = metadata


def _source_occurred_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True))


class Tenant(TenantScoped, Base):
    """A shop. Its id *is* the tenant, so ``tenant_id == id``."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    slug: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    source_occurred_at: Mapped[datetime] = _source_occurred_at()
    __table_args__ = (CheckConstraint("tenant_id = id", name="is_own_tenant"),)


class Customer(TenantScoped, Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source_occurred_at: Mapped[datetime] = _source_occurred_at()


class Contact(TenantScoped, Base):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(UUID)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(40), nullable=True)
    notify_by: Mapped[str] = mapped_column(String(8))
    is_team_manager: Mapped[bool] = mapped_column(Boolean, default=False)
    source_occurred_at: Mapped[datetime] = _source_occurred_at()
    __table_args__ = (
        Index("ix_contacts_customer", "tenant_id", "customer_id"),
        CheckConstraint("notify_by in ('email', 'sms', 'both', 'none')", name="notify_by"),
    )


class StaffMember(TenantScoped, Base):
    __tablename__ = "staff"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    source_occurred_at: Mapped[datetime] = _source_occurred_at()


class Delivery(TenantScoped, Base):
    """One message to one recipient over one channel, and how sending it went.

    ``delivery_key`` (event, recipient, channel) is unique: an event handled twice
    never yields a second message. ``lease_until`` marks a claim by a sender; a row
    still ``sending`` after its lease is retried by the sweep.
    """

    __tablename__ = "deliveries"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    event_id: Mapped[str] = mapped_column(UUID)
    event_type: Mapped[str] = mapped_column(String(120))
    delivery_key: Mapped[str] = mapped_column(String(64), unique=True)
    recipient_kind: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[str] = mapped_column(UUID)
    channel: Mapped[str] = mapped_column(String(8))
    address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    body_html: Mapped[str | None] = mapped_column(Text, nullable=True)
    sms_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the templates see, stored with the row so the message is rendered after the
    # event's transaction (when sending); cleared once rendered.
    context: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # Files sent with an email: blob references (services.notify.attachments), or null.
    attachments: Mapped[list[dict[str, str]] | None] = mapped_column(JSONB, nullable=True)
    # A tenant override that failed or broke a limit (the built-in template was used).
    template_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("now()")
    )
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("now()")
    )
    __table_args__ = (
        CheckConstraint("status in ('pending', 'sending', 'sent', 'failed')", name="status"),
        CheckConstraint("channel in ('email', 'sms')", name="channel"),
        CheckConstraint("recipient_kind in ('contact', 'staff', 'portal')", name="recipient_kind"),
        Index("ix_deliveries_list", "tenant_id", "created_at", "id"),
        Index("ix_deliveries_event", "tenant_id", "event_id"),
        # The sweep only looks at unfinished rows: keep that lookup small.
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status in ('pending', 'sending')"),
        ),
    )


class TemplateOverride(TenantScoped, Base):
    """A tenant's own source for one part of one event type's message."""

    __tablename__ = "template_overrides"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    event_type: Mapped[str] = mapped_column(String(120))
    part: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_type", "part"),
        CheckConstraint("part in ('subject', 'text', 'html', 'sms')", name="part"),
    )


class TenantSettings(TenantScoped, Base):
    """The tenant settings notify acts on, from ``directory.settings.updated``."""

    __tablename__ = "tenant_settings"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)  # the tenant's id
    notify_new_request_roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    source_occurred_at: Mapped[datetime] = _source_occurred_at()
    __table_args__ = (CheckConstraint("tenant_id = id", name="is_own_tenant"),)


class Notification(TenantScoped, Base):
    """One item of an in-app feed: a staff member's, or a customer's (read by its portal
    accounts; ``unit_id`` narrows it for accounts restricted to some units)."""

    __tablename__ = "notifications"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    recipient_kind: Mapped[str] = mapped_column(String(16))
    recipient_id: Mapped[str] = mapped_column(UUID)
    unit_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    event_id: Mapped[str] = mapped_column(UUID)
    event_type: Mapped[str] = mapped_column(String(120))
    record_type: Mapped[str] = mapped_column(String(60))
    record_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("now()")
    )
    __table_args__ = (
        CheckConstraint("recipient_kind in ('staff', 'customer')", name="recipient_kind"),
        # an event handled twice never yields a second item
        UniqueConstraint("tenant_id", "event_id", "recipient_kind", "recipient_id"),
        UniqueConstraint("tenant_id", "id"),  # target of the readers' composite key
        Index("ix_notifications_feed", "tenant_id", "recipient_kind", "recipient_id", "created_at"),
    )


class NotificationRead(TenantScoped, Base):
    """One reader's mark on one item (each portal account of a customer reads for itself)."""

    __tablename__ = "notification_reads"
    notification_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    reader_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    reader_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    read_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=text("now()")
    )
    __table_args__ = (
        CheckConstraint("reader_kind in ('staff', 'portal')", name="reader_kind"),
        ForeignKeyConstraint(
            ["tenant_id", "notification_id"],
            ["notifications.tenant_id", "notifications.id"],
            ondelete="CASCADE",
        ),
    )
