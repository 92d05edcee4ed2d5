"""Idempotency keys (API.md, issue 7 item 10), through the public API of the running
system: a write sent again with the same ``Idempotency-Key`` runs once and answers the
same; the same key with another request is 409; keys belong to one caller."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from sqlalchemy import create_engine, text

from kit.db import sa_url
from tests.support import ROOT, Client

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def ok(r: requests.Response, status: int) -> Any:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    return r.json()


def refused(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.json()["code"] == code, r.text


def quote_count(client: Client, marker: str) -> int:
    items = ok(client.get("/quote-requests", params={"q": marker, "limit": 100}), 200)["items"]
    return sum(marker in i["description"] for i in items)


def comments(client: Client, qid: str) -> list[dict[str, Any]]:
    return ok(client.get(f"/quote-requests/{qid}/comments", params={"limit": 100}), 200)["items"]


def test_same_key_twice_creates_one_quote_and_answers_the_same(system: Any) -> None:
    portal = system.portal()
    marker = uuid.uuid4().hex
    headers = key()
    first = portal.post("/quote-requests", {"description": f"Hoses {marker}"}, headers=headers)
    created = ok(first, 201)
    assert "Idempotent-Replayed" not in first.headers
    # Same request written another way (key order, spacing): still the same request.
    again = portal.request(
        "POST",
        "/quote-requests",
        data=json.dumps({"description": f"Hoses {marker}"}, indent=2).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert ok(again, 201) == created
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == first.headers["Content-Type"]
    assert quote_count(portal, marker) == 1
    # Without a key, the same body is another request.
    ok(portal.post("/quote-requests", {"description": f"Hoses {marker}"}), 201)
    assert quote_count(portal, marker) == 2


def test_same_key_with_another_body_is_409(system: Any) -> None:
    portal = system.portal()
    marker = uuid.uuid4().hex
    headers = key()
    ok(portal.post("/quote-requests", {"description": f"One {marker}"}, headers=headers), 201)
    r = portal.post("/quote-requests", {"description": f"Two {marker}"}, headers=headers)
    refused(r, 409, "idempotency_key_reused")
    assert quote_count(portal, marker) == 1


def test_ten_parallel_requests_with_one_key_create_one_quote(system: Any) -> None:
    portal = system.portal()
    marker = uuid.uuid4().hex
    headers = key()

    def send(_: int) -> requests.Response:
        client = Client(system.base, portal.token)  # a connection of its own
        return client.post("/quote-requests", {"description": f"Race {marker}"}, headers=headers)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(send, range(10)))
    assert [r.status_code for r in answers] == [201] * 10, [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in answers) == 9
    assert quote_count(portal, marker) == 1


def test_different_callers_use_the_same_key_independently(system: Any) -> None:
    portal = system.portal()
    qid = ok(portal.post("/quote-requests", {"description": "Shared key"}), 201)["id"]
    headers = key()
    admin, manager = system.staff("admin"), system.staff("manager")
    a = ok(admin.post(f"/quote-requests/{qid}/comments", {"body": "Noted."}, headers=headers), 201)
    m = manager.post(f"/quote-requests/{qid}/comments", {"body": "Noted."}, headers=headers)
    assert ok(m, 201)["id"] != a["id"] and "Idempotent-Replayed" not in m.headers
    # A different body from the second caller is not a reuse either.
    ok(manager.post(f"/quote-requests/{qid}/comments", {"body": "Other."}, headers=key()), 201)
    assert len(comments(portal, qid)) == 3


def other_tenant_admin(system: Any) -> Client:
    slug = f"idem-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", f"Quartz-{uuid.uuid4().hex[:12]}-ravel!"
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "tenant", "create", "--slug", slug,
         "--name", "Idempotency Other Shop", "--admin-email", email, "--admin-password", password],
        env=system.env.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return system.anonymous().login(slug, email, password)


def test_another_tenant_cannot_replay_an_answer(system: Any) -> None:
    admin = system.staff("admin")
    headers = key()
    body = {
        "email": f"idem-{uuid.uuid4().hex[:8]}@shop.example",
        "first_name": "Ida",
        "last_name": "Empotent",
        "roles": ["advisor"],
    }
    mine = ok(admin.post("/users", body, headers=headers), 201)
    replayed = admin.post("/users", body, headers=headers)
    assert ok(replayed, 201) == mine and replayed.headers["Idempotent-Replayed"] == "true"
    theirs = other_tenant_admin(system).post("/users", body, headers=headers)
    assert ok(theirs, 201)["id"] != mine["id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_uploads_hash_the_file_bytes(system: Any) -> None:
    portal = system.portal()
    qid = ok(portal.post("/quote-requests", {"description": "Upload twice"}), 201)["id"]
    headers = key()

    def upload(data: bytes) -> requests.Response:
        return portal.post(
            f"/quote-requests/{qid}/attachments",
            files={"file": ("photo.pdf", io.BytesIO(data), "application/pdf")},
            headers=headers,
        )

    first = ok(upload(PDF), 201)
    second = upload(PDF)
    assert ok(second, 201) == first and second.headers["Idempotent-Replayed"] == "true"
    refused(upload(PDF + b"% another page\n"), 409, "idempotency_key_reused")
    listed = ok(portal.get(f"/quote-requests/{qid}/attachments"), 200)["items"]
    assert [a["id"] for a in listed] == [first["id"]]


def test_refusals_are_replayed_too(system: Any) -> None:
    portal = system.portal()
    headers = key()
    missing = f"/quote-requests/{uuid.uuid4()}/comments"
    refused(portal.post(missing, {"body": "Hello"}, headers=headers), 404, "not_found")
    again = portal.post(missing, {"body": "Hello"}, headers=headers)
    refused(again, 404, "not_found")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == "application/problem+json"


def test_public_password_reset_takes_a_key(system: Any) -> None:
    anon, headers = system.anonymous(), key()
    body = {"tenant": system.tenant, "email": f"nobody-{uuid.uuid4().hex[:6]}@example.com"}
    first = ok(anon.post("/auth/password-reset", body, headers=headers), 202)
    again = anon.post("/auth/password-reset", body, headers=headers)
    assert ok(again, 202) == first and again.headers["Idempotent-Replayed"] == "true"
    other = {**body, "email": "someone-else@example.com"}
    refused(
        anon.post("/auth/password-reset", other, headers=headers), 409, "idempotency_key_reused"
    )


def test_malformed_keys_are_422(system: Any) -> None:
    portal = system.portal()
    marker = uuid.uuid4().hex
    for bad in ("two words", "x" * 256):
        r = portal.post(
            "/quote-requests",
            {"description": f"Bad key {marker}"},
            headers={"Idempotency-Key": bad},
        )
        refused(r, 422, "validation_failed")
        assert "Idempotency-Key" in r.json()["errors"]
    assert quote_count(portal, marker) == 0


def test_an_expired_key_runs_again(system: Any) -> None:
    portal = system.portal()
    marker = uuid.uuid4().hex
    headers = key()
    body = {"description": f"Expiring {marker}"}
    first = ok(portal.post("/quote-requests", body, headers=headers), 201)
    engine = create_engine(sa_url(system.env.admin_url))
    try:
        with engine.begin() as conn:
            stored = conn.execute(
                text(
                    "select state, expires_at - created_at from gateway.idempotency_keys"
                    " where key = :k"
                ),
                {"k": headers["Idempotency-Key"]},
            ).one()
            assert stored[0] == "done"
            assert 23.9 * 3600 < stored[1].total_seconds() <= 24 * 3600 + 60  # the default
            # 24 hours later:
            conn.execute(
                text(
                    "update gateway.idempotency_keys set expires_at = now() - interval '1 second'"
                    " where key = :k"
                ),
                {"k": headers["Idempotency-Key"]},
            )
    finally:
        engine.dispose()
    second = ok(portal.post("/quote-requests", body, headers=headers), 201)
    assert second["id"] != first["id"]
    assert quote_count(portal, marker) == 2
