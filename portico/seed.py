"""Tenants (operator CLI) and the demo data ``portico up`` creates.

The demo goes through the public API like any client, so its staff users and portal
account are created the way a shop creates them: without a password, with an
invitation mailed to them. Only then, on the operator's side (this process has the
database settings, a client never does), the published demo logins get the demo
password set directly: demo data only, never something the API can do.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from sqlalchemy import select, update

from kit.config import Settings
from kit.context import PORTAL_PERMISSIONS
from kit.db import DatabaseCore, utcnow
from kit.messaging import EventPublisher, publish_committed
from services.gateway import domain
from services.gateway.models import (
    LinkToken,
    PortalAccount,
    StaffUser,
    Tenant,
    TenantSettings,
    metadata,
)
from services.gateway.rebuild import mark_built
from services.gateway.tokens import hash_password

DEMO_TENANT = "demo"
DEMO_PASSWORD = "portico-demo-pass"  # noqa: S105 - published demo login
DEMO_STAFF = [
    ("admin@demo.portico.local", "Ada", "Admin", ["admin"]),
    ("manager@demo.portico.local", "Max", "Manager", ["manager"]),
    ("advisor@demo.portico.local", "Avery", "Advisor", ["advisor"]),
    ("tech@demo.portico.local", "Terry", "Technician", ["technician"]),
]
DEMO_PORTAL = "fleet@acme.example"


def create_tenant(
    settings: Settings,
    slug: str,
    name: str,
    admin_email: str,
    admin_password: str,
    first_name: str = "Admin",
    last_name: str = "User",
) -> str:
    """Create a tenant with its settings and first admin; idempotent on the slug."""
    slug = slug.strip().lower()
    if not domain.valid_slug(slug):
        raise SystemExit("portico: the slug must be lowercase letters, digits and dashes")
    email = domain.normalise_email(admin_email)
    if not domain.valid_email(email) or len(admin_password) < 12:
        raise SystemExit("portico: a valid admin email and a password of 12+ characters are needed")
    core = DatabaseCore(settings.service_database_url("gateway"), metadata, pool_size=1)
    try:
        with core.unit_of_work(system=True) as uow:
            existing = uow.session.scalars(select(Tenant).where(Tenant.slug == slug)).first()
            if existing is not None:
                return existing.id
            tenant = Tenant(slug=slug, name=name.strip())
            uow.session.add(tenant)
            uow.session.flush()
            tenant_id = tenant.id
        publisher = EventPublisher(settings.amqp_uri)
        core.after_commit.append(lambda envelopes: publish_committed(core, publisher, envelopes))
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            tenant_settings = TenantSettings(
                features={f: True for f in domain.TENANT_FEATURES},
                reason_codes=["phone", "in_person", "email"],
            )
            uow.session.add(tenant_settings)
            admin = StaffUser(
                email=email,
                password_hash=hash_password(admin_password),
                first_name=first_name,
                last_name=last_name,
                roles=["admin"],
            )
            uow.session.add(admin)
            uow.session.flush()
            uow.emit("directory.tenant.created", {"id": tenant_id, "slug": slug, "name": name})
            uow.emit("directory.settings.updated", domain.settings_event(tenant_settings))
            uow.emit("directory.staff_user.created", domain.staff_user_event(admin))
        mark_built(core, tenant_id)  # a new tenant's read views start complete (empty)
        return tenant_id
    finally:
        core.dispose()


class Api:
    """A tiny client of the public API (the demo goes through the same door as users)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/") + "/api/v1"
        self.http = requests.Session()

    def login(self, tenant: str, email: str, password: str) -> None:
        r = self.http.post(
            f"{self.base}/auth/token",
            json={"tenant": tenant, "email": email, "password": password},
            timeout=10,
        )
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def get(self, path: str, **kw: Any) -> Any:
        r = self.http.get(self.base + path, timeout=15, **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any], wait_known: float = 0) -> Any:
        """POST; with ``wait_known`` seconds, retry while a service answers that a
        reference is unknown (``unknown ...`` in a 404): services learn of new customers,
        units and staff from events, a few milliseconds after the gateway's commit."""
        deadline = time.monotonic() + wait_known
        r = self.http.post(self.base + path, json=body, timeout=15)
        while _unknown_reference(r) and time.monotonic() < deadline:
            time.sleep(0.05)
            r = self.http.post(self.base + path, json=body, timeout=15)
        if r.status_code >= 400:
            raise RuntimeError(f"POST {path} -> {r.status_code}: {r.text}")
        return r.json() if r.content else None


def _unknown_reference(r: requests.Response) -> bool:
    if r.status_code != 404:
        return False
    errors = r.json().get("errors") or {}
    return any(
        isinstance(m, str) and m.startswith("unknown")
        for messages in errors.values()
        if isinstance(messages, list)
        for m in messages
    )


def seed_demo(settings: Settings, base_url: str) -> dict[str, Any]:
    """Create the demo tenant and its sample data, unless it is already there."""
    admin_email = DEMO_STAFF[0][0]
    tenant_id = create_tenant(
        settings,
        DEMO_TENANT,
        "Demo Fleet Repair",
        admin_email,
        DEMO_PASSWORD,
        DEMO_STAFF[0][1],
        DEMO_STAFF[0][2],
    )
    api = Api(base_url)
    api.login(DEMO_TENANT, admin_email, DEMO_PASSWORD)
    existing = api.get("/customers", params={"limit": 1})["items"]
    if existing:
        return {"customer_id": existing[0]["id"]}
    for email, first, last, roles in DEMO_STAFF[1:]:
        api.post(
            "/users",
            {
                "email": email,
                "first_name": first,
                "last_name": last,
                "roles": roles,
            },
        )
    customer = api.post("/customers", {"name": "Acme Logistics", "account_number": "ACME-001"})
    cid = customer["id"]
    api.post(
        f"/customers/{cid}/contacts",
        {
            "first_name": "Casey",
            "last_name": "Fleetmanager",
            "email": "casey@acme.example",
            "phone": "+15550100",
            "notify_by": "both",
            "is_team_manager": True,
        },
    )
    contact = api.post(
        f"/customers/{cid}/contacts",
        {
            "first_name": "Jordan",
            "last_name": "Driver",
            "email": "jordan@acme.example",
            "notify_by": "email",
            "is_team_manager": False,
        },
    )
    truck = api.post(
        f"/customers/{cid}/units",
        {
            "make": "Freightliner",
            "model": "Cascadia",
            "serial": "1FUJGLDR5CSBM1234",
            "fleet_number": "T-101",
            "year": 2021,
        },
    )
    api.post(
        f"/customers/{cid}/units",
        {
            "make": "Caterpillar",
            "model": "320 GC",
            "serial": "CAT0320GCX1234567",
            "fleet_number": "EX-7",
            "year": 2019,
        },
    )
    api.post(
        f"/customers/{cid}/portal-accounts",
        {
            "email": DEMO_PORTAL,
            "first_name": "Casey",
            "last_name": "Fleetmanager",
            "contact_id": contact["id"],
            "permissions": list(PORTAL_PERMISSIONS),
        },
    )
    api.post(
        "/quote-requests",
        {
            "customer_id": cid,
            "unit_id": truck["id"],
            "description": "Quote for front brake pads and rotors on T-101",
            "visible_to_customer": True,
        },
        wait_known=30,  # the quotes service learns of the customer and unit by event
    )
    set_demo_passwords(settings, tenant_id)
    return {"customer_id": cid}


def set_demo_passwords(settings: Settings, tenant_id: str) -> None:
    """Demo only, operator side: give the demo logins the published demo password and
    use up their invitation links. The API never lets anyone set another's password."""
    demo_emails = [email for email, *_rest in DEMO_STAFF[1:]]
    password_hash = hash_password(DEMO_PASSWORD)
    core = DatabaseCore(settings.service_database_url("gateway"), metadata, pool_size=1)
    try:
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            ids: list[str] = []
            for model, emails in ((StaffUser, demo_emails), (PortalAccount, [DEMO_PORTAL])):
                ids += uow.session.scalars(
                    update(model)
                    .where(model.email.in_(emails), model.password_hash.is_(None))
                    .values(password_hash=password_hash)
                    .returning(model.id)
                ).all()
            uow.session.execute(
                update(LinkToken)
                .where(LinkToken.subject_id.in_(ids), LinkToken.used_at.is_(None))
                .values(used_at=utcnow())
            )
    finally:
        core.dispose()
