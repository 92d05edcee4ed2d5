"""Cross-tenant work as the worker role: replace the policies that let anyone who set
``portico.system = on`` see every tenant's outbox rows and deliveries with a policy for
``portico_notify_worker`` only (kit.migrate), and keep the worker off the ledger.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from kit.migrate import from_worker_role_sql, to_worker_role_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WORKER_TABLES = ("outbox", "deliveries")


def upgrade() -> None:
    for statement in to_worker_role_sql("notify", WORKER_TABLES):
        op.execute(statement)


def downgrade() -> None:
    for statement in from_worker_role_sql("notify", WORKER_TABLES):
        op.execute(statement)
