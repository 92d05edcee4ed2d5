"""Tables of the in-app feed's view (``GET /notifications``), on the gateway's metadata.

Kept from notify's private events by :mod:`services.gateway.feed`; notify stays the only
writer of the feed (``POST /notifications/{id}/read`` and ``read-all`` go to it by RPC).

- ``notification_views``: one row per item of a person's feed: a staff member's
  (``recipient_kind = 'staff'``) or a customer's (``'customer'``, read by each of its
  portal accounts; ``unit_id`` narrows it for accounts restricted to some units). Items
  never change once stored; ``version`` guards a later change all the same.
- ``notification_read_views``: one reader's mark on one item (a staff member, or one
  portal account: each account of a customer reads for itself). A mark is never undone
  and keeps the earliest ``read_at``; it may arrive before its item (no foreign key).

Both are tenant-scoped under row-level security (migration 0007).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from kit.db import TenantScoped
from services.gateway.models import Base

UUID = Uuid(as_uuid=False)


class NotificationView(TenantScoped, Base):
    __tablename__ = "notification_views"
    id: Mapped[str] = mapped_column(UUID, primary_key=True)
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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    source_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        # one person's feed, newest first: the page and the unread count read one range
        Index(
            "ix_notification_views_feed",
            "tenant_id",
            "recipient_kind",
            "recipient_id",
            "created_at",
            "id",
        ),
    )


class NotificationReadView(TenantScoped, Base):
    __tablename__ = "notification_read_views"
    notification_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    reader_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    reader_id: Mapped[str] = mapped_column(UUID, primary_key=True)
    read_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
