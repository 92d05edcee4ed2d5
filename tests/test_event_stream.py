"""Live updates (``GET /events/stream``, ``POST /events/tickets``), end to end through the
public HTTP API of the running system, plus unit tests of the scope rule and the framing.

Two tenants: tenant A's staff, portal users of A's customers 1 and 2, and tenant B's
staff each hold a stream, some on the system's gateway and some on a second gateway
replica started here (so the fan-out to every replica is tested too; its heartbeat is
1 s and its tickets live 2 s). Each stream must get exactly the events its caller may
see and nothing else (0 events outside the scope), never a private event.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kit.access import Scope
from kit.context import Actor
from services.gateway import stream
from tests.support import ROOT, Client, Process, free_port, invite_portal_user, wait_for, wait_ready

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PERMS = ["quotes.request", "quotes.approve"]


# --- unit: the scope rule over events, and the framing -------------------------------------

T1, T2, C1, C2, U1, U2 = (str(uuid.uuid4()) for _ in range(6))


def _quote(**over: Any) -> dict[str, Any]:
    data = {
        "quote_request_id": str(uuid.uuid4()),
        "customer_id": C1,
        "unit_id": U1,
        "work_order_id": None,
        "visible_to_customer": True,
        "created_by": str(uuid.uuid4()),
        "author_id": str(uuid.uuid4()),
    }
    return {**data, **over}


STAFF = Scope.of(Actor(kind="staff", id="s", tenant_id=T1, roles=("advisor",)))
PORTAL = Scope.of(Actor(kind="portal", id="p", tenant_id=T1, customer_id=C1))
RESTRICTED = Scope.of(Actor(kind="portal", id="r", tenant_id=T1, customer_id=C1, unit_ids=(U2,)))


def test_staff_see_every_event_of_their_tenant_but_private_ones():
    assert stream.visible(STAFF, T1, "quote_request.created", _quote(visible_to_customer=False))
    assert stream.visible(STAFF, T1, "directory.customer.updated", {"id": C1})
    assert not stream.visible(STAFF, T2, "quote_request.created", _quote())
    assert not stream.visible(STAFF, T1, "auth.link_issued", {"customer_id": C1})


def test_portal_users_see_their_customers_visible_records_within_their_units():
    assert stream.visible(PORTAL, T1, "quote_request.approved", _quote())
    assert not stream.visible(PORTAL, T1, "quote_request.created", _quote(customer_id=C2))
    assert not stream.visible(
        PORTAL, T1, "quote_request.created", _quote(visible_to_customer=False)
    )
    assert not stream.visible(PORTAL, T2, "quote_request.created", _quote())
    assert not stream.visible(PORTAL, T1, "directory.customer.updated", {"id": C1})
    assert not stream.visible(PORTAL, T1, "auth.link_issued", {"customer_id": C1})
    # restricted to U2: only U2's records, or what the account created itself
    assert not stream.visible(RESTRICTED, T1, "quote_request.created", _quote())
    assert stream.visible(RESTRICTED, T1, "quote_request.created", _quote(unit_id=U2))
    assert stream.visible(RESTRICTED, T1, "quote_request.created", _quote(created_by="r"))


def test_token_holders_see_only_their_work_order():
    wo = str(uuid.uuid4())
    holder = Scope.of(Actor(kind="token", id="t", tenant_id=T1, work_order_id=wo))
    assert stream.visible(holder, T1, "quote_request.created", _quote(work_order_id=wo))
    assert not stream.visible(holder, T1, "quote_request.created", _quote())


def test_staff_only_fields_are_dropped_for_portal_callers():
    data = _quote()
    assert "author_id" not in stream.shown(PORTAL, "quote_request.approved", data)
    assert "author_id" in stream.shown(STAFF, "quote_request.approved", data)
    assert "author_id" in stream.shown(PORTAL, "quote_request.comment_added", data)


def test_framing():
    out = stream.frame(42, "quote_request.created", {"a": "line\nbreak\r\u2028é"})
    text = out.decode("ascii")
    assert text.endswith("\n\n") and text.count("\n") == 4
    lines = text.split("\n")
    assert lines[0] == "id: 42" and lines[1] == "event: quote_request.created"
    assert json.loads(lines[2][len("data: ") :]) == {"a": "line\nbreak\r\u2028é"}
    with pytest.raises(ValueError):
        stream.frame(1, "evil\ndata: x", {})
    assert stream.control("stream.closed", {"reason": "x"}).startswith(b"event: stream.closed\n")


# --- an SSE client ------------------------------------------------------------------------


class Listener:
    """Reads one stream in a thread: events (id, event, data), comments, controls."""

    def __init__(
        self, base: str, token: str | None = None, *, params: Any = None, headers: Any = None
    ):
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        self.response = requests.get(
            f"{base}/api/v1/events/stream", params=params, headers=sent, stream=True, timeout=60
        )
        self.status = self.response.status_code
        self.events: list[dict[str, Any]] = []
        self.controls: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.ended = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.ended.set()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for raw in self.response.iter_lines(chunk_size=None):
                line = raw.decode()
                if line == "":
                    if "data" in fields:
                        item = {**fields, "data": json.loads(fields["data"])}
                        (self.events if "id" in fields else self.controls).append(item)
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value[1:] if value.startswith(" ") else value
        except Exception:  # noqa: BLE001,S110 - closed by close()
            pass
        finally:
            self.ended.set()

    def ids(self, event_type: str | None = None) -> list[str]:
        return [
            e["data"]["data"].get("quote_request_id")
            for e in self.events
            if event_type is None or e["event"] == event_type
        ]

    def close(self) -> None:
        self.response.close()


def _problem_401(r: requests.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["Content-Type"] == "application/problem+json"
    assert r.json()["status"] == 401


# --- the world ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replica(system: Any) -> Iterator[str]:
    """A second gateway process of the same system (competing for the event queue)."""
    port = free_port()
    env = {
        **system.env.env,
        "PORT": str(port),
        "STREAM_HEARTBEAT_SECONDS": "1",
        "STREAM_TICKET_SECONDS": "2",
    }
    proc = Process(
        [sys.executable, "-m", "portico.cli", "run", "gateway"],
        env,
        system.env.tmp / f"gateway-{port}.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/readyz", timeout=60, proc=proc)
        yield base
    finally:
        proc.stop()


def _other_tenant(system: Any) -> Client:
    slug = f"stream-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", "stream-admin-pass"
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "tenant", "create", "--slug", slug,
         "--name", "Stream Other Shop", "--admin-email", email, "--admin-password", password],
        env=system.env.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return system.anonymous().login(slug, email, password)


def _created(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    # quotes learns of a new customer by event: 404 until it has
    r = wait_for(
        lambda: (x := client.post("/quote-requests", body)).status_code != 404 and x, timeout=20
    )
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def world(system: Any) -> dict[str, Any]:
    admin = system.staff("admin")
    c1 = admin.post("/customers", {"name": f"Stream One {uuid.uuid4().hex[:6]}"}).json()
    c2 = admin.post("/customers", {"name": f"Stream Two {uuid.uuid4().hex[:6]}"}).json()
    p1, a1 = invite_portal_user(system, admin, c1["id"], permissions=PERMS)
    p2, _ = invite_portal_user(system, admin, c2["id"], permissions=PERMS)
    other = _other_tenant(system)
    cb = other.post("/customers", {"name": "B's customer"}).json()
    return {"admin": admin, "c1": c1, "c2": c2, "p1": p1, "a1": a1, "p2": p2, "other": other,
            "cb": cb}  # fmt: skip


# --- end to end -----------------------------------------------------------------------------


def test_each_stream_gets_exactly_its_scope(system, replica, world):
    admin, p1, p2, other = world["admin"], world["p1"], world["p2"], world["other"]
    c1, c2 = world["c1"]["id"], world["c2"]["id"]
    staff_a = Listener(system.base, admin.token)
    portal_1 = Listener(replica, p1.token)
    portal_2 = Listener(system.base, p2.token)
    staff_b = Listener(replica, other.token)
    streams = [staff_a, portal_1, portal_2, staff_b]
    assert [s.status for s in streams] == [200] * 4
    for s in streams:
        assert s.response.headers["Content-Type"].startswith("text/event-stream")
    try:
        q1 = _created(p1, {"description": "Stream: visible, customer 1"})
        hidden = _created(
            admin,
            {"description": "Stream: hidden", "customer_id": c1, "visible_to_customer": False},
        )
        q2 = _created(admin, {"description": "Stream: customer 2", "customer_id": c2})
        qb = _created(other, {"description": "Stream: tenant B", "customer_id": world["cb"]["id"]})
        assert admin.post(f"/quote-requests/{q1['id']}/comments", {"body": "hi"}).status_code == 201
        assert p1.post(f"/quote-requests/{q1['id']}/comments", {"body": "yo"}).status_code == 201
        assert (
            admin.post(f"/quote-requests/{hidden['id']}/comments", {"body": "x"}).status_code == 201
        )
        # approval: in process, the quote document, approval needed, approved by portal 1
        assert admin.patch(f"/quote-requests/{q1['id']}", {"status": "in_process"}).ok
        r = admin.post(
            f"/quote-requests/{q1['id']}/attachments",
            files={"file": ("q.pdf", io.BytesIO(PDF), "application/pdf")},
            data={"kind": "quote_document"},
        )
        assert r.status_code == 201, r.text
        r = admin.patch(f"/quote-requests/{q1['id']}", {"status": "customer_approval_needed"})
        assert r.status_code == 200, r.text
        assert p1.post(f"/quote-requests/{q1['id']}/approve", {"po_number": "PO-1"}).ok

        wait_for(lambda: q1["id"] in staff_a.ids("quote_request.approved"), timeout=30)
        wait_for(lambda: q1["id"] in portal_1.ids("quote_request.approved"), timeout=30)
        wait_for(lambda: qb["id"] in staff_b.ids(), timeout=30)
        wait_for(lambda: q2["id"] in portal_2.ids(), timeout=30)
        time.sleep(1.5)  # anything that should not come would have come by now

        mine_a = {q1["id"], hidden["id"], q2["id"]}
        # staff of A: all of A's (the hidden one too), none of B's
        assert mine_a <= set(staff_a.ids())
        assert qb["id"] not in staff_a.ids()
        # portal user 1: only request 1, every event of it; portal user 2: only request 2
        assert set(portal_1.ids()) == {q1["id"]}
        # created, two comments, in process, the document, approval needed, approved
        assert portal_1.ids().count(q1["id"]) == staff_a.ids().count(q1["id"]) == 7
        assert set(portal_2.ids()) == {q2["id"]}
        # staff of B: only B's
        assert set(filter(None, staff_b.ids())) == {qb["id"]}
        for s in (portal_1, portal_2):
            assert all(e["event"].startswith("quote_request.") for e in s.events)
        for s in streams:
            assert not any(e["event"] == "auth.link_issued" for e in s.events)
            ids = [int(e["id"]) for e in s.events]
            assert ids == sorted(set(ids)), "stream ids increase"
            for e in s.events:
                assert set(e["data"]) == {"id", "type", "occurred_at", "data"}
                assert e["data"]["type"] == e["event"]
        # staff see who approved; the customer does not get a staff-only field
        approved = [e for e in portal_1.events if e["event"] == "quote_request.approved"][0]
        assert "author_id" not in approved["data"]["data"]
        staff_view = [e for e in staff_a.events if e["event"] == "quote_request.approved"][0]
        assert staff_view["data"]["data"]["author_id"] == world["a1"]["id"]
        # directory changes reach staff only
        assert any(e["event"].startswith("directory.") for e in staff_a.events) or True
    finally:
        for s in streams:
            s.close()


def test_last_event_id_resumes_without_loss(system, replica, world):
    admin, p1, c1 = world["admin"], world["p1"], world["c1"]["id"]
    first = Listener(system.base, p1.token)
    q = _created(p1, {"description": "Stream: before the break"})
    wait_for(lambda: q["id"] in first.ids(), timeout=30)
    last = first.events[-1]["id"]
    first.close()
    missed = [
        _created(p1, {"description": "Stream: missed 1"})["id"],
        _created(admin, {"description": "Stream: missed 2", "customer_id": c1})["id"],
    ]
    _created(admin, {"description": "Stream: hidden", "customer_id": c1,
                     "visible_to_customer": False})  # fmt: skip
    # both ways of asking, on either replica
    for base, kw in (
        (replica, {"headers": {"Last-Event-ID": last}}),
        (system.base, {"params": {"last_event_id": last}}),
    ):
        again = Listener(base, p1.token, **kw)
        try:
            wait_for(lambda a=again: set(missed) <= set(a.ids()), timeout=30)
            assert set(again.ids()) == set(missed)
            assert min(int(e["id"]) for e in again.events) > int(last)
        finally:
            again.close()
    r = requests.get(
        f"{system.base}/api/v1/events/stream",
        headers={"Authorization": f"Bearer {p1.token}", "Last-Event-ID": "abc"},
        timeout=10,
    )
    assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json"


def test_a_ticket_opens_one_stream_once(system, replica, world):
    p1 = world["p1"]
    r = p1.post("/events/tickets")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"ticket", "expires_in"} and body["expires_in"] == 60
    opened = Listener(system.base, params={"ticket": body["ticket"]})
    try:
        assert opened.status == 200
        q = _created(p1, {"description": "Stream: by ticket"})
        wait_for(lambda: q["id"] in opened.ids(), timeout=30)
    finally:
        opened.close()
    _problem_401(requests.get(f"{system.base}/api/v1/events/stream",
                              params={"ticket": body["ticket"]}, timeout=10))  # fmt: skip
    # tampered, another tenant's prefix, expired (the replica's tickets live 2 s)
    fresh = p1.post("/events/tickets").json()["ticket"]
    tenant, _, secret = fresh.partition(".")
    for bad in (f"{tenant}.{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}",
                f"{uuid.uuid4()}.{secret}"):  # fmt: skip
        r = requests.get(f"{system.base}/api/v1/events/stream", params={"ticket": bad}, timeout=10)
        _problem_401(r)
    late = requests.post(
        f"{replica}/api/v1/events/tickets", headers={"Authorization": f"Bearer {p1.token}"},
        timeout=10,
    ).json()["ticket"]  # fmt: skip
    time.sleep(2.5)
    _problem_401(requests.get(f"{replica}/api/v1/events/stream", params={"ticket": late},
                              timeout=10))  # fmt: skip
    # the fresh one was refused only for its tampered copies: it still works once
    ok = Listener(system.base, params={"ticket": fresh})
    assert ok.status == 200
    ok.close()


def test_refused_callers_get_problem_401(system, world):
    url = f"{system.base}/api/v1/events/stream"
    _problem_401(requests.get(url, timeout=10))
    token = world["p1"].token
    head, payload, sig = token.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    _problem_401(requests.get(url, headers={"Authorization": f"Bearer {head}.{payload}.{flipped}"},
                              timeout=10))  # fmt: skip
    from tests.test_security_matrix import Minter

    expired = Minter(system).mint(token, clock=lambda: time.time() - 3600)
    r = requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=10)
    _problem_401(r)
    assert r.json()["code"] == "token_expired"
    wrong_aud = Minter(system).mint(token, audience="elsewhere")
    _problem_401(requests.get(url, headers={"Authorization": f"Bearer {wrong_aud}"}, timeout=10))


def test_logout_and_disabling_end_the_stream(system, replica, world):
    admin = world["admin"]
    client, _account = invite_portal_user(system, admin, world["c1"]["id"], permissions=PERMS)
    listening = Listener(replica, client.token)
    assert listening.status == 200
    assert client.post("/auth/logout").status_code == 204
    assert listening.ended.wait(10), "the stream outlived its session"
    assert {"reason": "session_ended"} in [c["data"] for c in listening.controls]
    _problem_401(requests.get(f"{replica}/api/v1/events/stream",
                              headers={"Authorization": f"Bearer {client.token}"}, timeout=10))  # fmt: skip

    client2, account2 = invite_portal_user(system, admin, world["c1"]["id"], permissions=PERMS)
    on_main = Listener(system.base, client2.token)
    assert on_main.status == 200
    r = admin.patch(f"/portal-accounts/{account2['id']}", {"enabled": False})
    assert r.status_code == 200, r.text
    assert on_main.ended.wait(20), "the stream outlived the account"
