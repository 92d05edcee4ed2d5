"""Schemas, roles, Alembic migrations and row-level security, per service.

Migrations run as the admin (owner) role; each service then connects as
``portico_<service>``, which owns nothing, has only DML rights on its own schema and
no BYPASSRLS, so the tenant policies always apply to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, create_engine, text
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
