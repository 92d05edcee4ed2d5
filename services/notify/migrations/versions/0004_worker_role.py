"""Cross-tenant work as the worker role: replace the policies that let anyone who set
``portico.system = on`` see every tenant's outbox rows and deliveries with a policy for
``portico_notify_worker`` only (kit.migrate.rls_sql), and take the worker role off the
ledger it never needs.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from kit.migrate import rls_sql, worker_role

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WORKER_TABLES = ("outbox", "deliveries")
OLD_RULE = (
    "(tenant_id = nullif(current_setting('portico.tenant_id', true), '')::uuid"
    " or current_setting('portico.system', true) = 'on')"
)


def upgrade() -> None:
    for table in WORKER_TABLES:
        for statement in rls_sql("notify", table, system_ok=True):
            op.execute(statement)
    for statement in rls_sql("notify", "processed_events"):
        op.execute(statement)
    op.execute(f'revoke all on "notify"."processed_events" from "{worker_role("notify")}"')


def downgrade() -> None:
    for table in (*WORKER_TABLES, "processed_events"):
        op.execute(f'drop policy if exists worker_access on "notify"."{table}"')
        op.execute(f'drop policy if exists tenant_isolation on "notify"."{table}"')
        op.execute(
            f'create policy tenant_isolation on "notify"."{table}"'
            f" using {OLD_RULE} with check {OLD_RULE}"
        )
