"""event stream: the stream log, each tenant's last stream id, and stream tickets

``stream_events`` is written once per event by the gateway's consumer and read by every
replica's live fan-out and by Last-Event-ID resumes; ``stream_heads`` hands out each
tenant's stream ids in commit order; ``stream_tickets`` holds the hashes of single-use
EventSource tickets. Every table is under tenant row-level security.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from kit.migrate import enable_rls

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "gateway"
UUID = sa.Uuid(as_uuid=False)
WHEN = sa.DateTime(timezone=True)
TABLES = ("stream_heads", "stream_events", "stream_tickets")


def upgrade() -> None:
    op.create_table(
        "stream_heads",
        sa.Column("tenant_id", UUID, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_stream_heads"),
        schema=S,
    )
    op.create_table(
        "stream_events",
        sa.Column("tenant_id", UUID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", UUID, nullable=False),
        sa.Column("type", sa.String(length=120), nullable=False),
        sa.Column("occurred_at", sa.String(length=64), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_stream_events"),
        sa.UniqueConstraint("tenant_id", "event_id", name="uq_stream_events_tenant_id_event_id"),
        schema=S,
    )
    op.create_index(
        "ix_stream_events_tenant_id_created_at",
        "stream_events",
        ["tenant_id", "created_at"],
        schema=S,
    )
    op.create_table(
        "stream_tickets",
        sa.Column("tenant_id", UUID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("session_id", UUID, nullable=False),
        sa.Column("claims", JSONB(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("used_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "token_hash", name="pk_stream_tickets"),
        schema=S,
    )
    enable_rls(op, S, TABLES)


def downgrade() -> None:
    op.drop_table("stream_tickets", schema=S)
    op.drop_index("ix_stream_events_tenant_id_created_at", table_name="stream_events", schema=S)
    op.drop_table("stream_events", schema=S)
    op.drop_table("stream_heads", schema=S)
