"""Sign-in against a real PostgreSQL (a scratch database with the gateway's migrations):
attempts are counted atomically before the password is looked at (issue 6 item 4), every
failure costs exactly one argon2 verification with the production parameters (item 5),
and argon2 never runs on the eventlet hub (item 6)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import argon2
import eventlet
import pytest

from kit.config import read_settings
from kit.db import DatabaseCore
from services.gateway import tokens
from services.gateway.auth import AuthCore
from services.gateway.models import StaffUser, Tenant, metadata
from services.gateway.web import ApiError
from tests.support import database_core, scratch_database

PASSWORD = "Tangerine vault 47 orbits"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with scratch_database("gateway") as (_admin, urls):
        yield urls["gateway"]


@pytest.fixture
def db(database: str) -> Iterator[DatabaseCore]:
    with database_core(database, metadata, pool_size=20) as core:
        yield core


def auth_core(tmp_path: Path, **env: str) -> AuthCore:
    return AuthCore(
        read_settings(
            {
                "JWT_DEV_KEY_FILE": str(tmp_path / "dev.pem"),
                "LOGIN_LIMIT_PER_ACCOUNT": "5",
                "LOGIN_LIMIT_PER_ADDRESS": "1000",
                **env,
            }
        )
    )


def make_tenant(db: DatabaseCore, slug: str) -> str:
    with db.unit_of_work(system=True) as uow:
        tenant = Tenant(slug=slug, name=slug.title())
        uow.session.add(tenant)
        uow.session.flush()
        return tenant.id


def make_staff(
    db: DatabaseCore, tenant_id: str, email: str, password_hash: str | None, active: bool = True
) -> None:
    with db.unit_of_work(tenant_id=tenant_id) as uow:
        uow.session.add(
            StaffUser(
                email=email,
                password_hash=password_hash,
                first_name="Sam",
                last_name="Staff",
                roles=["admin"],
                active=active,
            )
        )


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**9}"


# --- item 4: one atomic count per attempt ----------------------------------------------------


def test_parallel_attempts_beyond_the_limit_are_refused(db, tmp_path):
    auth = auth_core(tmp_path)
    key = f"acct:{unique('parallel')}"
    start = threading.Barrier(15)
    outcomes: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            auth.take_attempt(db, key, 5)
            outcomes.append("allowed")
        except ApiError as exc:
            assert exc.code == "rate_limited"
            assert int(exc.headers["Retry-After"]) >= 1
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("allowed") == 5
    assert outcomes.count("refused") == 10


def test_a_new_window_allows_attempts_again(db, tmp_path):
    auth = auth_core(tmp_path, LOGIN_LIMIT_WINDOW_SECONDS="1")
    key = f"acct:{unique('window')}"
    for _ in range(2):
        auth.take_attempt(db, key, 2)
    with pytest.raises(ApiError) as refused:
        auth.take_attempt(db, key, 2)
    assert refused.value.headers["Retry-After"] == "1"
    time.sleep(1.1)
    auth.take_attempt(db, key, 2)


def test_each_use_may_have_its_own_window(db, tmp_path):
    auth = auth_core(tmp_path)  # sign-in window: 300 s
    key = f"reset:{unique('own-window')}"
    auth.take_attempt(db, key, 1, window_seconds=1)
    with pytest.raises(ApiError) as refused:
        auth.take_attempt(db, key, 1, "Too many reset requests.", window_seconds=1)
    assert refused.value.detail == "Too many reset requests."
    assert refused.value.headers["Retry-After"] == "1"
    time.sleep(1.1)
    auth.take_attempt(db, key, 1, window_seconds=1)


def test_login_counts_failures_and_a_success_resets_the_account(db, tmp_path, monkeypatch):
    monkeypatch.setenv("PORTICO_ARGON2_FAST", "1")
    auth = auth_core(tmp_path)
    slug = unique("reset")
    tenant = make_tenant(db, slug)
    make_staff(db, tenant, "ann@reset.test", tokens.hash_password(PASSWORD))
    for _ in range(4):
        with pytest.raises(ApiError, match="unauthenticated"):
            auth.login(db, slug, "ann@reset.test", "wrong password!", "192.0.2.1")
    assert "access_token" in auth.login(db, slug, "ann@reset.test", PASSWORD, "192.0.2.1")
    for _ in range(5):  # the success started the count afresh
        with pytest.raises(ApiError, match="unauthenticated"):
            auth.login(db, slug, "ann@reset.test", "wrong password!", "192.0.2.1")
    with pytest.raises(ApiError, match="rate_limited"):
        auth.login(db, slug, "ann@reset.test", PASSWORD, "192.0.2.1")


# --- item 5: every failure path costs one verification -----------------------------------------


@pytest.fixture
def paths(db: DatabaseCore) -> dict[str, tuple[str, str, str]]:
    """(tenant, email, password) of each way a sign-in can fail, and of a success."""
    slug = unique("timing")
    tenant = make_tenant(db, slug)
    good = tokens.hash_password(PASSWORD)  # production parameters: see the callers
    make_staff(db, tenant, "real@timing.test", good)
    make_staff(db, tenant, "gone@timing.test", good, active=False)
    make_staff(db, tenant, "invited@timing.test", None)
    make_staff(db, tenant, "broken@timing.test", "not-an-argon2-hash")
    return {
        "unknown tenant": (unique("nosuch"), "real@timing.test", PASSWORD),
        "unknown email": (slug, "nobody@timing.test", PASSWORD),
        "disabled account": (slug, "gone@timing.test", PASSWORD),
        "no password yet": (slug, "invited@timing.test", PASSWORD),
        "unusable hash": (slug, "broken@timing.test", PASSWORD),
        "wrong password": (slug, "real@timing.test", "Not the password 99"),
        "success": (slug, "real@timing.test", PASSWORD),
    }


def test_every_path_verifies_exactly_once_with_the_same_parameters(
    db, tmp_path, monkeypatch, paths
):
    monkeypatch.delenv("PORTICO_ARGON2_FAST", raising=False)
    auth = auth_core(tmp_path, LOGIN_LIMIT_PER_ACCOUNT="100")
    seen: list[argon2.Parameters] = []
    real_verify = argon2.PasswordHasher.verify

    def counting_verify(self: Any, hash: str, password: Any) -> bool:
        seen.append(argon2.extract_parameters(hash))
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting_verify)
    production = argon2.extract_parameters(tokens.hash_password("x" * 12))
    for name, (slug, email, password) in paths.items():
        seen.clear()
        try:
            auth.login(db, slug, email, password, "192.0.2.2")
            outcome = "signed in"
        except ApiError as exc:
            outcome = exc.code
        assert outcome == ("signed in" if name == "success" else "unauthenticated"), name
        assert seen == [production], name


def test_unknown_email_takes_as_long_as_a_wrong_password(db, tmp_path, monkeypatch, paths):
    """On the old code an unknown email in a known tenant answered ~15x faster."""
    monkeypatch.delenv("PORTICO_ARGON2_FAST", raising=False)
    auth = auth_core(tmp_path, LOGIN_LIMIT_PER_ACCOUNT="100")
    tokens.dummy_verify()  # the dummy hash is made once per process: not part of a login

    def median_seconds(case: str) -> float:
        slug, email, password = paths[case]
        times = []
        for _ in range(5):
            started = time.perf_counter()
            with pytest.raises(ApiError):
                auth.login(db, slug, email, password, "192.0.2.3")
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    unknown, wrong = median_seconds("unknown email"), median_seconds("wrong password")
    ratio = max(unknown, wrong) / min(unknown, wrong)
    assert ratio < 2.5, (
        f"unknown email {unknown * 1000:.0f} ms, wrong password {wrong * 1000:.0f} ms"
    )


# --- item 6: argon2 off the eventlet hub -------------------------------------------------------


def test_hashing_in_a_green_thread_leaves_the_hub_free(monkeypatch):
    """While green threads hash and verify, another green thread keeps getting turns."""
    monkeypatch.delenv("PORTICO_ARGON2_FAST", raising=False)
    stored = tokens.hash_password(PASSWORD)  # plain caller: runs inline
    gaps: list[float] = []
    done = eventlet.event.Event()

    def ticker() -> None:
        last = time.perf_counter()
        while not done.ready():
            eventlet.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    def work() -> None:
        assert tokens.verify_password(stored, PASSWORD)
        assert not tokens.verify_password(stored, "wrong")
        assert not tokens.verify_password(None, PASSWORD)
        tokens.hash_password(PASSWORD)

    tick = eventlet.spawn(ticker)
    workers = [eventlet.spawn(work) for _ in range(3)]
    started = time.perf_counter()
    for w in workers:
        w.wait()
    elapsed = time.perf_counter() - started
    done.send(True)
    tick.wait()
    assert elapsed > 0.3  # the work really was argon2 with production parameters
    # On the hub, every verification would stop the ticker for its whole duration.
    assert max(gaps) < 0.15, f"the hub stalled for {max(gaps) * 1000:.0f} ms"


# --- item 22: the document says what logout accepts --------------------------------------------


def test_logout_is_documented_with_an_optional_bearer_and_an_optional_body():
    from services.gateway import service  # noqa: F401 - registers every route
    from services.gateway.openapi import openapi_document

    doc = openapi_document()
    op = doc["paths"]["/auth/logout"]["post"]
    assert op["security"] == [{"bearer": []}, {}]
    assert op["requestBody"]["required"] is False
    schema = doc["components"]["schemas"]["LogoutRequest"]
    assert set(schema["properties"]) == {"refresh_token"}
    assert not schema.get("required")
    assert {"204", "401"} <= set(op["responses"])
