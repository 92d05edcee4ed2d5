"""notification views: the in-app feed as clients read it (``GET /notifications``)

Kept from notify's ``notification.created`` and ``notification.read`` events
(services.gateway.feed): ``notification_views`` holds each item of a person's feed,
``notification_read_views`` each reader's mark on an item. Both under tenant row-level
security. The feed index reads one person's items newest first, for the unread part of
a page and then the read part (each an index range, no sort of the whole feed).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from kit.migrate import enable_rls

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

S = "gateway"
UUID = sa.Uuid(as_uuid=False)
WHEN = sa.DateTime(timezone=True)
TABLES = ("notification_views", "notification_read_views")


def upgrade() -> None:
    op.create_table(
        "notification_views",
        sa.Column("id", UUID, nullable=False),
        sa.Column("recipient_kind", sa.String(length=16), nullable=False),
        sa.Column("recipient_id", UUID, nullable=False),
        sa.Column("unit_id", UUID, nullable=True),
        sa.Column("event_id", UUID, nullable=False),
        sa.Column("event_type", sa.String(length=120), nullable=False),
        sa.Column("record_type", sa.String(length=60), nullable=False),
        sa.Column("record_id", UUID, nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source_at", WHEN, nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notification_views"),
        schema=S,
    )
    op.create_index(
        "ix_notification_views_tenant_id", "notification_views", ["tenant_id"], schema=S
    )
    op.create_index(
        "ix_notification_views_feed",
        "notification_views",
        ["tenant_id", "recipient_kind", "recipient_id", "created_at", "id"],
        schema=S,
    )
    op.create_table(
        "notification_read_views",
        sa.Column("notification_id", UUID, nullable=False),
        sa.Column("reader_kind", sa.String(length=16), nullable=False),
        sa.Column("reader_id", UUID, nullable=False),
        sa.Column("read_at", WHEN, nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint(
            "notification_id", "reader_kind", "reader_id", name="pk_notification_read_views"
        ),
        schema=S,
    )
    op.create_index(
        "ix_notification_read_views_tenant_id",
        "notification_read_views",
        ["tenant_id"],
        schema=S,
    )
    enable_rls(op, S, TABLES)


def downgrade() -> None:
    op.drop_table("notification_read_views", schema=S)
    op.drop_table("notification_views", schema=S)
