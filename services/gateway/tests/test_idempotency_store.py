"""The idempotency store against a real PostgreSQL (a scratch database with the gateway's
migrations, as the gateway's RLS-bound role): claims, answers, releases, leases and
expiry, and tenants that never see each other's keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text, update
from werkzeug.wrappers import Response

from services.gateway.idempotency import Scope, Store, Stored, replay
from services.gateway.models import IdempotencyKey, metadata
from tests.support import database_core, scratch_database


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("gateway") as (_admin, urls):
        yield urls["gateway"]


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    with database_core(database, metadata, pool_size=12) as core:
        yield Store(core, ttl=timedelta(hours=24), lease=timedelta(seconds=30))


def scope(tenant: str | None = None, caller: str = "staff:1") -> Scope:
    return Scope(tenant or str(uuid.uuid4()), caller, "POST /quote-requests", "k-1")


def answer(status: int = 201, body: bytes = b'{"id": "q1"}') -> Response:
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Location"] = "/api/v1/quote-requests/q1"
    response.headers["X-Request-Id"] = "not-kept"
    return response


def age(store: Store, where: Scope, **columns: datetime) -> None:
    with store.core.unit_of_work(tenant_id=where.tenant_id) as uow:
        uow.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == where.key)
            .values(**columns)
            .execution_options(synchronize_session=False)
        )


def test_first_claim_runs_then_the_answer_is_replayed(store: Store) -> None:
    where = scope()
    claimed = store.claim(where, "h1")
    assert isinstance(claimed, datetime)
    running = store.claim(where, "h1")
    assert isinstance(running, Stored) and running.state == "in_progress"
    store.finish(where, claimed, answer())
    done = store.claim(where, "h1")
    assert isinstance(done, Stored) and done.state == "done" and done.request_hash == "h1"
    replayed = replay(done)
    assert replayed.status_code == 201 and replayed.get_data() == b'{"id": "q1"}'
    assert replayed.headers["Location"] == "/api/v1/quote-requests/q1"
    assert replayed.headers["Content-Type"] == "application/json"
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert "X-Request-Id" not in replayed.headers
    # Another request with the key: the stored hash says so (the caller answers 409).
    other = store.claim(where, "h2")
    assert isinstance(other, Stored) and other.request_hash == "h1"


def test_a_released_claim_lets_a_retry_run(store: Store) -> None:
    where = scope()
    first = store.claim(where, "h1")
    assert isinstance(first, datetime)
    store.release(where, first)
    assert isinstance(store.claim(where, "h1"), datetime)


def test_an_abandoned_claim_lapses_after_its_lease(store: Store) -> None:
    where = scope()
    dead = store.claim(where, "h1")
    assert isinstance(dead, datetime)
    age(store, where, lease_until=datetime.now().astimezone() - timedelta(seconds=1))
    retry = store.claim(where, "h1")
    assert isinstance(retry, datetime) and retry != dead
    # The dead request's late answer no longer writes over the retry's claim.
    store.finish(where, dead, answer(body=b"late"))
    assert isinstance(held := store.claim(where, "h1"), Stored) and held.state == "in_progress"
    store.finish(where, retry, answer())
    assert isinstance(held := store.claim(where, "h1"), Stored) and held.body == b'{"id": "q1"}'


def test_an_expired_answer_is_forgotten(store: Store) -> None:
    where = scope()
    claimed = store.claim(where, "h1")
    assert isinstance(claimed, datetime)
    store.finish(where, claimed, answer())
    age(store, where, expires_at=datetime.now().astimezone() - timedelta(seconds=1))
    assert isinstance(store.claim(where, "h2"), datetime)  # a new request may use it


def test_new_claims_drop_the_tenants_expired_answers(store: Store) -> None:
    tenant = str(uuid.uuid4())
    old = Scope(tenant, "staff:1", "POST /users", "old")
    claimed = store.claim(old, "h1")
    assert isinstance(claimed, datetime)
    store.finish(old, claimed, answer())
    age(store, old, expires_at=datetime.now().astimezone() - timedelta(seconds=1))
    assert isinstance(store.claim(Scope(tenant, "staff:1", "POST /users", "new"), "h"), datetime)
    with store.core.unit_of_work(tenant_id=tenant) as uow:
        keys = uow.session.scalars(select(IdempotencyKey.key)).all()
    assert keys == ["new"]


def test_keys_belong_to_one_tenant_and_one_caller(store: Store) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    for where in (scope(a), scope(b), scope(a, caller="staff:2")):
        assert isinstance(store.claim(where, "h1"), datetime), where
    with store.core.unit_of_work(tenant_id=a) as uow:  # RLS: only a's rows
        rows = uow.session.execute(text("select tenant_id::text from gateway.idempotency_keys"))
        assert {r[0] for r in rows} == {a}


def test_parallel_claims_let_exactly_one_run(store: Store) -> None:
    where = scope()
    with ThreadPoolExecutor(10) as pool:
        claims = list(pool.map(lambda _: store.claim(where, "h1"), range(10)))
    assert sum(isinstance(c, datetime) for c in claims) == 1
    assert all(isinstance(c, Stored) for c in claims if not isinstance(c, datetime))
