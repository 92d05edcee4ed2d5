"""idempotency keys: the first answer to a write sent with an ``Idempotency-Key``

One row per (tenant, caller, route, key): the hash of the request it was first used
with, whether that request is still running (``in_progress``, with a lease so that a
crashed gateway does not hold the key forever) or ``done``, and the stored response
that every later request with the same key and the same request gets back.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from kit.migrate import enable_rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

S = "gateway"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", JSONB(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "caller", "route", "key", name=op.f("pk_idempotency_keys")
        ),
        schema=S,
    )
    op.create_index(
        op.f("ix_idempotency_keys_tenant_id_expires_at"),
        "idempotency_keys",
        ["tenant_id", "expires_at"],
        unique=False,
        schema=S,
    )
    enable_rls(op, S, ["idempotency_keys"])


def downgrade() -> None:
    op.drop_index(
        op.f("ix_idempotency_keys_tenant_id_expires_at"), table_name="idempotency_keys", schema=S
    )
    op.drop_table("idempotency_keys", schema=S)
