"""Email attachments: a delivery keeps the blob references it sends as MIME parts

``attachments`` is a JSON list of ``{"sha256", "filename", "content_type"}`` naming
files in the blob store (services.notify.attachments); null when there are none.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:20:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "notify"


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("attachments", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("deliveries", "attachments", schema=SCHEMA)
