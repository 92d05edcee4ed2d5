"""In-app feed, tenant settings, messages rendered after the event's transaction

``notifications`` is the in-app feed (a staff member's, or a customer's read by its
portal accounts) and ``notification_reads`` each reader's marks, bound to the item by
``(tenant_id, notification_id)`` so a mark can never point into another tenant.
``tenant_settings`` keeps ``notify_new_request_roles`` from ``directory.settings.updated``.
Deliveries now store the template ``context`` and are rendered when sent (tenant
overrides no longer run inside the event transaction); ``template_error`` records an
override that failed or broke a limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:10:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from kit.migrate import rls_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "notify"
UUID = sa.Uuid(as_uuid=False)


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("context", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema=SCHEMA,
    )
    op.add_column(
        "deliveries", sa.Column("template_error", sa.Text(), nullable=True), schema=SCHEMA
    )

    op.create_table(
        "tenant_settings",
        sa.Column("id", UUID, nullable=False),
        sa.Column(
            "notify_new_request_roles", postgresql.ARRAY(sa.String(length=32)), nullable=False
        ),
        sa.Column("source_occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.CheckConstraint("tenant_id = id", name=op.f("ck_tenant_settings_is_own_tenant")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant_settings")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_tenant_settings_tenant_id"), "tenant_settings", ["tenant_id"], schema=SCHEMA
    )

    op.create_table(
        "notifications",
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
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.CheckConstraint(
            "recipient_kind in ('staff', 'customer')",
            name=op.f("ck_notifications_recipient_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "tenant_id",
            "event_id",
            "recipient_kind",
            "recipient_id",
            name=op.f("uq_notifications_tenant_id_event_id_recipient_kind_recipient_id"),
        ),
        sa.UniqueConstraint("tenant_id", "id", name=op.f("uq_notifications_tenant_id_id")),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_notifications_feed",
        "notifications",
        ["tenant_id", "recipient_kind", "recipient_id", "created_at"],
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_notifications_tenant_id"), "notifications", ["tenant_id"], schema=SCHEMA
    )

    op.create_table(
        "notification_reads",
        sa.Column("notification_id", UUID, nullable=False),
        sa.Column("reader_kind", sa.String(length=16), nullable=False),
        sa.Column("reader_id", UUID, nullable=False),
        sa.Column(
            "read_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.CheckConstraint(
            "reader_kind in ('staff', 'portal')", name=op.f("ck_notification_reads_reader_kind")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "notification_id"],
            [f"{SCHEMA}.notifications.tenant_id", f"{SCHEMA}.notifications.id"],
            name=op.f("fk_notification_reads_tenant_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "notification_id", "reader_kind", "reader_id", name=op.f("pk_notification_reads")
        ),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_notification_reads_tenant_id"),
        "notification_reads",
        ["tenant_id"],
        schema=SCHEMA,
    )
    for table in ("tenant_settings", "notifications", "notification_reads"):
        for statement in rls_sql(SCHEMA, table):
            op.execute(statement)


def downgrade() -> None:
    op.drop_table("notification_reads", schema=SCHEMA)
    op.drop_table("notifications", schema=SCHEMA)
    op.drop_table("tenant_settings", schema=SCHEMA)
    op.drop_column("deliveries", "template_error", schema=SCHEMA)
    op.drop_column("deliveries", "context", schema=SCHEMA)
