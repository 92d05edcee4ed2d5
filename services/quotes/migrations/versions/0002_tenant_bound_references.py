"""Tenant-bound foreign keys; local copies of directory facts

PostgreSQL checks foreign keys without row-level security, so ``comments`` and
``attachments`` referenced a quote request by ``id`` alone and could point into another
tenant. They now reference ``quote_requests (tenant_id, id)``.

``customers``, ``units`` and ``staff`` are copies of directory facts kept from
``directory.*`` events; the service checks every reference it is sent against them.
They start empty: facts published before the quotes queue existed are not replayed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:00:00
"""

import sqlalchemy as sa
from alembic import op

from kit.migrate import rls_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "quotes"
CHILDREN = ("comments", "attachments")
COPIES = ("customers", "units", "staff")


def _copy_columns() -> list[sa.Column]:
    return [
        sa.Column("source_occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
    ]


def upgrade() -> None:
    op.create_unique_constraint(
        op.f("uq_quote_requests_tenant_id_id"), "quote_requests", ["tenant_id", "id"], schema=SCHEMA
    )
    for table in CHILDREN:
        op.drop_constraint(
            f"fk_{table}_quote_request_id_quote_requests", table, type_="foreignkey", schema=SCHEMA
        )
        op.create_foreign_key(
            op.f(f"fk_{table}_tenant_id_quote_requests"),
            table,
            "quote_requests",
            ["tenant_id", "quote_request_id"],
            ["tenant_id", "id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
        )

    op.create_table(
        "customers",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        *_copy_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        schema=SCHEMA,
    )
    op.create_table(
        "units",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("customer_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        *_copy_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_units")),
        schema=SCHEMA,
    )
    op.create_table(
        "staff",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        *_copy_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff")),
        schema=SCHEMA,
    )
    for table in COPIES:
        op.create_index(
            op.f(f"ix_{table}_tenant_id"), table, ["tenant_id"], unique=False, schema=SCHEMA
        )
        for statement in rls_sql(SCHEMA, table):
            op.execute(statement)


def downgrade() -> None:
    for table in reversed(COPIES):
        op.drop_index(op.f(f"ix_{table}_tenant_id"), table_name=table, schema=SCHEMA)
        op.drop_table(table, schema=SCHEMA)
    for table in CHILDREN:
        op.drop_constraint(
            f"fk_{table}_tenant_id_quote_requests", table, type_="foreignkey", schema=SCHEMA
        )
        op.create_foreign_key(
            op.f(f"fk_{table}_quote_request_id_quote_requests"),
            table,
            "quote_requests",
            ["quote_request_id"],
            ["id"],
            source_schema=SCHEMA,
            referent_schema=SCHEMA,
        )
    op.drop_constraint("uq_quote_requests_tenant_id_id", "quote_requests", schema=SCHEMA)
