"""read views: quote requests, comments and attachments as clients read them

Kept from the owning services' events (services.gateway.views); a row changes only for
a newer version. ``view_builds`` records each view's last rebuild per tenant.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from kit.migrate import enable_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

S = "gateway"
UUID = sa.Uuid(as_uuid=False)
WHEN = sa.DateTime(timezone=True)


def _index(table: str, *columns: str) -> None:
    op.create_index(f"ix_{table}_{'_'.join(columns)}", table, list(columns), schema=S)


def upgrade() -> None:
    op.create_table(
        "quote_request_views",
        sa.Column("id", UUID, nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", UUID, nullable=False),
        sa.Column("unit_id", UUID, nullable=True),
        sa.Column("work_order_id", UUID, nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("created_by", UUID, nullable=False),
        sa.Column("created_by_name", sa.String(length=200), nullable=False),
        sa.Column("created_by_customer", sa.Boolean(), nullable=False),
        sa.Column("visible_to_customer", sa.Boolean(), nullable=False),
        sa.Column("assigned_to", UUID, nullable=True),
        sa.Column("po_number", sa.String(length=64), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decided_on_behalf", sa.Boolean(), nullable=False),
        sa.Column("decided_at", WHEN, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("source_at", WHEN, nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quote_request_views"),
        schema=S,
    )
    _index("quote_request_views", "tenant_id")
    _index("quote_request_views", "tenant_id", "created_at", "id")
    _index("quote_request_views", "tenant_id", "status")
    _index("quote_request_views", "tenant_id", "customer_id")

    op.create_table(
        "comment_views",
        sa.Column("id", UUID, nullable=False),
        sa.Column("record", sa.String(length=64), nullable=False),
        sa.Column("record_id", UUID, nullable=False),
        sa.Column("author_kind", sa.String(length=16), nullable=False),
        sa.Column("author_id", UUID, nullable=True),
        sa.Column("author_name", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("deleted_at", WHEN, nullable=True),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_comment_views"),
        schema=S,
    )
    _index("comment_views", "tenant_id")
    _index("comment_views", "tenant_id", "record", "record_id", "created_at", "id")

    op.create_table(
        "attachment_views",
        sa.Column("id", UUID, nullable=False),
        sa.Column("record", sa.String(length=64), nullable=False),
        sa.Column("record_id", UUID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by_name", sa.String(length=200), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_attachment_views"),
        schema=S,
    )
    _index("attachment_views", "tenant_id")
    _index("attachment_views", "tenant_id", "record", "record_id", "created_at", "id")

    op.create_table(
        "view_builds",
        sa.Column("view", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", UUID, nullable=False),
        sa.Column("built_at", WHEN, nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("view", "tenant_id", name="pk_view_builds"),
        schema=S,
    )
    enable_rls(op, S, ["quote_request_views", "comment_views", "attachment_views", "view_builds"])


def downgrade() -> None:
    for table in ("view_builds", "attachment_views", "comment_views", "quote_request_views"):
        op.drop_table(table, schema=S)
