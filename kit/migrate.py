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


def upgrade(service: str, admin_url: str, role_password: str | None = None) -> None:
    role = f"portico_{service}"
    ensure_role(admin_url, role, role_password)
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


def rls_sql(schema: str, table: str, *, system_ok: bool = False) -> list[str]:
    """Statements that put a table under tenant row-level security.

    ``system_ok`` lets the cross-tenant workers (outbox relay, delivery sweeper) read
    infrastructure tables; business tables never allow it.
    """
    tenant = "tenant_id = nullif(current_setting('portico.tenant_id', true), '')::uuid"
    rule = (
        f"({tenant} or current_setting('portico.system', true) = 'on')"
        if system_ok
        else f"({tenant})"
    )
    return [
        f'alter table "{schema}"."{table}" enable row level security',
        f'alter table "{schema}"."{table}" force row level security',
        f'drop policy if exists tenant_isolation on "{schema}"."{table}"',
        f'create policy tenant_isolation on "{schema}"."{table}" using {rule} with check {rule}',
    ]
