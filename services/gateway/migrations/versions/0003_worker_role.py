"""Cross-tenant work as the worker role: replace the policies that let anyone who set
``portico.system = on`` see every tenant's outbox rows with a policy for
``portico_gateway_worker`` only (kit.migrate.rls_sql), and take the worker role off the
ledger it never needs.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from kit.migrate import rls_sql, worker_role

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WORKER_TABLES = ("outbox",)
OLD_RULE = (
    "(tenant_id = nullif(current_setting('portico.tenant_id', true), '')::uuid"
    " or current_setting('portico.system', true) = 'on')"
)


def upgrade() -> None:
    for table in WORKER_TABLES:
        for statement in rls_sql("gateway", table, system_ok=True):
            op.execute(statement)
    for statement in rls_sql("gateway", "processed_events"):
        op.execute(statement)
    op.execute(f'revoke all on "gateway"."processed_events" from "{worker_role("gateway")}"')


def downgrade() -> None:
    for table in (*WORKER_TABLES, "processed_events"):
        op.execute(f'drop policy if exists worker_access on "gateway"."{table}"')
        op.execute(f'drop policy if exists tenant_isolation on "gateway"."{table}"')
        op.execute(
            f'create policy tenant_isolation on "gateway"."{table}"'
            f" using {OLD_RULE} with check {OLD_RULE}"
        )
