"""Schemas, roles, Alembic migrations and row-level security, per service.

Migrations run as the admin (owner) role; each service then connects as
``portico_<service>``, which owns nothing, has only DML rights on its own schema and
no BYPASSRLS, so the tenant policies always apply to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from kit.db import sa_url

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def ensure_database(admin_url: str) -> None:
    url = make_url(sa_url(admin_url))
    maintenance = url.set(database="postgres")
    engine = create_engine(
        maintenance, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("select 1 from pg_database where datname = :n"), {"n": url.database}
            ).first()
            if not exists:
                conn.execute(text(f'create database "{url.database}"'))
    finally:
        engine.dispose()


def ensure_role(admin_url: str, role: str, password: str | None = None) -> None:
    engine = create_engine(sa_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("select 1 from pg_roles where rolname = :r"), {"r": role}
            ).first()
            verb = "alter" if exists else "create"
            pw = ""
            if password:
                pw = (
                    " password "
                    + conn.execute(text("select quote_literal(:p)"), {"p": password}).scalar_one()
                )
            conn.execute(
                text(
                    f'{verb} role "{role}" login nosuperuser nobypassrls nocreaterole nocreatedb{pw}'
                )
            )
    finally:
        engine.dispose()


def alembic_config(service: str, admin_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sa_url(admin_url).replace("%", "%%"))
    cfg.attributes["service"] = service
    return cfg


def worker_role(service: str) -> str:
    """The role of a service's cross-tenant workers (outbox relay, delivery sweeper).

    Row-level security lets it see every tenant's rows of the few infrastructure tables
    granted to it, and nothing else: no business table is granted, and the ordinary
    service role cannot become it (no membership), so a service connection can never
    switch tenant scoping off (a setting anyone could set used to do that).
    """
    return f"portico_{service}_worker"


def upgrade(
    service: str,
    admin_url: str,
    role_password: str | None = None,
    worker_password: str | None = None,
) -> None:
    role = f"portico_{service}"
    ensure_role(admin_url, role, role_password)
    # Before the migrations: their policies name this role. Same password as the service
    # role unless one is given, so the worker URL can be derived from the service URL.
    ensure_role(admin_url, worker_role(service), worker_password or role_password)
    engine = create_engine(sa_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'create schema if not exists "{service}"'))
    finally:
        engine.dispose()
    command.upgrade(alembic_config(service, admin_url), "head")
    grant(service, admin_url)


def grant(service: str, admin_url: str) -> None:
    role = f"portico_{service}"
    engine = create_engine(sa_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'grant usage on schema "{service}" to "{role}"'))
            conn.execute(text(f'grant usage on schema "{service}" to "{worker_role(service)}"'))
            conn.execute(
                text(
                    f'grant select, insert, update, delete on all tables in schema "{service}" to "{role}"'
                )
            )
            conn.execute(
                text(f'grant usage, select on all sequences in schema "{service}" to "{role}"')
            )
            conn.execute(text(f'revoke all on "{service}".alembic_version from "{role}"'))
    finally:
        engine.dispose()


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``."""
    from alembic import context

    cfg = context.config
    schema = metadata.schema
    engine = create_engine(cfg.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            version_table_schema=schema,
            include_schemas=False,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


def rls_sql(
    schema: str, table: str, *, system_ok: bool = False, worker_privileges: str = "select, update"
) -> list[str]:
    """Statements that put a table under tenant row-level security.

    Every role sees only the rows of the tenant its transaction names
    (``portico.tenant_id``). ``system_ok`` marks an infrastructure table that the
    service's worker role (:func:`worker_role`) may read and update across tenants: it
    gets ``worker_privileges`` on this table and a policy of its own. Business tables
    never allow it.
    """
    tenant = "(tenant_id = nullif(current_setting('portico.tenant_id', true), '')::uuid)"
    worker = worker_role(schema)
    statements = [
        f'alter table "{schema}"."{table}" enable row level security',
        f'alter table "{schema}"."{table}" force row level security',
        f'drop policy if exists tenant_isolation on "{schema}"."{table}"',
        f'create policy tenant_isolation on "{schema}"."{table}" using {tenant} with check {tenant}',
        f'drop policy if exists worker_access on "{schema}"."{table}"',
    ]
    if system_ok:
        statements += [
            f'create policy worker_access on "{schema}"."{table}" to "{worker}"'
            " using (true) with check (true)",
            f'grant {worker_privileges} on "{schema}"."{table}" to "{worker}"',
        ]
    return statements


# What policies said before the worker roles (migrations that move off it restore it).
_SETTING_RULE = (
    "(tenant_id = nullif(current_setting('portico.tenant_id', true), '')::uuid"
    " or current_setting('portico.system', true) = 'on')"
)


def to_worker_role_sql(schema: str, worker_tables: tuple[str, ...]) -> list[str]:
    """Move a schema made before the worker roles onto them: ``worker_tables`` get the
    worker's policy and grants, the ledger (``processed_events``) loses the old
    ``portico.system`` escape and the worker role never touches it."""
    statements = [s for t in worker_tables for s in rls_sql(schema, t, system_ok=True)]
    statements += rls_sql(schema, "processed_events")
    statements.append(f'revoke all on "{schema}"."processed_events" from "{worker_role(schema)}"')
    return statements


def from_worker_role_sql(schema: str, worker_tables: tuple[str, ...]) -> list[str]:
    """Undo :func:`to_worker_role_sql`: the old policies, ``portico.system`` and all."""
    statements = []
    for table in (*worker_tables, "processed_events"):
        statements += [
            f'drop policy if exists worker_access on "{schema}"."{table}"',
            f'drop policy if exists tenant_isolation on "{schema}"."{table}"',
            f'create policy tenant_isolation on "{schema}"."{table}"'
            f" using {_SETTING_RULE} with check {_SETTING_RULE}",
        ]
    return statements


# --- Helpers for a service's migrations ---------------------------------------------
# A new service's first migration holds only its own tables; the infrastructure every
# service has (outbox, processed-events ledger), tenant row-level security and
# tenant-carrying foreign keys come from here. Older migrations spelled these out and
# stay as they are (history); the result is the same (kit/tests/test_migrate.py).


def create_infra_tables(op: Any, schema: str) -> None:
    """The outbox (with its index of unpublished rows) and the processed-events ledger of
    ``schema``, under tenant row-level security: the worker role may read and mark the
    outbox across tenants (the relay) and never touches the ledger."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("type", sa.String(length=120), nullable=False),
        sa.Column("envelope", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        schema=schema,
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["created_at"],
        unique=False,
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("handler", sa.String(length=120), nullable=False),
        sa.Column("event_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("tenant_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handler", "event_id", name="pk_processed_events"),
        schema=schema,
    )
    enable_rls(op, schema, ("processed_events",), worker_tables=("outbox",))


def drop_infra_tables(op: Any, schema: str) -> None:
    """Undo :func:`create_infra_tables` (a first migration's downgrade)."""
    op.drop_table("processed_events", schema=schema)
    op.drop_index("ix_outbox_unpublished", table_name="outbox", schema=schema)
    op.drop_table("outbox", schema=schema)


def enable_rls(
    op: Any,
    schema: str,
    tables: Iterable[str],
    *,
    worker_tables: Iterable[str] = (),
    worker_privileges: str = "select, update",
) -> None:
    """Put ``tables`` under tenant row-level security (:func:`rls_sql`); ``worker_tables``
    are infrastructure tables the worker role may also use across tenants (the outbox, a
    delivery queue), with ``worker_privileges``."""
    for table in tables:
        for statement in rls_sql(schema, table):
            op.execute(statement)
    for table in worker_tables:
        for statement in rls_sql(
            schema, table, system_ok=True, worker_privileges=worker_privileges
        ):
            op.execute(statement)


def tenant_key(op: Any, schema: str, table: str) -> None:
    """The unique ``(tenant_id, id)`` a tenant-carrying foreign key points at."""
    op.create_unique_constraint(
        f"uq_{table}_tenant_id_id", table, ["tenant_id", "id"], schema=schema
    )


def tenant_fk(
    op: Any, schema: str, table: str, column: str, referent: str, *, ondelete: str | None = None
) -> None:
    """``table (tenant_id, column) -> referent (tenant_id, id)``. PostgreSQL checks
    foreign keys without row-level security, so a key on ``id`` alone could point into
    another tenant; carrying the tenant makes that impossible. ``referent`` needs
    :func:`tenant_key` first."""
    op.create_foreign_key(
        f"fk_{table}_{column}_tenant_{referent}"[:63],
        table,
        referent,
        ["tenant_id", column],
        ["tenant_id", "id"],
        source_schema=schema,
        referent_schema=schema,
        ondelete=ondelete,
    )
