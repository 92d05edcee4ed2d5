"""Accounts against the running system: staff never set or learn a password (items 3),
invitation and reset links are single-use, expiring and bound to their tenant, a reset
ends every session; feature switches (item 15), the staff directory (item 19) and the
per-account preview (item 23). Through the public HTTP API; the database is only read
(and, for expiry, its clock moved) with the operator's URL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from kit.context import PORTAL_PERMISSIONS
from kit.db import sa_url
from portico.devmail import read_mailbox
from tests.support import (
    ROOT,
    Client,
    accept_invitation,
    invite_portal_user,
    mailed_link_token,
    strong_password,
)


def ok(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


def refused(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:400]}"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.json()


@pytest.fixture(scope="module")
def db(system: Any) -> Iterator[Any]:
    engine = create_engine(sa_url(system.env.admin_url))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def customer(system: Any) -> str:
    admin = system.staff("admin")
    return ok(admin.post("/customers", {"name": f"Accounts {uuid.uuid4().hex[:6]}"}), 201)["id"]


def new_account(admin: Client, customer_id: str, **fields: Any) -> dict[str, Any]:
    body = {
        "email": f"acct-{uuid.uuid4().hex[:10]}@example.com",
        "first_name": "Sam",
        "last_name": "Customer",
        **fields,
    }
    return ok(admin.post(f"/customers/{customer_id}/portal-accounts", body), 201)


def mails_to(system: Any, email: str) -> list[Any]:
    return [m for m in read_mailbox(system.env.mail_dir) if str(m["To"]).lower() == email]


# --- staff never set a password ----------------------------------------------------------


@pytest.mark.parametrize("role", ["advisor", "manager", "admin"])
def test_staff_can_never_set_a_portal_password(system, customer, role):
    staff = system.staff(role)
    chosen = "Staff-chosen-passw0rd-" + uuid.uuid4().hex[:6]
    email = f"takeover-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "first_name": "Vic", "last_name": "Tim", "password": chosen}
    r = staff.post(f"/customers/{customer}/portal-accounts", body)
    refused(r, 422, "validation_failed")
    assert "password" in r.json()["errors"]

    del body["password"]
    account = ok(staff.post(f"/customers/{customer}/portal-accounts", body), 201)
    assert account["invitation_pending"] is True and "password" not in account
    refused(
        staff.patch(f"/portal-accounts/{account['id']}", {"password": chosen}),
        422,
        "validation_failed",
    )
    # the password-less account cannot be signed into, with the staff's choice or anything
    for guess in (chosen, "", "x" * 12):
        r = system.anonymous().post(
            "/auth/token", {"tenant": system.tenant, "email": email, "password": guess or "?"}
        )
        refused(r, 401, "unauthenticated")


def test_admins_never_set_a_staff_password(system):
    admin = system.staff("admin")
    body: dict[str, Any] = {
        "email": f"staff-{uuid.uuid4().hex[:8]}@example.com",
        "first_name": "New",
        "last_name": "Hire",
        "roles": ["advisor"],
        "password": "Admin-chosen-passw0rd",
    }
    refused(admin.post("/users", body), 422, "validation_failed")
    del body["password"]
    user = ok(admin.post("/users", body), 201)
    assert user["invitation_pending"] is True
    refused(
        admin.patch(f"/users/{user['id']}", {"password": "Admin-chosen-passw0rd"}),
        422,
        "validation_failed",
    )
    password = accept_invitation(system.base, system.env.mail_dir, body["email"])
    advisor = system.anonymous().login(system.tenant, body["email"], password)
    assert ok(advisor.get("/me"))["roles"] == ["advisor"]
    listed = ok(admin.get("/users", params={"limit": 200}))["items"]
    assert next(u for u in listed if u["id"] == user["id"])["invitation_pending"] is False


# --- invitations -------------------------------------------------------------------------


def test_an_invitation_is_single_use_and_signs_in(system, customer):
    admin = system.staff("admin")
    account = new_account(admin, customer, permissions=["quotes.request"])
    token = mailed_link_token(system.env.mail_dir, account["email"])
    assert token.split(".")[0] == ok(admin.get("/me"))["tenant_id"]
    anon = system.anonymous()

    weak = anon.post("/auth/invitations/accept", {"token": token, "password": "password1234"})
    refused(weak, 422, "validation_failed")  # a weak password does not use the link up
    password = strong_password()
    tokens = ok(anon.post("/auth/invitations/accept", {"token": token, "password": password}))
    me = ok(Client(system.base, tokens["access_token"]).get("/me"))
    assert me["id"] == account["id"] and me["permissions"] == ["quotes.request"]
    again = anon.post("/auth/invitations/accept", {"token": token, "password": strong_password()})
    refused(again, 422, "invalid_link")
    system.anonymous().login(system.tenant, account["email"], password)  # the first one stands
    after = ok(admin.get(f"/customers/{customer}/portal-accounts", params={"limit": 200}))
    assert (
        next(a for a in after["items"] if a["id"] == account["id"])["invitation_pending"] is False
    )
    # nothing to invite any more
    refused(admin.post(f"/portal-accounts/{account['id']}/invitation"), 409, "conflict")


def test_sending_the_invitation_again_replaces_the_link(system, customer):
    advisor = system.staff("advisor")
    account = new_account(advisor, customer)
    first = mailed_link_token(system.env.mail_dir, account["email"])
    again = ok(advisor.post(f"/portal-accounts/{account['id']}/invitation"))
    assert again["invitation_pending"] is True
    second = mailed_link_token(system.env.mail_dir, account["email"], exclude={first})
    anon = system.anonymous()
    refused(
        anon.post("/auth/invitations/accept", {"token": first, "password": strong_password()}),
        422,
        "invalid_link",
    )
    ok(anon.post("/auth/invitations/accept", {"token": second, "password": strong_password()}))


def test_links_expire(system, customer, db):
    admin = system.staff("admin")
    account = new_account(admin, customer)
    token = mailed_link_token(system.env.mail_dir, account["email"])
    with db.begin() as conn:  # the link's clock, moved past its end
        conn.execute(
            text(
                "update gateway.link_tokens set expires_at = now() - interval '1 second'"
                " where subject_id = :s"
            ),
            {"s": account["id"]},
        )
    r = system.anonymous().post(
        "/auth/invitations/accept", {"token": token, "password": strong_password()}
    )
    refused(r, 422, "invalid_link")


@pytest.mark.parametrize(
    "mangle",
    ["other-tenant", "random-tenant", "wrong-purpose", "secret-flipped", "no-tenant", "garbage"],
)
def test_links_are_bound_to_their_tenant_and_purpose(system, customer, other_tenant, mangle):
    admin = system.staff("admin")
    account = new_account(admin, customer)
    token = mailed_link_token(system.env.mail_dir, account["email"])
    tenant_id, secret = token.split(".", 1)
    presented = {
        "other-tenant": f"{other_tenant['tenant_id']}.{secret}",
        "random-tenant": f"{uuid.uuid4()}.{secret}",
        "wrong-purpose": token,
        "secret-flipped": f"{tenant_id}.{secret[:-2]}{'AA' if secret[-2:] != 'AA' else 'BB'}",
        "no-tenant": secret,
        "garbage": "x" * 40,
    }[mangle]
    path = (
        "/auth/password-reset/confirm" if mangle == "wrong-purpose" else "/auth/invitations/accept"
    )
    anon = system.anonymous()
    refused(
        anon.post(path, {"token": presented, "password": strong_password()}), 422, "invalid_link"
    )
    # ...and the real link still works: nothing above used it up
    ok(anon.post("/auth/invitations/accept", {"token": token, "password": strong_password()}))


def test_disabled_accounts_cannot_accept(system, customer):
    admin = system.staff("admin")
    account = new_account(admin, customer)
    token = mailed_link_token(system.env.mail_dir, account["email"])
    ok(admin.patch(f"/portal-accounts/{account['id']}", {"enabled": False}))
    r = system.anonymous().post(
        "/auth/invitations/accept", {"token": token, "password": strong_password()}
    )
    refused(r, 422, "invalid_link")


# --- password reset ----------------------------------------------------------------------


def test_a_reset_sets_the_password_and_ends_every_session(system, customer):
    admin = system.staff("admin")
    portal, account = invite_portal_user(system, admin, customer)
    other_session = system.anonymous().login(system.tenant, account["email"], account["password"])
    anon = system.anonymous()
    r = anon.post(
        "/auth/password-reset", {"tenant": system.tenant, "email": account["email"].upper()}
    )
    assert r.status_code == 202 and r.json() == {"detail": ok(r, 202)["detail"]}
    token = mailed_link_token(system.env.mail_dir, account["email"], "password_reset")
    ok(portal.get("/me"))  # asking alone changes nothing

    new_password = strong_password()
    assert (
        anon.post(
            "/auth/password-reset/confirm", {"token": token, "password": new_password}
        ).status_code
        == 204
    )
    for client in (portal, other_session):
        refused(client.get("/me"), 401, "unauthenticated")  # old access tokens
        refused(
            anon.post("/auth/refresh", {"refresh_token": client.refresh_token}),
            401,
            "unauthenticated",
        )
    refused(
        anon.post(
            "/auth/token",
            {"tenant": system.tenant, "email": account["email"], "password": account["password"]},
        ),
        401,
        "unauthenticated",
    )
    ok(system.anonymous().login(system.tenant, account["email"], new_password).get("/me"))
    again = anon.post(
        "/auth/password-reset/confirm", {"token": token, "password": strong_password()}
    )
    refused(again, 422, "invalid_link")


def test_reset_answers_the_same_whatever_the_account(system, customer):
    admin = system.staff("admin")
    disabled = new_account(admin, customer)
    ok(admin.patch(f"/portal-accounts/{disabled['id']}", {"enabled": False}))
    _client, known = invite_portal_user(system, admin, customer)
    anon = system.anonymous()
    cases = {
        "known": {"tenant": system.tenant, "email": known["email"]},
        "unknown-email": {
            "tenant": system.tenant,
            "email": f"nobody-{uuid.uuid4().hex[:6]}@example.com",
        },
        "unknown-tenant": {"tenant": f"no-{uuid.uuid4().hex[:6]}", "email": known["email"]},
        "disabled": {"tenant": system.tenant, "email": disabled["email"]},
    }
    bodies, times = set(), {}
    for name, body in cases.items():
        started = time.perf_counter()
        r = anon.post("/auth/password-reset", body)
        times[name] = time.perf_counter() - started
        assert r.status_code == 202, r.text
        bodies.add(r.text)
    assert len(bodies) == 1
    spread = max(times.values()) - min(times.values())
    assert spread < 0.15, times
    mailed = mailed_link_token(system.env.mail_dir, known["email"], "password_reset")
    assert mailed
    time.sleep(1)  # the disabled account got no link
    assert not [
        m
        for m in mails_to(system, disabled["email"])
        if "/password-reset" in m.get_body(preferencelist=("plain",)).get_content()
    ]


def test_the_per_account_limit_is_silent(system, customer):
    admin = system.staff("admin")
    _client, account = invite_portal_user(system, admin, customer)
    anon = system.anonymous()
    body = {"tenant": system.tenant, "email": account["email"]}
    answers = [anon.post("/auth/password-reset", body) for _ in range(5)]
    assert [r.status_code for r in answers] == [202] * 5
    assert len({r.text for r in answers}) == 1
    mailed_link_token(system.env.mail_dir, account["email"], "password_reset")
    time.sleep(2)

    def resets() -> int:
        return sum(
            "/password-reset" in m.get_body(preferencelist=("plain",)).get_content()
            for m in mails_to(system, account["email"])
        )

    assert resets() == 3  # PASSWORD_RESET_LIMIT_PER_ACCOUNT


# --- feature switches --------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_tenant(system: Any) -> dict[str, Any]:
    slug = f"acc-{uuid.uuid4().hex[:8]}"
    email, password = f"admin@{slug}.example", strong_password()
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "tenant", "create", "--slug", slug,
         "--name", "Accounts Other Shop", "--admin-email", email, "--admin-password", password],
        env=system.env.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["slug"] == slug
    admin = system.anonymous().login(slug, email, password)
    return {"slug": slug, "admin": admin, "tenant_id": ok(admin.get("/me"))["tenant_id"]}


def test_a_customers_switched_off_feature_is_403_for_its_portal_users(system):
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"No quotes {uuid.uuid4().hex[:6]}"}), 201)["id"]
    portal, _account = invite_portal_user(system, admin, cid, permissions=list(PORTAL_PERMISSIONS))
    ok(portal.get("/quote-requests"))
    before = ok(portal.get("/me"))
    assert before["features"] == {
        "quotes": True,
        "bookings": True,
        "payments": True,
        "history": True,
    }
    assert "approval_terms" in before

    ok(admin.patch(f"/customers/{cid}", {"portal_features": {"quotes": False}}))
    refused(portal.get("/quote-requests"), 403, "feature_disabled")
    refused(portal.post("/quote-requests", {"description": "x"}), 403, "feature_disabled")
    assert ok(portal.get("/me"))["features"]["quotes"] is False
    assert ok(portal.get("/action-required"))["items"] == []
    # staff are never feature-gated
    ok(admin.get("/quote-requests", params={"customer_id": cid}))
    ok(admin.post("/quote-requests", {"description": "by staff", "customer_id": cid}), 201)
    ok(admin.patch(f"/customers/{cid}", {"portal_features": {"quotes": True}}))
    ok(portal.get("/quote-requests"))


def test_a_tenants_switched_off_feature_is_403_and_in_me(system, other_tenant, db):
    admin = other_tenant["admin"]
    cid = ok(admin.post("/customers", {"name": "Other's customer"}), 201)["id"]
    email = f"other-{uuid.uuid4().hex[:8]}@example.com"
    ok(admin.post(f"/customers/{cid}/portal-accounts", {"email": email, "first_name": "O", "last_name": "P", "permissions": ["quotes.request"]}), 201)  # fmt: skip
    password = accept_invitation(system.base, system.env.mail_dir, email)
    portal = system.anonymous().login(other_tenant["slug"], email, password)
    ok(portal.get("/quote-requests"))

    settings = ok(admin.get("/settings"))
    assert settings["notify_new_request_roles"] == ["manager", "advisor"]
    changed = ok(
        admin.patch(
            "/settings",
            {
                "features": {"quotes": False},
                "approval_terms": "Terms v2",
                "notify_new_request_roles": ["admin"],
            },
        )
    )
    assert changed["features"]["quotes"] is False and changed["notify_new_request_roles"] == [
        "admin"
    ]
    refused(portal.get("/quote-requests"), 403, "feature_disabled")
    me = ok(portal.get("/me"))
    assert me["features"]["quotes"] is False and me["approval_terms"] == "Terms v2"
    refused(
        admin.patch("/settings", {"notify_new_request_roles": ["customer"]}),
        422,
        "validation_failed",
    )
    with db.connect() as conn:
        events = (
            conn.execute(
                text(
                    "select envelope from gateway.outbox where tenant_id = :t"
                    " and type = 'directory.settings.updated' order by created_at"
                ),
                {"t": other_tenant["tenant_id"]},
            )
            .scalars()
            .all()
        )
    full = ("tax_rate_bp", "currency", "approval_terms", "reason_codes", "work_order_token_hours")
    assert events and events[-1]["data"] == {
        "features": {"quotes": False, "bookings": True, "payments": True, "history": True},
        "notify_new_request_roles": ["admin"],
        **{k: changed[k] for k in full},
    }
    ok(admin.patch("/settings", {"features": {"quotes": True}}))
    ok(portal.get("/quote-requests"))


# --- staff directory ---------------------------------------------------------------------


def test_every_staff_role_reads_the_staff_directory(system):
    for role in ("technician", "advisor", "manager", "admin"):
        staff = ok(system.staff(role).get("/staff", params={"limit": 200}))["items"]
        names = {(s["first_name"], s["last_name"]) for s in staff}
        assert ("Terry", "Technician") in names and ("Ada", "Admin") in names
        assert all(set(s) == {"id", "first_name", "last_name", "roles", "active"} for s in staff)
    techs = ok(system.staff("technician").get("/staff", params={"role": "technician"}))["items"]
    assert techs and all("technician" in s["roles"] for s in techs)
    page = ok(system.staff("advisor").get("/staff", params={"limit": 1}))
    assert len(page["items"]) == 1 and page["next_cursor"]
    refused(system.portal().get("/staff"), 403, "forbidden")
    refused(system.staff("technician").get("/settings"), 403, "forbidden")


# --- preview one account -----------------------------------------------------------------


def test_preview_shows_exactly_one_accounts_view(system, customer):
    admin, advisor = system.staff("admin"), system.staff("advisor")
    unit = ok(admin.post(f"/customers/{customer}/units", {"make": "Preview", "serial": "P-1"}), 201)
    account = new_account(admin, customer, permissions=["quotes.request"], unit_ids=[unit["id"]])
    preview = ok(
        advisor.post(f"/customers/{customer}/preview", {"portal_account_id": account["id"]})
    )
    assert "refresh_token" not in preview
    viewer = Client(system.base, preview["access_token"])
    me = ok(viewer.get("/me"))
    assert me["read_only"] is True and me["customer_id"] == customer
    assert me["permissions"] == ["quotes.request"] and me["unit_ids"] == [unit["id"]]
    units = ok(viewer.get(f"/customers/{customer}/units"))["items"]
    assert [u["id"] for u in units] == [unit["id"]]
    refused(viewer.post("/quote-requests", {"description": "x"}), 403, "forbidden")

    # an account of another customer is not this customer's: 404
    demo_account = ok(system.portal().get("/me"))["id"]
    refused(
        advisor.post(f"/customers/{customer}/preview", {"portal_account_id": demo_account}),
        404,
        "not_found",
    )
    refused(advisor.post(f"/customers/{customer}/preview", {}), 422, "validation_failed")
