"""The unit of work against real PostgreSQL: tenant scoping, RLS as the backstop,
outbox rows committed or rolled back with the change, idempotent handling."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import ProgrammingError

from kit.context import Actor
from kit.db import DatabaseCore, TenantScopeError
from services.quotes.models import QuoteRequest, metadata, outbox
from tests.support import owner_engine, scratch_database, scratch_service

A, B = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(scope="module")
def core() -> Iterator[DatabaseCore]:
    with scratch_service("quotes", metadata) as scratch:
        yield scratch.core


def _quote(**kw: object) -> QuoteRequest:
    base = dict(
        number=1,
        customer_id=str(uuid.uuid4()),
        description="d",
        status="pending",
        created_by=str(uuid.uuid4()),
        created_by_kind="staff",
        created_by_customer=False,
        visible_to_customer=True,
        version=1,
    )
    base.update(kw)
    return QuoteRequest(**base)


def _event(q: QuoteRequest) -> dict:
    return {
        "quote_request_id": q.id,
        "number": "Q-1",
        "customer_id": q.customer_id,
        "status": q.status,
        "description": q.description,
        "created_by": q.created_by,
        "created_by_customer": False,
        "visible_to_customer": True,
        "version": 1,
    }


def test_rows_are_stamped_and_scoped_to_their_tenant(core: DatabaseCore) -> None:
    with core.unit_of_work(tenant_id=A) as uow:
        uow.session.add(_quote(number=101))
    with core.unit_of_work(tenant_id=B) as uow:
        uow.session.add(_quote(number=101))  # same number, other tenant: fine
    with core.unit_of_work(tenant_id=A) as uow:
        rows = uow.session.scalars(select(QuoteRequest)).all()
        assert rows and {r.tenant_id for r in rows} == {A}
    with core.unit_of_work(tenant_id=B) as uow:
        assert {r.tenant_id for r in uow.session.scalars(select(QuoteRequest))} == {B}


def test_rls_refuses_what_the_orm_scoping_would_miss(core: DatabaseCore) -> None:
    with core.unit_of_work(tenant_id=A) as uow:
        # raw SQL bypasses the ORM criteria; row-level security still filters it
        tenants = (
            uow.session.execute(text("select distinct tenant_id from quotes.quote_requests"))
            .scalars()
            .all()
        )
        assert [str(t) for t in tenants] == [A]
        # writing into another tenant is refused by the policy's WITH CHECK
        with pytest.raises(Exception, match="row-level security"):
            uow.session.execute(
                text(
                    "insert into quotes.quote_counters (id, tenant_id, last_number) values (:i, :t, 0)"
                ),
                {"i": str(uuid.uuid4()), "t": B},
            )


def test_the_service_role_cannot_bypass_rls(core: DatabaseCore) -> None:
    with core.engine.connect() as conn:
        row = conn.execute(
            text("select rolsuper, rolbypassrls from pg_roles where rolname = current_user")
        ).one()
        assert row == (False, False)
        # no tenant set at all: nothing is visible
        assert conn.execute(text("select count(*) from quotes.quote_requests")).scalar() == 0


def test_orm_query_without_tenant_is_a_bug_not_a_leak(core: DatabaseCore) -> None:
    with pytest.raises(TenantScopeError), core.unit_of_work(system=False, tenant_id=None):
        pass
    with pytest.raises(TenantScopeError), core.unit_of_work(tenant_id=A) as uow:
        uow.session.add(_quote(number=7, tenant_id=B))
        uow.session.flush()


def test_outbox_commits_and_rolls_back_with_the_change(core: DatabaseCore) -> None:
    actor = Actor(kind="staff", id=str(uuid.uuid4()), tenant_id=A, roles=("admin",))
    with core.unit_of_work(actor) as uow:
        q = _quote(number=201)
        uow.session.add(q)
        uow.session.flush()
        committed = uow.emit("quote_request.created", _event(q))["id"]
    with pytest.raises(RuntimeError), core.unit_of_work(actor) as uow:
        q = _quote(number=202)
        uow.session.add(q)
        uow.session.flush()
        rolled_back = uow.emit("quote_request.created", _event(q))["id"]
        raise RuntimeError("boom")
    with core.unit_of_work(worker=True) as uow:
        ids = set(uow.session.execute(select(outbox.c.id)).scalars())
        assert committed in ids and rolled_back not in ids
    with core.unit_of_work(tenant_id=A) as uow:
        numbers = set(
            uow.session.execute(text("select number from quotes.quote_requests")).scalars()
        )
    assert 201 in numbers and 202 not in numbers


def test_a_service_connection_cannot_switch_tenant_scoping_off(core: DatabaseCore) -> None:
    """The old policy let anyone who set ``portico.system = on`` read every tenant's outbox
    rows; the service role is now bound to its tenant whatever it sets, only the worker
    role sees across tenants, and the service role cannot become the worker role."""
    actor = Actor(kind="staff", id=str(uuid.uuid4()), tenant_id=B, roles=("admin",))
    with core.unit_of_work(actor) as uow:
        q = _quote(number=301, tenant_id=B)
        uow.session.add(q)
        uow.session.flush()
        other_tenants = uow.emit("quote_request.created", _event(q))["id"]
    with core.engine.connect() as conn:
        conn.execute(
            text(
                "select set_config('portico.system', 'on', false),"
                " set_config('portico.tenant_id', :t, false)"
            ),
            {"t": A},
        )
        seen = set(conn.execute(text("select id::text from quotes.outbox")).scalars())
        assert other_tenants not in seen
        written = conn.execute(
            text("update quotes.outbox set attempts = attempts + 1 where id = :i"),
            {"i": other_tenants},
        )
        assert written.rowcount == 0
        with pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text('set role "portico_quotes_worker"'))
        conn.rollback()
    with core.unit_of_work(worker=True) as uow:
        assert other_tenants in set(uow.session.execute(select(outbox.c.id)).scalars())
        with pytest.raises(ProgrammingError, match="permission denied"):
            uow.session.execute(text("select count(*) from quotes.quote_requests"))


def test_claim_event_records_each_event_once(core: DatabaseCore) -> None:
    event_id = str(uuid.uuid4())
    with core.unit_of_work(tenant_id=A) as uow:
        assert uow.claim_event("h", event_id) is True
    with core.unit_of_work(tenant_id=A) as uow:
        assert uow.claim_event("h", event_id) is False
        assert uow.claim_event("other-handler", event_id) is True


def test_emit_validates_the_payload_against_its_contract(core: DatabaseCore) -> None:
    from marshmallow import ValidationError

    with pytest.raises(ValidationError), core.unit_of_work(tenant_id=A) as uow:
        uow.emit("quote_request.created", {"number": "Q-1"})


def _as_owner_after_every_migration(sql: str) -> list[Any]:
    """The rows of ``sql``, read as the owner of a scratch database with every service's
    migrations applied."""
    with (
        scratch_database("gateway", "quotes", "notify") as (admin, _urls),
        owner_engine(admin) as engine,
        engine.connect() as conn,
    ):
        return list(conn.execute(text(sql)).all())


def test_every_table_with_a_tenant_is_under_forced_row_level_security() -> None:
    rows = _as_owner_after_every_migration(
        "select n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity"
        " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id'"
        " where c.relkind = 'r' and n.nspname in ('gateway', 'quotes', 'notify')"
    )
    assert len(rows) >= 15
    unprotected = [name for name, enabled, forced in rows if not (enabled and forced)]
    assert not unprotected, unprotected


def test_only_worker_roles_cross_tenants_after_every_migration() -> None:
    """No policy left in any schema honours the old ``portico.system`` setting; the
    outbox of every service (and notify's deliveries) has a policy for its worker role."""
    policies = _as_owner_after_every_migration(
        "select schemaname || '.' || tablename, policyname, roles::text,"
        " coalesce(qual, '') || coalesce(with_check, '') from pg_policies"
        " where schemaname in ('gateway', 'quotes', 'notify')"
    )
    assert not [p for p in policies if "portico.system" in p[3]]
    workers = {(table, roles) for table, name, roles, _ in policies if name == "worker_access"}
    assert workers == {
        ("gateway.outbox", "{portico_gateway_worker}"),
        ("quotes.outbox", "{portico_quotes_worker}"),
        ("notify.outbox", "{portico_notify_worker}"),
        ("notify.deliveries", "{portico_notify_worker}"),
    }


# --- which failures are "the database is unavailable" (503), issue 6 item 26 -------------
def test_a_refused_connection_is_unavailable() -> None:
    """A connect that fails (server down, restarting) was a 500: SQLAlchemy flags only
    connections lost while executing."""
    from sqlalchemy.exc import OperationalError

    from kit.db import unavailable
    from tests.support import free_port

    down = DatabaseCore(f"postgresql://nobody@127.0.0.1:{free_port()}/none", metadata, pool_size=1)
    try:
        with pytest.raises(OperationalError) as err, down.engine.connect():
            pass
        assert not err.value.connection_invalidated  # what the old check relied on
        assert unavailable(err.value)
        assert err.value.orig is not None and unavailable(err.value.orig)  # raw psycopg2 too
        with pytest.raises(OperationalError) as err:
            down.read(A, QuoteRequest, select(QuoteRequest.id))
        assert unavailable(err.value)
    finally:
        down.dispose()


def test_a_terminated_session_is_unavailable_and_the_pool_recovers(core: DatabaseCore) -> None:
    """What a PostgreSQL restart does to every pooled connection (admin shutdown)."""
    from sqlalchemy.exc import DBAPIError

    from kit.db import sa_url, unavailable
    from tests import support

    admin = None
    with pytest.raises(DBAPIError) as err, core.engine.connect() as conn:
        pid, database = conn.execute(text("select pg_backend_pid(), current_database()")).one()
        conn.commit()
        admin = create_engine(sa_url(f"{support.PG_ADMIN}/{database}"))
        with admin.connect() as other:
            other.execute(text("select pg_terminate_backend(:p)"), {"p": pid})
        conn.execute(text("select 1"))
    if admin is not None:
        admin.dispose()
    assert unavailable(err.value)
    with core.engine.connect() as conn:  # the next use reconnects
        assert conn.execute(text("select 1")).scalar() == 1


@pytest.mark.parametrize(
    "statement",
    ["select 1/0", "select * from no_such_table", "select 'x'::int"],
)
def test_statement_errors_are_not_unavailability(core: DatabaseCore, statement: str) -> None:
    from sqlalchemy.exc import DBAPIError

    from kit.db import unavailable

    with pytest.raises(DBAPIError) as err, core.engine.connect() as conn:
        conn.execute(text(statement))
    assert not unavailable(err.value)
