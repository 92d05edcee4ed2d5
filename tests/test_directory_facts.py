"""The gateway publishes the directory facts other services keep copies of (issue 7
item 11): portal accounts, tenant settings in full, customer settings. Each fact is in
the gateway's outbox, written in the same transaction as the change, right after the
API call; no event but the private ``auth.link_issued`` carries a password hash or a
link token. Driven through the public API; the outbox is read with the operator's URL."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from contracts.events import PRIVATE_EVENTS
from kit.db import sa_url
from tests.support import ROOT, invite_portal_user


def ok(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.url}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


@pytest.fixture(scope="module")
def db(system: Any) -> Iterator[Any]:
    engine = create_engine(sa_url(system.env.admin_url))
    try:
        yield engine
    finally:
        engine.dispose()


def facts(db: Any, event_type: str, subject_id: str | None = None) -> list[dict[str, Any]]:
    """The data of every ``event_type`` in the gateway outbox (about one id), oldest first."""
    with db.connect() as conn:
        envelopes = conn.execute(
            text("select envelope from gateway.outbox where type = :t order by created_at, id"),
            {"t": event_type},
        ).scalars()
        return [
            e["data"] for e in envelopes if subject_id is None or e["data"].get("id") == subject_id
        ]


def last_fact(db: Any, event_type: str, subject_id: str | None = None) -> dict[str, Any]:
    found = facts(db, event_type, subject_id)
    assert found, f"no {event_type} for {subject_id}"
    return found[-1]


def account_fact(account: dict[str, Any]) -> dict[str, Any]:
    """What ``directory.portal_account.*`` says of an account the API returned."""
    return {
        "id": account["id"],
        "customer_id": account["customer_id"],
        "contact_id": account["contact_id"],
        "name": f"{account['first_name']} {account['last_name']}",
        "email": account["email"],
        "permissions": account["permissions"],
        "unit_ids": account["unit_ids"],
        "enabled": account["enabled"],
    }


def customer_fact(customer: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "account_number", "require_invoice_authorization", "portal_features")
    return {k: customer[k] for k in keys}


def test_customer_facts_carry_its_settings(system, db):
    admin = system.staff("admin")
    body = {
        "name": f"Facts {uuid.uuid4().hex[:6]}",
        "account_number": f"AC-{uuid.uuid4().hex[:6]}",
        "require_invoice_authorization": True,
        "portal_features": {"quotes": False},
    }
    customer = ok(admin.post("/customers", body), 201)
    assert last_fact(db, "directory.customer.created", customer["id"]) == customer_fact(customer)

    changed = ok(
        admin.patch(
            f"/customers/{customer['id']}",
            {"require_invoice_authorization": False, "portal_features": {"history": False}},
        )
    )
    assert changed["portal_features"] == {"quotes": False, "history": False}
    assert last_fact(db, "directory.customer.updated", customer["id"]) == customer_fact(changed)


def test_portal_account_facts_follow_every_change(system, db):
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Accounts {uuid.uuid4().hex[:6]}"}), 201)["id"]
    unit = ok(admin.post(f"/customers/{cid}/units", {"fleet_number": "F-1"}), 201)
    contact = ok(
        admin.post(
            f"/customers/{cid}/contacts",
            {"first_name": "Cy", "last_name": "Contact", "email": "cy@example.com"},
        ),
        201,
    )
    account = ok(
        admin.post(
            f"/customers/{cid}/portal-accounts",
            {
                "email": f"facts-{uuid.uuid4().hex[:10]}@example.com",
                "first_name": "Pat",
                "last_name": "Portal",
                "permissions": ["quotes.request"],
                "unit_ids": [unit["id"]],
                "contact_id": contact["id"],
            },
        ),
        201,
    )
    created = facts(db, "directory.portal_account.created", account["id"])
    assert created == [account_fact(account)]
    assert created[0]["unit_ids"] == [unit["id"]] and created[0]["contact_id"] == contact["id"]

    changed = ok(
        admin.patch(
            f"/portal-accounts/{account['id']}",
            {"enabled": False, "unit_ids": None, "first_name": "Patricia"},
        )
    )
    fact = last_fact(db, "directory.portal_account.updated", account["id"])
    assert fact == account_fact(changed)
    assert fact["enabled"] is False and fact["unit_ids"] is None and fact["name"].startswith("Pat")

    # A change that changes nothing publishes nothing.
    before = len(facts(db, "directory.portal_account.updated", account["id"]))
    ok(admin.patch(f"/portal-accounts/{account['id']}", {"enabled": False}))
    assert len(facts(db, "directory.portal_account.updated", account["id"])) == before

    ok(admin.delete(f"/portal-accounts/{account['id']}"), 204)
    assert facts(db, "directory.portal_account.deleted", account["id"]) == [account_fact(changed)]


def test_a_portal_person_renaming_themselves_is_a_fact(system, db):
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Rename {uuid.uuid4().hex[:6]}"}), 201)["id"]
    portal, account = invite_portal_user(system, admin, cid)
    ok(portal.patch("/me", {"first_name": "Renamed", "last_name": "Person"}))
    fact = last_fact(db, "directory.portal_account.updated", account["id"])
    assert fact["name"] == "Renamed Person" and fact["email"] == account["email"]


def test_tenant_settings_facts_are_complete(system, db):
    admin = system.staff("admin")
    before = ok(admin.get("/settings"))
    tenant_id = ok(admin.get("/me"))["tenant_id"]
    keys = (
        "features",
        "notify_new_request_roles",
        "tax_rate_bp",
        "currency",
        "approval_terms",
        "reason_codes",
        "work_order_token_hours",
    )
    # The seed published the demo tenant's settings when it created them.
    with db.connect() as conn:
        seeded = conn.execute(
            text(
                "select envelope from gateway.outbox where tenant_id = :t"
                " and type = 'directory.settings.updated' order by created_at limit 1"
            ),
            {"t": tenant_id},
        ).scalar_one()
    assert set(seeded["data"]) == set(keys) and seeded["data"]["currency"]
    try:
        changed = ok(
            admin.patch(
                "/settings",
                {
                    "tax_rate_bp": 825,
                    "currency": "CAD",
                    "work_order_token_hours": 24,
                    "reason_codes": ["phone", "visit"],
                },
            )
        )
        with db.connect() as conn:
            newest = conn.execute(
                text(
                    "select envelope from gateway.outbox where tenant_id = :t"
                    " and type = 'directory.settings.updated' order by created_at desc limit 1"
                ),
                {"t": tenant_id},
            ).scalar_one()
        assert newest["data"] == {k: changed[k] for k in keys}
        assert newest["data"]["tax_rate_bp"] == 825 and newest["data"]["currency"] == "CAD"
    finally:
        restore = {k: before[k] for k in ("tax_rate_bp", "currency", "work_order_token_hours")}
        ok(admin.patch("/settings", {**restore, "reason_codes": before["reason_codes"]}))


def test_republish_emits_accounts_and_full_settings(system, db):
    admin = system.staff("admin")
    cid = ok(admin.post("/customers", {"name": f"Republish {uuid.uuid4().hex[:6]}"}), 201)["id"]
    account = ok(
        admin.post(
            f"/customers/{cid}/portal-accounts",
            {
                "email": f"rp-{uuid.uuid4().hex[:10]}@example.com",
                "first_name": "R",
                "last_name": "P",
            },
        ),
        201,
    )
    settings_before = len(facts(db, "directory.settings.updated"))
    done = subprocess.run(
        [sys.executable, "-m", "portico.cli", "directory", "republish", "--tenant", system.tenant],
        env=system.env.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"portal_accounts":' in done.stdout
    assert facts(db, "directory.portal_account.updated", account["id"]) == [account_fact(account)]
    settings = ok(admin.get("/settings"))
    assert len(facts(db, "directory.settings.updated")) > settings_before
    assert last_fact(db, "directory.settings.updated")["tax_rate_bp"] == settings["tax_rate_bp"]
    assert (
        last_fact(db, "directory.customer.updated", cid)["require_invoice_authorization"] is False
    )


def _keys(value: Any) -> Iterator[str]:
    """Every key at any depth of a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_no_event_but_the_private_link_carries_a_secret(system, db):
    """Every envelope the gateway ever wrote this session: password hashes (read from
    the database) and link tokens (from the private events) appear in none of the others."""
    with db.connect() as conn:
        envelopes = conn.execute(text("select envelope from gateway.outbox")).scalars().all()
        hashes = set(
            conn.execute(
                text(
                    "select password_hash from gateway.staff_users where password_hash is not null"
                    " union select password_hash from gateway.portal_accounts"
                    " where password_hash is not null"
                )
            ).scalars()
        )
    private = [e for e in envelopes if e["type"] in PRIVATE_EVENTS]
    public = [e for e in envelopes if e["type"] not in PRIVATE_EVENTS]
    tokens = {e["data"]["token"] for e in private}
    secrets = {t.split(".", 1)[-1] for t in tokens} | tokens
    assert hashes and tokens and public  # the session signed people in and invited them
    assert {e["type"] for e in private} == {"auth.link_issued"}
    for envelope in public:
        keys = set(_keys(envelope))
        assert not keys & {"password_hash", "password", "token", "token_hash"}, envelope["type"]
        body = json.dumps(envelope)
        assert "$argon2" not in body, envelope["type"]
        assert not any(secret in body for secret in secrets | hashes), envelope["type"]
