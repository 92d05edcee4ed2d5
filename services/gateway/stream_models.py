"""Tables of the live event stream (``GET /events/stream``), on the gateway's metadata.

- ``stream_heads``: one row per tenant, the last stream id given out. Taking the next id
  locks the tenant's row until the appending transaction commits, so a tenant's events
  commit in stream-id order: a client that saw id N never misses an id below N that
  commits later (the Last-Event-ID resume and the live fan-out both rely on it).
- ``stream_events``: the stream log, one row per event (written once, by whichever
  gateway replica's consumer took it), kept for the retention window.
- ``stream_tickets``: single-use, short-lived tickets for ``EventSource`` (which cannot
  send headers); only the SHA-256 of the secret is stored.

All three are tenant-scoped under row-level security (migration 0006).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, String, UniqueConstraint, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kit.db import TenantScoped, utcnow
from services.gateway.models import Base

UUID = Uuid(as_uuid=False)


class StreamHead(TenantScoped, Base):
    __tablename__ = "stream_heads"
    tenant_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class StreamEvent(TenantScoped, Base):
    __tablename__ = "stream_events"
    tenant_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[str] = mapped_column(UUID)
    type: Mapped[str] = mapped_column(String(120))
    occurred_at: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id"),
        # retention: each tenant's expired rows are one index range
        Index("ix_stream_events_tenant_id_created_at", "tenant_id", "created_at"),
    )


class StreamTicket(TenantScoped, Base):
    __tablename__ = "stream_tickets"
    tenant_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(UUID)
    claims: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
