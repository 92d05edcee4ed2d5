"""Tables of the gateway: the directory (tenants, staff, customers, contacts, units,
portal accounts, settings) and authentication state (sessions, refresh tokens,
invitation and password-reset links).

Every reference between business tables is composite, ``(tenant_id, x_id) ->
(tenant_id, id)``: PostgreSQL checks foreign keys without row-level security, so a
plain ``x_id`` could point at another tenant's row. The referenced tables carry a
unique ``(tenant_id, id)`` for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from kit.db import TenantScoped, infra_tables, make_metadata, new_id, utcnow

metadata = make_metadata("gateway")
outbox, processed_events = infra_tables(metadata)

UUID = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = metadata


class Tenant(Base):
    """Not tenant-scoped: the tenant itself. Created by the operator CLI."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TenantSettings(TenantScoped, Base):
    __tablename__ = "tenant_settings"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    features: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    approval_terms: Mapped[str] = mapped_column(Text, default="")
    work_order_token_hours: Mapped[int] = mapped_column(Integer, default=48)
    tax_rate_bp: Mapped[int] = mapped_column(Integer, default=0)  # basis points
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    reason_codes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    # Staff roles told about a new customer request (notify reads them from the
    # directory.settings.updated event).
    notify_new_request_roles: Mapped[list[str]] = mapped_column(
        ARRAY(String(32)), default=lambda: ["manager", "advisor"]
    )
    version: Mapped[int] = mapped_column(Integer, default=1)
    __table_args__ = (UniqueConstraint("tenant_id"),)


class StaffUser(TenantScoped, Base):
    __tablename__ = "staff_users"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    # None until the person accepts their invitation: nobody else ever sets it.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    @property
    def invitation_pending(self) -> bool:
        return self.password_hash is None


class Customer(TenantScoped, Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    account_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    require_invoice_authorization: Mapped[bool] = mapped_column(Boolean, default=False)
    portal_features: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "id"),)


def _refers(columns: list[str], table: str) -> ForeignKeyConstraint:
    """A tenant-bound reference: ``(tenant_id, <columns>) -> <table> (tenant_id, id)``."""
    return ForeignKeyConstraint(["tenant_id", *columns], [f"{table}.tenant_id", f"{table}.id"])


class Contact(TenantScoped, Base):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, index=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    notify_by: Mapped[str] = mapped_column(String(8), default="email")
    is_team_manager: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "id"), _refers(["customer_id"], "customers"))


class Unit(TenantScoped, Base):
    __tablename__ = "units"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, index=True)
    make: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(100), default="")
    serial: Mapped[str] = mapped_column(String(64), default="")
    fleet_number: Mapped[str] = mapped_column(String(64), default="")
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (_refers(["customer_id"], "customers"),)


class PortalAccount(TenantScoped, Base):
    __tablename__ = "portal_accounts"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, index=True)
    contact_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    email: Mapped[str] = mapped_column(String(320))
    # None until the person accepts their invitation: staff never set or see it.
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    unit_ids: Mapped[list[str] | None] = mapped_column(ARRAY(UUID), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        _refers(["customer_id"], "customers"),
        # MATCH SIMPLE: a null contact_id is not checked, a set one must be this tenant's.
        _refers(["contact_id"], "contacts"),
    )

    @property
    def invitation_pending(self) -> bool:
        return self.password_hash is None


class AuthSession(TenantScoped, Base):
    """A login: the family of its rotating refresh tokens. Access tokens carry its id
    (``sid``) and stop working as soon as it is revoked (logout, reuse, disabling)."""

    __tablename__ = "auth_sessions"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    subject_kind: Mapped[str] = mapped_column(String(16))  # staff | portal | preview
    subject_id: Mapped[str] = mapped_column(UUID, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    __table_args__ = (UniqueConstraint("tenant_id", "id"),)


class RefreshToken(TenantScoped, Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(UUID, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (_refers(["session_id"], "auth_sessions"),)


class LinkToken(TenantScoped, Base):
    """A single-use, expiring link mailed to one person: an invitation to set a first
    password, or a password reset. Only the hash of its secret is stored."""

    __tablename__ = "link_tokens"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    purpose: Mapped[str] = mapped_column(String(16))  # invitation | password_reset
    subject_kind: Mapped[str] = mapped_column(String(16))  # staff | portal
    subject_id: Mapped[str] = mapped_column(UUID, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateLimit(Base):
    """Fixed-window counters for login attempts, shared by every gateway copy.
    Keys are hashed account/address identifiers, not tenant data."""

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer, default=0)


class IdempotencyKey(TenantScoped, Base):
    """The first answer to a write sent with an ``Idempotency-Key`` header, kept until
    ``expires_at`` (``services.gateway.idempotency``). ``lease_until`` bounds how long an
    ``in_progress`` claim holds the key if its gateway dies mid-request."""

    __tablename__ = "idempotency_keys"
    # The key's scope is the primary key; tenant_id leads it (no separate index).
    tenant_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    caller: Mapped[str] = mapped_column(String(64), primary_key=True)  # kind:id
    route: Mapped[str] = mapped_column(String(200), primary_key=True)  # "POST /x/{id}"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # in_progress | done
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headers: Mapped[dict[str, str] | None] = mapped_column(JSONB, nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index(None, "tenant_id", "expires_at"),)


# --- read views (services.gateway.views) ------------------------------------------------
# Copies of what clients read, kept from the owning services' events (each event carries
# the record's full state after the change). A row changes only for a newer version, so
# a duplicate or late event is a no-op; the owning service stays the only writer of the
# data itself. ``source_at`` is the ``occurred_at`` of the event (or snapshot) applied.


class QuoteRequestView(TenantScoped, Base):
    __tablename__ = "quote_request_views"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[str] = mapped_column(UUID)
    unit_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    work_order_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(UUID)
    created_by_name: Mapped[str] = mapped_column(String(200), default="")
    created_by_customer: Mapped[bool] = mapped_column(Boolean)
    visible_to_customer: Mapped[bool] = mapped_column(Boolean)
    assigned_to: Mapped[str | None] = mapped_column(UUID, nullable=True)
    po_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_on_behalf: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index(None, "tenant_id", "created_at", "id"),
        Index(None, "tenant_id", "status"),
        Index(None, "tenant_id", "customer_id"),
    )


class CommentView(TenantScoped, Base):
    """Comments of every discussion (``record`` names the kind: ``quote_request``)."""

    __tablename__ = "comment_views"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    record: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(UUID)
    author_kind: Mapped[str] = mapped_column(String(16), default="")
    author_id: Mapped[str | None] = mapped_column(UUID, nullable=True)
    author_name: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A delete may arrive before its comment: the row is then a tombstone the late
    # comment_added never revives.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    __table_args__ = (Index(None, "tenant_id", "record", "record_id", "created_at", "id"),)


class AttachmentView(TenantScoped, Base):
    """Files of every discussion: metadata only (the bytes are in the blob store)."""

    __tablename__ = "attachment_views"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
    record: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(UUID)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_by_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index(None, "tenant_id", "record", "record_id", "created_at", "id"),)


class ViewBuild(TenantScoped, Base):
    """When each view of a tenant was last rebuilt from its owner's snapshot. A tenant
    without a row has never been built, and the gateway catches it up by itself."""

    __tablename__ = "view_builds"
    view: Mapped[str] = mapped_column(String(64), primary_key=True)
    # part of the key, as TenantScoped's column (row-level security like every table)
    tenant_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    built_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer, default=0)
