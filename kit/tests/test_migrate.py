"""The migration helpers (kit.migrate) against real PostgreSQL: a new service's
infrastructure tables come out exactly as the existing services' history made them,
and a tenant-carrying foreign key refuses a reference into another tenant."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from kit.db import sa_url
from kit.migrate import (
    create_infra_tables,
    drop_infra_tables,
    enable_rls,
    ensure_role,
    tenant_fk,
    tenant_key,
    worker_role,
)
from tests.support import scratch_database

INFRA = ("outbox", "processed_events")


@pytest.fixture(scope="module")
def admin() -> Iterator[str]:
    with scratch_database("quotes") as (admin_url, _urls):
        yield admin_url


@pytest.fixture
def schema(admin: str) -> Iterator[str]:
    """A fresh schema as a new service would have it, with its worker role."""
    name = f"mh_{uuid.uuid4().hex[:10]}"
    ensure_role(admin, worker_role(name))
    engine = create_engine(sa_url(admin), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'create schema "{name}"'))
        yield name
        with engine.connect() as conn:
            conn.execute(text(f'drop schema "{name}" cascade'))
            conn.execute(text(f'drop owned by "{worker_role(name)}"'))
            conn.execute(text(f'drop role "{worker_role(name)}"'))
    finally:
        engine.dispose()


def _migrate(admin: str, step: Any) -> None:
    engine = create_engine(sa_url(admin))
    try:
        with engine.begin() as conn:
            step(Operations(MigrationContext.configure(conn)))
    finally:
        engine.dispose()


def _catalogue(admin: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """What PostgreSQL says about the infrastructure tables of ``schema``, with the
    schema's name written as ``S`` so that two schemas compare."""
    queries = {
        "columns": "select table_name, column_name, data_type, is_nullable,"
        " character_maximum_length from information_schema.columns"
        " where table_schema = :s and table_name = any(:t)",
        "indexes": "select tablename, indexname, indexdef from pg_indexes"
        " where schemaname = :s and tablename = any(:t)",
        "rls": "select c.relname, c.relrowsecurity, c.relforcerowsecurity from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace where n.nspname = :s"
        " and c.relname = any(:t)",
        "policies": "select tablename, policyname, roles::text, cmd, qual, with_check"
        " from pg_policies where schemaname = :s and tablename = any(:t)",
        "worker_grants": "select table_name, privilege_type"
        " from information_schema.role_table_grants"
        " where table_schema = :s and table_name = any(:t) and grantee = :w",
    }
    engine = create_engine(sa_url(admin))
    try:
        with engine.connect() as conn:
            out = {}
            for key, sql in queries.items():
                rows = conn.execute(
                    text(sql), {"s": schema, "t": list(INFRA), "w": worker_role(schema)}
                ).all()
                out[key] = sorted(
                    tuple(str(v).replace(schema, "S") if v is not None else None for v in row)
                    for row in rows
                )
            return out
    finally:
        engine.dispose()


def test_infra_tables_are_what_the_services_history_made(admin: str, schema: str) -> None:
    _migrate(admin, lambda op: create_infra_tables(op, schema))
    fresh, history = _catalogue(admin, schema), _catalogue(admin, "quotes")
    assert fresh == history
    assert len(fresh["columns"]) == 11
    assert ("outbox", "SELECT") in fresh["worker_grants"]
    assert not [g for g in fresh["worker_grants"] if g[0] == "processed_events"]
    assert {p[:2] for p in fresh["policies"]} == {
        ("outbox", "tenant_isolation"),
        ("outbox", "worker_access"),
        ("processed_events", "tenant_isolation"),
    }
    _migrate(admin, lambda op: drop_infra_tables(op, schema))
    assert _catalogue(admin, schema)["columns"] == []


def test_tenant_fk_refuses_a_reference_into_another_tenant(admin: str, schema: str) -> None:
    def first_migration(op: Operations) -> None:
        uid = sa.Uuid(as_uuid=False)
        op.create_table(
            "jobs",
            sa.Column("id", uid, primary_key=True),
            sa.Column("tenant_id", uid, nullable=False),
            schema=schema,
        )
        op.create_table(
            "notes",
            sa.Column("id", uid, primary_key=True),
            sa.Column("tenant_id", uid, nullable=False),
            sa.Column("job_id", uid, nullable=False),
            schema=schema,
        )
        tenant_key(op, schema, "jobs")
        tenant_fk(op, schema, "notes", "job_id", "jobs", ondelete="CASCADE")
        enable_rls(op, schema, ("jobs", "notes"))

    _migrate(admin, first_migration)
    a, b, job = (str(uuid.uuid4()) for _ in range(3))
    engine = create_engine(sa_url(admin))
    try:
        with engine.begin() as conn:  # the owner: RLS forced, so name the tenant
            conn.execute(text("select set_config('portico.tenant_id', :t, true)"), {"t": a})
            conn.execute(text(f'insert into "{schema}".jobs values (:j, :t)'), {"j": job, "t": a})
            conn.execute(
                text(f'insert into "{schema}".notes values (:n, :t, :j)'),
                {"n": str(uuid.uuid4()), "t": a, "j": job},
            )
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("select set_config('portico.tenant_id', :t, true)"), {"t": b})
            conn.execute(
                text(f'insert into "{schema}".notes values (:n, :t, :j)'),
                {"n": str(uuid.uuid4()), "t": b, "j": job},
            )
        with engine.connect() as conn:
            forced = conn.execute(
                text(
                    "select bool_and(relforcerowsecurity) from pg_class c join pg_namespace n"
                    " on n.oid = c.relnamespace where n.nspname = :s"
                    " and relname in ('jobs', 'notes')"
                ),
                {"s": schema},
            ).scalar_one()
            assert forced is True
    finally:
        engine.dispose()
