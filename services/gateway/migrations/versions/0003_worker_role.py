"""Cross-tenant work as the worker role: replace the policies that let anyone who set
``portico.system = on`` see every tenant's outbox rows with a policy for
``portico_gateway_worker`` only (kit.migrate), and keep the worker off the ledger.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from kit.migrate import from_worker_role_sql, to_worker_role_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WORKER_TABLES = ("outbox",)


def upgrade() -> None:
    for statement in to_worker_role_sql("gateway", WORKER_TABLES):
        op.execute(statement)


def downgrade() -> None:
    for statement in from_worker_role_sql("gateway", WORKER_TABLES):
        op.execute(statement)
