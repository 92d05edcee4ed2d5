"""Tables of the gateway: the directory (tenants, staff, customers, contacts, units,
portal accounts, settings) and authentication state (sessions, refresh tokens)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
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
    version: Mapped[int] = mapped_column(Integer, default=1)
    __table_args__ = (UniqueConstraint("tenant_id"),)


class StaffUser(TenantScoped, Base):
    __tablename__ = "staff_users"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)


class Customer(TenantScoped, Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    account_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    require_invoice_authorization: Mapped[bool] = mapped_column(Boolean, default=False)
    portal_features: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Contact(TenantScoped, Base):
    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, ForeignKey("customers.id"), index=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    notify_by: Mapped[str] = mapped_column(String(8), default="email")
    is_team_manager: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Unit(TenantScoped, Base):
    __tablename__ = "units"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, ForeignKey("customers.id"), index=True)
    make: Mapped[str] = mapped_column(String(100), default="")
    model: Mapped[str] = mapped_column(String(100), default="")
    serial: Mapped[str] = mapped_column(String(64), default="")
    fleet_number: Mapped[str] = mapped_column(String(64), default="")
    year: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PortalAccount(TenantScoped, Base):
    __tablename__ = "portal_accounts"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    customer_id: Mapped[str] = mapped_column(UUID, ForeignKey("customers.id"), index=True)
    contact_id: Mapped[str | None] = mapped_column(UUID, ForeignKey("contacts.id"), nullable=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(200))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC")
    permissions: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)
    unit_ids: Mapped[list[str] | None] = mapped_column(ARRAY(UUID), nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)


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


class RefreshToken(TenantScoped, Base):
    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(UUID, primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(UUID, ForeignKey("auth_sessions.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RateLimit(Base):
    """Fixed-window counters for login attempts, shared by every gateway copy.
    Keys are hashed account/address identifiers, not tenant data."""

    __tablename__ = "rate_limits"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    count: Mapped[int] = mapped_column(Integer, default=0)
