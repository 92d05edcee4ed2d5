"""The security matrix: every route that needs a caller (read from the gateway's route
table, so a new route is covered the day it is added) against every way of not being
allowed to call it, through the public HTTP API of the running system.

- no token, and every kind of bad token (tampered, expired, wrong audience/issuer,
  ``alg: none``, HS256 signed with the public key, a foreign key, a logged-out
  session, a revoked refresh family) -> 401 problem+json;
- staff of another tenant on every route with a path id -> 404, lists show nothing;
- a portal user of another customer -> 404 (403 where portal users are not callers);
- missing roles or permissions, and a read-only preview token -> 403;
- and after all of it, nothing changed.

Targets are real: a fresh quote request (awaiting the customer's approval, so a wrongly
accepted approve/deny/cancel would really move it) with a comment and an attachment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from marshmallow import Schema, fields, validate

import services.gateway.service  # noqa: F401 - imports every api_* module: ROUTES is complete
from kit.config import read_settings as load_settings
from kit.context import PORTAL_PERMISSIONS
from services.gateway import domain
from services.gateway.tokens import KeyRing, TokenService
from services.gateway.web import ROUTES, Route
from tests.support import ROOT, Client, invite_portal_user, wait_for

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}

GUARDED = [r for r in ROUTES if r.callers]
WITH_PATH_ID = [r for r in GUARDED if "{" in r.path]
# The event stream never ends (a list read to the end would hang): another tenant's or
# customer's events never arriving on it is tested in tests/test_event_stream.py.
STREAMS = {"GET /events/stream"}
PLAIN_GETS = [
    r for r in GUARDED if r.method == "GET" and "{" not in r.path and r.endpoint not in STREAMS
]
# Logging out of a preview, or a ticket to read its event stream, is not a write to
# anything the customer sees.
NOT_WRITES = {"POST /auth/logout", "POST /events/tickets"}
WRITES = [r for r in GUARDED if r.method != "GET" and r.endpoint not in NOT_WRITES]

# Which id of the fixture fills a path parameter: ``{id}`` by the path's first segment.
ID_BY_COLLECTION = {
    "customers": "customer",
    "contacts": "contact",
    "portal-accounts": "portal_account",
    "quote-requests": "quote",
    "users": "user",
    "notifications": "notification",
}
ID_BY_PARAM = {"cid": "comment", "aid": "attachment"}

BAD_TOKENS = [
    "missing",
    "not-bearer",
    "garbage",
    "payload-flipped",
    "payload-escalated",
    "signature-flipped",
    "expired",
    "wrong-audience",
    "wrong-issuer",
    "alg-none",
    "hs256-public-key",
    "foreign-key",
    "logged-out",
    "refresh-family-revoked",
]


def ids_of(routes: list[Route]) -> list[str]:
    return [r.endpoint for r in routes]


# --- helpers ----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def flip(segment: str) -> str:
    """One base64url character changed, in the middle (never the padding bits)."""
    i = len(segment) // 2
    return segment[:i] + ("B" if segment[i] == "A" else "A") + segment[i + 1 :]


def unverified(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def assert_problem(r: requests.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:400]}"
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status, body
    if code is not None:
        assert body["code"] == code, body
    if status == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers


def sample(name: str, f: fields.Field) -> Any:
    """A valid value for one schema field, from its type and validators."""
    one_of = next((v for v in f.validators if isinstance(v, validate.OneOf)), None)
    length = next((v for v in f.validators if isinstance(v, validate.Length)), None)
    bounds = next((v for v in f.validators if isinstance(v, validate.Range)), None)
    if one_of is not None:
        return next(iter(one_of.choices))
    if isinstance(f, fields.Nested):
        return minimal_body(type(f.schema))
    if isinstance(f, fields.UUID):
        return str(uuid.uuid4())
    if isinstance(f, fields.Boolean):
        return False
    if isinstance(f, fields.Integer):
        return bounds.min if bounds is not None and bounds.min is not None else 1
    if isinstance(f, fields.List):
        count = length.min if length is not None and length.min else 0
        return [sample(name, f.inner) for _ in range(count)]
    if isinstance(f, fields.Dict):
        return {}
    if "email" in name:
        return f"matrix-{uuid.uuid4().hex[:10]}@example.com"
    return "x" * max(1, length.min if length is not None and length.min else 1)


def minimal_body(schema_cls: type[Schema]) -> dict[str, Any]:
    """The smallest body the route's schema accepts: its required fields, each valid."""
    return {
        f.data_key or name: sample(name, f)
        for name, f in schema_cls().fields.items()
        if f.required and not f.dump_only
    }


def fill(route: Route, ids: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        param = match.group(1)
        key = ID_BY_COLLECTION.get(route.path.split("/")[1]) if param == "id" else None
        key = key or ID_BY_PARAM.get(param)
        if key is None or key not in ids:
            pytest.fail(f"no target id for {{{param}}} of {route.endpoint}: add one to `world`")
        return ids[key]

    return re.sub(r"\{(\w+)\}", one, route.path)


def send(client: Client, route: Route, ids: dict[str, str]) -> requests.Response:
    """Call a route as a well-behaved client would: real ids, a body that validates."""
    kw: dict[str, Any] = {}
    if route.multipart:
        kw["files"] = {"file": ("matrix.pdf", io.BytesIO(PDF), "application/pdf")}
        kw["data"] = {"kind": "attachment"}
    elif route.body is not None:
        kw["json"] = minimal_body(route.body)
    if route.query is not None and "limit" in route.query().fields:
        kw["params"] = {"limit": 200}
    return client.request(route.method, fill(route, ids), **kw)


def all_items(client: Client, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        r = client.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


def ok(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


# --- the world the matrix runs against -------------------------------------------------


@dataclass
class World:
    system: Any
    clients: dict[str, Client]
    ids: dict[str, str]
    demo_tenant_ids: set[str] = field(default_factory=set)  # every id of the demo tenant
    demo_customer_ids: set[str] = field(default_factory=set)  # every id of Acme's records
    before: dict[str, Any] = field(default_factory=dict)

    def client(self, token: str | None) -> Client:
        return Client(self.system.base, token)


def portal_login(system: Any, admin: Client, customer_id: str, permissions: list[str]) -> Client:
    """A portal user signed in the way people are: invited, then choosing a password."""
    client, _account = invite_portal_user(
        system, admin, customer_id, first_name="Matrix", permissions=permissions
    )
    return client


def other_tenant_admin(system: Any) -> Client:
    slug = f"matrix-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", "matrix-admin-pass"
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "tenant", "create", "--slug", slug,
         "--name", "Matrix Other Shop", "--admin-email", email, "--admin-password", password],
        env=system.env.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["slug"] == slug
    return system.anonymous().login(slug, email, password)


def _feed_item(client: Client, quote_id: str) -> str | None:
    """The id of an unread item about that quote in the caller's in-app feed."""
    feed = ok(client.get("/notifications", params={"limit": 200}))["items"]
    return next((n["id"] for n in feed if n["record_id"] == quote_id and not n["read"]), None)


def snapshot(world: World) -> dict[str, Any]:
    """What a refused write could have changed, as the demo tenant's admin sees it."""
    admin, ids = world.clients["admin"], world.ids
    cid = ids["customer"]
    quote = ok(admin.get(f"/quote-requests/{ids['quote']}"))

    def versions(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted((i["id"], i.get("version"), i.get("status")) for i in items)

    feed = ok(world.clients["portal"].get("/notifications", params={"limit": 200}))["items"]
    return {
        "portal_feed_read": sorted((n["id"], n["read"]) for n in feed),
        "quote": {k: quote[k] for k in ("status", "version", "po_number", "attachment_count")},
        "comments": sorted(
            c["id"] for c in ok(admin.get(f"/quote-requests/{ids['quote']}/comments"))["items"]
        ),  # fmt: skip
        "attachments": sorted(
            a["id"] for a in ok(admin.get(f"/quote-requests/{ids['quote']}/attachments"))["items"]
        ),  # fmt: skip
        "quote_requests": versions(all_items(admin, "/quote-requests")),
        "customers": versions(all_items(admin, "/customers")),
        "users": sorted(
            (u["id"], u["version"], tuple(u["roles"]), u["active"])
            for u in all_items(admin, "/users")
        ),
        "contacts": versions(all_items(admin, f"/customers/{cid}/contacts")),
        "units": versions(all_items(admin, f"/customers/{cid}/units")),
        "portal_accounts": sorted(
            (a["id"], a["version"], tuple(a["permissions"]), a["enabled"])
            for a in all_items(admin, f"/customers/{cid}/portal-accounts")
        ),
        "settings": ok(admin.get("/settings"))["version"],
    }


@pytest.fixture(scope="module")
def world(system: Any) -> World:
    clients = {role: system.staff(role) for role in ("admin", "manager", "advisor", "technician")}
    clients["portal"] = system.portal()
    admin, advisor, portal = clients["admin"], clients["advisor"], clients["portal"]
    me = ok(portal.get("/me"))
    cid = me["customer_id"]

    # A fresh quote request from the customer, worked by the shop up to the approval.
    quote = ok(portal.post("/quote-requests", {"description": "Security matrix target"}), 201)
    qid = quote["id"]
    comment = ok(advisor.post(f"/quote-requests/{qid}/comments", {"body": "Looking at it."}), 201)
    attachment = ok(
        advisor.post(
            f"/quote-requests/{qid}/attachments",
            files={"file": ("quote.pdf", io.BytesIO(PDF), "application/pdf")},
            data={"kind": "quote_document"},
        ),
        201,
    )
    ok(advisor.patch(f"/quote-requests/{qid}", {"status": "in_process"}))
    quote = ok(advisor.patch(f"/quote-requests/{qid}", {"status": "customer_approval_needed"}))
    assert quote["status"] == "customer_approval_needed"

    contacts = all_items(admin, f"/customers/{cid}/contacts")
    units = all_items(admin, f"/customers/{cid}/units")
    accounts = all_items(admin, f"/customers/{cid}/portal-accounts")
    users = all_items(admin, "/users")
    ids = {
        "customer": cid,
        "contact": contacts[0]["id"],
        "unit": units[0]["id"],
        "portal_account": next(a["id"] for a in accounts if a["id"] == me["id"]),
        "quote": qid,
        "comment": comment["id"],
        "attachment": attachment["id"],
        "user": next(u["id"] for u in users if "advisor" in u["roles"]),
        # The advisor's comment reaches the customer's in-app feed (after the event).
        "notification": wait_for(lambda: _feed_item(portal, qid), timeout=20),
    }

    # Demo accounts without one permission each.
    everything = list(PORTAL_PERMISSIONS)
    for name, missing in (("no_approve", "quotes.approve"), ("no_request", "quotes.request")):
        clients[name] = portal_login(system, admin, cid, [p for p in everything if p != missing])

    # Another customer of the same tenant, with a portal user allowed everything.
    other = ok(admin.post("/customers", {"name": f"Matrix Other {uuid.uuid4().hex[:6]}"}), 201)
    clients["other_customer"] = portal_login(system, admin, other["id"], everything)
    own = clients["other_customer"].post("/quote-requests", {"description": "Other's own"})
    ids["other_customer"], ids["other_quote"] = other["id"], ok(own, 201)["id"]

    # A read-only preview of the demo customer's portal, as its demo account sees it.
    preview = ok(admin.post(f"/customers/{cid}/preview", {"portal_account_id": me["id"]}))
    assert "refresh_token" not in preview
    clients["preview"] = Client(system.base, preview["access_token"])

    clients["other_tenant"] = other_tenant_admin(system)

    acme_quotes = all_items(admin, "/quote-requests", customer_id=cid)
    demo_customer_ids = (
        {cid, ids["comment"], ids["attachment"]}
        | {x["id"] for x in (*contacts, *units, *acme_quotes)}
        | {a["id"] for a in all_items(admin, f"/customers/{cid}/portal-accounts")}
    )
    demo_tenant_ids = (
        demo_customer_ids
        | {ok(admin.get("/me"))["tenant_id"]}
        | {u["id"] for u in users}
        | {c["id"] for c in all_items(admin, "/customers")}
        | {q["id"] for q in all_items(admin, "/quote-requests")}
    )
    w = World(system, clients, ids, demo_tenant_ids, demo_customer_ids)
    w.before = snapshot(w)
    return w


# --- bad tokens ---------------------------------------------------------------------------


class Minter:
    """Tokens signed exactly as the gateway signs them: the same dev key and claims."""

    def __init__(self, system: Any) -> None:
        settings = load_settings(system.env.env)
        self.keyring = KeyRing.from_env(system.env.env, production=False)
        self.issuer, self.audience = settings.jwt_issuer, settings.jwt_audience

    def claims(self, live_token: str) -> dict[str, Any]:
        """``claims_for`` of the token's caller, with the token's (live) session id."""
        decoded = unverified(live_token)
        actor = domain.actor_from_claims(decoded)
        assert actor is not None, decoded
        return domain.claims_for(actor, decoded["sid"])

    def mint(
        self,
        live_token: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        clock: Any = time.time,
    ) -> str:
        service = TokenService(
            self.keyring, issuer or self.issuer, audience or self.audience, clock=clock
        )
        return service.issue_access(self.claims(live_token))[0]

    def hand_signed(self, live_token: str, alg: str) -> str:
        """The live token's payload under ``alg: none`` or HS256 keyed with the public key."""
        header = {"alg": alg, "typ": "JWT", "kid": self.keyring.active_kid}
        signing_input = f"{b64(json.dumps(header).encode())}.{live_token.split('.')[1]}"
        if alg == "none":
            return signing_input + "."
        public_pem = self.keyring.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def foreign_key(self, live_token: str) -> str:
        return jwt.encode(
            unverified(live_token),
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": self.keyring.active_kid},
        )


def escalate(token: str, changes: dict[str, Any]) -> str:
    """The token's payload rewritten (more power), the original signature kept."""
    head, payload, signature = token.split(".")
    claims = {**json.loads(unb64(payload)), **changes}
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def login(system: Any, kind: str) -> Client:
    return system.staff("admin") if kind == "staff" else system.portal()


def revoked_family(system: Any, kind: str) -> str:
    """The access token of a refresh family revoked by refresh-token reuse."""
    first = login(system, kind)
    anon = system.anonymous()
    pair = ok(anon.post("/auth/refresh", {"refresh_token": first.refresh_token}))
    assert_problem(anon.post("/auth/refresh", {"refresh_token": first.refresh_token}), 401)
    return pair["access_token"]


@pytest.fixture(scope="module")
def bad_tokens(system: Any, world: World) -> dict[str, dict[str, str | None]]:
    """Per caller kind, a refused Authorization header value for every variant."""
    minter = Minter(system)
    out: dict[str, dict[str, str | None]] = {}
    for kind in ("staff", "portal"):
        live = login(system, kind).token
        assert live is not None
        logged_out = login(system, kind)
        assert logged_out.post("/auth/logout").status_code == 204
        if kind == "staff":
            weak = system.staff("technician").token
            more: dict[str, Any] = {"roles": ["admin", "manager"]}
        else:
            weak = world.clients["no_approve"].token
            more = {"perms": list(PORTAL_PERMISSIONS), "cid": world.ids["customer"]}
        head, payload, signature = live.split(".")
        tokens: dict[str, str | None] = {
            "missing": None,
            "not-bearer": f"Basic {b64(b'admin@demo.portico.local:portico-demo-pass')}",
            "garbage": "Bearer abc.def.ghi",
            "payload-flipped": f"{head}.{flip(payload)}.{signature}",
            "payload-escalated": escalate(weak, more),
            "signature-flipped": f"{head}.{payload}.{flip(signature)}",
            "expired": minter.mint(live, clock=lambda: time.time() - 3600),
            "wrong-audience": minter.mint(live, audience="someone-else"),
            "wrong-issuer": minter.mint(live, issuer="https://evil.example"),
            "alg-none": minter.hand_signed(live, "none"),
            "hs256-public-key": minter.hand_signed(live, "HS256"),
            "foreign-key": minter.foreign_key(live),
            "logged-out": logged_out.token,
            "refresh-family-revoked": revoked_family(system, kind),
        }
        out[kind] = {k: v if v is None or " " in v else f"Bearer {v}" for k, v in tokens.items()}
        # Controls: the untampered sources and a token minted the same way with the right
        # clock, audience and issuer all work, so each refusal above is for its one flaw.
        for good in (live, weak, minter.mint(live)):
            ok(world.client(good).get("/me"))
    assert set(out["staff"]) == set(BAD_TOKENS)
    return out


def caller_kind(route: Route) -> str:
    """The kind of bad token to present: one the route would otherwise accept."""
    return "staff" if "staff" in route.callers else "portal"


@pytest.mark.parametrize("variant", BAD_TOKENS)
@pytest.mark.parametrize("route", GUARDED, ids=ids_of(GUARDED))
def test_bad_or_missing_token_is_401(world, bad_tokens, route, variant):
    header = bad_tokens[caller_kind(route)][variant]
    client = world.client(None)
    if header is not None:
        client.http.headers["Authorization"] = header
    r = send(client, route, world.ids)
    assert_problem(r, 401, "token_expired" if variant == "expired" else "unauthenticated")


# --- sessions: logout and refresh-token reuse ---------------------------------------------


@pytest.mark.parametrize("kind", ["staff", "portal"])
def test_logout_ends_the_session_at_once(system, kind):
    client = login(system, kind)
    ok(client.get("/me"))
    assert client.post("/auth/logout").status_code == 204
    assert_problem(client.get("/me"), 401, "unauthenticated")
    refresh = system.anonymous().post("/auth/refresh", {"refresh_token": client.refresh_token})
    assert_problem(refresh, 401, "unauthenticated")


@pytest.mark.parametrize("kind", ["staff", "portal"])
def test_refresh_token_reuse_revokes_the_family(system, kind):
    first = login(system, kind)
    anon = system.anonymous()
    pair = ok(anon.post("/auth/refresh", {"refresh_token": first.refresh_token}))
    assert pair["refresh_token"] != first.refresh_token
    assert pair["access_token"] != first.token
    second = Client(system.base, pair["access_token"])
    ok(second.get("/me"))  # the rotated pair works...

    # ...until the old refresh token comes back: then the whole family is dead.
    assert_problem(anon.post("/auth/refresh", {"refresh_token": first.refresh_token}), 401)
    assert_problem(anon.post("/auth/refresh", {"refresh_token": pair["refresh_token"]}), 401)
    assert_problem(second.get("/me"), 401, "unauthenticated")
    assert_problem(first.get("/me"), 401, "unauthenticated")


# --- another tenant -----------------------------------------------------------------------


@pytest.mark.parametrize("route", WITH_PATH_ID, ids=ids_of(WITH_PATH_ID))
def test_other_tenant_staff_sees_nothing_by_id(world, route):
    r = send(world.clients["other_tenant"], route, world.ids)
    if "staff" in route.callers:
        assert_problem(r, 404, "not_found")
    else:
        assert_problem(r, 403, "forbidden")
    assert not world.demo_tenant_ids & set(re.findall(r"[0-9a-f-]{36}", r.text.lower()))


@pytest.mark.parametrize("route", PLAIN_GETS, ids=ids_of(PLAIN_GETS))
def test_other_tenant_staff_lists_show_nothing(world, route):
    r = send(world.clients["other_tenant"], route, world.ids)
    if "staff" not in route.callers:
        assert_problem(r, 403, "forbidden")
        return
    assert r.status_code == 200, r.text
    leaked = world.demo_tenant_ids & set(re.findall(r"[0-9a-f-]{36}", r.text.lower()))
    assert not leaked, f"{route.endpoint} shows the demo tenant's ids {sorted(leaked)}"


def test_other_tenant_staff_filters_cannot_reach_in(world):
    other = world.clients["other_tenant"]
    cid = world.ids["customer"]
    assert all_items(other, "/quote-requests", customer_id=cid) == []
    summary = ok(other.get("/quote-requests/summary", params={"customer_id": cid}))
    assert summary["total"] == 0
    csv = other.get("/quote-requests/export.csv", params={"customer_id": cid})
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 1  # the header


# --- another customer of the same tenant --------------------------------------------------


@pytest.mark.parametrize("route", WITH_PATH_ID, ids=ids_of(WITH_PATH_ID))
def test_other_customer_portal_sees_nothing_by_id(world, route):
    r = send(world.clients["other_customer"], route, world.ids)
    if "portal" in route.callers:
        assert_problem(r, 404, "not_found")
    else:
        assert_problem(r, 403, "forbidden")
    assert not world.demo_customer_ids & set(re.findall(r"[0-9a-f-]{36}", r.text.lower()))


@pytest.mark.parametrize("route", PLAIN_GETS, ids=ids_of(PLAIN_GETS))
def test_other_customer_portal_lists_show_nothing(world, route):
    r = send(world.clients["other_customer"], route, world.ids)
    if "portal" not in route.callers:
        assert_problem(r, 403, "forbidden")
        return
    assert r.status_code == 200, r.text
    leaked = world.demo_customer_ids & set(re.findall(r"[0-9a-f-]{36}", r.text.lower()))
    assert not leaked, f"{route.endpoint} shows the demo customer's ids {sorted(leaked)}"


def test_other_customer_portal_filters_cannot_reach_in(world):
    other = world.clients["other_customer"]
    cid = world.ids["customer"]
    assert all_items(other, "/quote-requests", customer_id=cid) == []
    assert [q["id"] for q in all_items(other, "/quote-requests")] == [world.ids["other_quote"]]
    assert ok(other.get("/quote-requests/summary", params={"customer_id": cid}))["total"] == 0
    assert ok(other.get("/quote-requests/summary"))["total"] == 1
    assert ok(other.get("/action-required"))["items"] == []
    # ...and the other way round: the demo customer sees its target, not the other's request
    mine = {q["id"] for q in all_items(world.clients["portal"], "/quote-requests")}
    assert world.ids["quote"] in mine and world.ids["other_quote"] not in mine


# --- roles and permissions ----------------------------------------------------------------

FORBIDDEN_CALLS = [
    # (caller, method, path, body, code)
    (
        "no_approve",
        "POST",
        "/quote-requests/{quote}/approve",
        {"po_number": "PO-1"},
        "permission_required",
    ),  # fmt: skip
    ("no_approve", "POST", "/quote-requests/{quote}/deny", {"reason": "no"}, "permission_required"),
    ("no_request", "POST", "/quote-requests", {"description": "x"}, "permission_required"),
    ("no_request", "POST", "/quote-requests/{quote}/cancel", {}, "permission_required"),
    ("technician", "PATCH", "/quote-requests/{quote}", {"description": "changed"}, "forbidden"),
    ("technician", "PATCH", "/quote-requests/{quote}", {"status": "in_process"}, "forbidden"),
    ("technician", "POST", "/quote-requests/{quote}/approve", {}, "forbidden"),
    ("technician", "POST", "/quote-requests/{quote}/cancel", {}, "forbidden"),
    ("technician", "POST", "/customers", {"name": "Tech Co"}, "forbidden"),
    ("technician", "PATCH", "/customers/{customer}", {"name": "Renamed"}, "forbidden"),
    ("technician", "GET", "/customers/{customer}/portal-accounts", None, "forbidden"),
    ("advisor", "POST", "/quote-requests/{quote}/approve", {}, "forbidden"),
    ("advisor", "DELETE", "/quote-requests/{quote}/comments/{comment}", None, "forbidden"),
    ("technician", "DELETE", "/quote-requests/{quote}/comments/{comment}", None, "forbidden"),
    ("portal", "DELETE", "/quote-requests/{quote}/comments/{comment}", None, "forbidden"),
    ("manager", "GET", "/users", None, "forbidden"),
    (
        "manager",
        "POST",
        "/users",
        {
            "email": "new@demo.example",
            "first_name": "N",
            "last_name": "U",
            "roles": ["admin"],
        },
        "forbidden",
    ),  # fmt: skip
    ("manager", "POST", "/users/{user}/invitation", None, "forbidden"),
    ("technician", "POST", "/portal-accounts/{portal_account}/invitation", None, "forbidden"),
    ("technician", "GET", "/settings", None, "forbidden"),
    ("advisor", "GET", "/settings", None, "forbidden"),
    ("manager", "GET", "/settings", None, "forbidden"),
    ("manager", "PATCH", "/users/{user}", {"roles": ["admin"]}, "forbidden"),
    ("advisor", "PATCH", "/settings", {"tax_rate_bp": 1}, "forbidden"),
    ("manager", "PATCH", "/settings", {"tax_rate_bp": 1}, "forbidden"),
    ("portal", "PATCH", "/quote-requests/{quote}", {"status": "in_process"}, "forbidden"),
    ("portal", "GET", "/customers", None, "forbidden"),
    ("portal", "POST", "/customers/{customer}/preview", None, "forbidden"),
]


@pytest.mark.parametrize(
    ("caller", "method", "path", "body", "code"),
    FORBIDDEN_CALLS,
    ids=[f"{c[0]}: {c[1]} {c[2]}" for c in FORBIDDEN_CALLS],
)
def test_missing_role_or_permission_is_403(world, caller, method, path, body, code):
    r = world.clients[caller].request(method, path.format(**world.ids), json=body)
    assert_problem(r, 403, code)


def test_portal_cannot_upload_a_quote_document(world):
    r = world.clients["portal"].post(
        f"/quote-requests/{world.ids['quote']}/attachments",
        files={"file": ("fake-quote.pdf", io.BytesIO(PDF), "application/pdf")},
        data={"kind": "quote_document"},
    )
    assert_problem(r, 403, "forbidden")


# --- the read-only preview ----------------------------------------------------------------


def test_preview_token_reads_the_customers_quotes(world):
    preview, ids = world.clients["preview"], world.ids
    me = ok(preview.get("/me"))
    assert me["read_only"] is True and me["customer_id"] == ids["customer"]
    assert ids["quote"] in {q["id"] for q in all_items(preview, "/quote-requests")}
    assert ok(preview.get(f"/quote-requests/{ids['quote']}"))["id"] == ids["quote"]
    assert ok(preview.get(f"/quote-requests/{ids['quote']}/comments"))["items"]
    download = preview.get(f"/quote-requests/{ids['quote']}/attachments/{ids['attachment']}")
    assert download.status_code == 200 and download.content == PDF
    # ...but only that customer's
    assert_problem(preview.get(f"/quote-requests/{ids['other_quote']}"), 404, "not_found")
    assert ids["other_quote"] not in {q["id"] for q in all_items(preview, "/quote-requests")}


@pytest.mark.parametrize("route", WRITES, ids=ids_of(WRITES))
def test_preview_token_cannot_write(world, route):
    assert_problem(send(world.clients["preview"], route, world.ids), 403, "forbidden")


# --- and nothing changed ------------------------------------------------------------------


def test_nothing_changed(world):
    """Runs last: every refused write above left the demo tenant exactly as it was."""
    assert snapshot(world) == world.before
