"""The edge's cached lookups across replicas (issue 8 item 7): two gateway processes on
one database. Each gateway keeps session liveness and feature switches in memory; a
change made through one is refused by the other on the very next request."""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support import Client, Process, free_port, invite_portal_user, wait_ready


def ok(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


def refused(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:400]}"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.json()


@pytest.fixture(scope="module")
def gateway_b(system: Any) -> Iterator[str]:
    """A second gateway process (replica B) beside the system's (replica A)."""
    port = free_port()
    env = {**system.env.env, "PORT": str(port)}
    proc = Process(
        [sys.executable, "-m", "portico.cli", "run", "gateway"],
        env,
        system.env.tmp / "gateway-b.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/readyz", timeout=60, proc=proc)
        yield base
    finally:
        proc.stop()


def on(base: str, client: Client) -> Client:
    """The same caller (same token) talking to another replica."""
    return Client(base, client.token)


def cache_hits(base: str, lookup: str) -> float:
    text = requests.get(base + "/metrics", timeout=10).text
    m = re.search(
        rf'^portico_edge_cache_lookups_total\{{lookup="{lookup}",result="hit"\}} (\S+)$',
        text,
        re.M,
    )
    return float(m.group(1)) if m else 0.0


def test_logout_through_a_is_refused_by_b_at_once(system: Any, gateway_b: str) -> None:
    portal = system.portal()
    b = on(gateway_b, portal)
    ok(b.get("/me"))
    before = cache_hits(gateway_b, "session")
    ok(b.get("/me"))
    assert cache_hits(gateway_b, "session") > before  # B answers from its cache
    ok(portal.get("/me"))
    ok(portal.post("/auth/logout", {}), 204)
    refused(b.get("/me"), 401, "unauthenticated")
    refused(portal.get("/me"), 401, "unauthenticated")


def test_disabling_an_account_through_a_ends_its_session_on_b(system: Any, gateway_b: str) -> None:
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Edge {uuid.uuid4().hex[:6]}"}), 201)["id"]
    portal, account = invite_portal_user(system, admin, cid, permissions=["quotes.request"])
    b = on(gateway_b, portal)
    ok(b.get("/me"))
    ok(b.get("/me"))
    ok(admin.patch(f"/portal-accounts/{account['id']}", {"enabled": False}))
    refused(b.get("/me"), 401, "unauthenticated")
    refused(portal.get("/me"), 401, "unauthenticated")


def test_a_password_reset_through_a_ends_the_sessions_on_b(system: Any, gateway_b: str) -> None:
    from tests.support import mailed_link_token, strong_password

    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Edge {uuid.uuid4().hex[:6]}"}), 201)["id"]
    portal, account = invite_portal_user(system, admin, cid, permissions=["quotes.request"])
    b = on(gateway_b, portal)
    ok(b.get("/me"))
    ok(b.get("/me"))
    anonymous = system.anonymous()
    ok(
        anonymous.post(
            "/auth/password-reset", {"tenant": system.tenant, "email": account["email"]}
        ),
        202,
    )
    token = mailed_link_token(system.env.mail_dir, account["email"], "password_reset")
    ok(
        anonymous.post(
            "/auth/password-reset/confirm", {"token": token, "password": strong_password()}
        ),
        204,
    )
    refused(b.get("/me"), 401, "unauthenticated")


def test_a_feature_switched_off_through_a_is_refused_by_b(system: Any, gateway_b: str) -> None:
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Edge {uuid.uuid4().hex[:6]}"}), 201)["id"]
    portal, _account = invite_portal_user(system, admin, cid, permissions=["quotes.request"])
    b = on(gateway_b, portal)
    ok(b.get("/quote-requests"))
    before = cache_hits(gateway_b, "features")
    ok(b.get("/quote-requests"))
    assert cache_hits(gateway_b, "features") > before
    # the customer's switch
    ok(admin.patch(f"/customers/{cid}", {"portal_features": {"quotes": False}}))
    refused(b.get("/quote-requests"), 403, "feature_disabled")
    ok(admin.patch(f"/customers/{cid}", {"portal_features": {"quotes": True}}))
    ok(b.get("/quote-requests"))
    # the tenant's switch (put back afterwards: the demo tenant is shared)
    try:
        ok(admin.patch("/settings", {"features": {"quotes": False}}))
        refused(b.get("/quote-requests"), 403, "feature_disabled")
    finally:
        ok(admin.patch("/settings", {"features": {"quotes": True}}))
    ok(b.get("/quote-requests"))
