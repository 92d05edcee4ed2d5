"""The quotes service's entrypoints against a real PostgreSQL.

A scratch database gets the quotes migrations; the code under test connects as
``portico_quotes`` so row-level security applies, and an owner (superuser) connection
plays the part of anything that bypasses it. No broker: the nameko entrypoints are
called through ``worker_factory`` and directory events are handed to the consumer's
entrypoint directly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from kit.context import Actor
from kit.db import DatabaseCore, sa_url
from kit.errors import Forbidden, NotFound, ValidationFailed
from kit.handlers import UnsupportedEventVersion
from services.quotes import directory, domain
from services.quotes.models import (
    KnownCustomer,
    KnownStaff,
    KnownUnit,
    QuoteRequest,
    metadata,
    outbox,
)
from services.quotes.serialise import to_dict
from services.quotes.service import QuotesService
from tests import factories
from tests.factories import new_id
from tests.support import scratch_database

# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def database():
    with scratch_database("quotes") as (admin, urls):
        yield admin, urls["quotes"]


@pytest.fixture(scope="module")
def core(database):
    core = DatabaseCore(database[1], metadata, pool_size=2)
    yield core
    core.dispose()


@pytest.fixture(scope="module")
def owner(database):
    """The owner (superuser) connection: no row-level security, like a migration."""
    engine = create_engine(sa_url(database[0]), isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


# ------------------------------------------------------------------------- helpers


def stored(core: DatabaseCore, tenant: str, quote_id: str) -> dict[str, Any]:
    """The request as the quotes service holds it."""
    with core.unit_of_work(tenant_id=tenant) as uow:
        return to_dict(uow.session.get_one(QuoteRequest, quote_id))


def outbox_data(core: DatabaseCore, tenant: str) -> list[dict[str, Any]]:
    """The data of the tenant's events, in the order they were written."""
    with core.unit_of_work(tenant_id=tenant) as uow:
        rows = uow.session.execute(select(outbox.c.envelope).order_by(outbox.c.created_at))
        return [envelope["data"] for (envelope,) in rows]


class Shop:
    """One tenant as the quotes service knows it from directory events: two customers
    with a unit each, an active advisor and a deactivated technician."""

    def __init__(self, core: DatabaseCore) -> None:
        self.core = core
        self.tenant = new_id()
        self.customer, self.other_customer = new_id(), new_id()
        self.unit, self.other_unit = new_id(), new_id()
        self.advisor, self.gone = new_id(), new_id()
        self.portal_id = new_id()
        for cid, name in ((self.customer, "Acme"), (self.other_customer, "Bolt")):
            self.tell("directory.customer.created", {"id": cid, "name": name})
        for uid, cid in ((self.unit, self.customer), (self.other_unit, self.other_customer)):
            self.tell("directory.unit.created", {"id": uid, "customer_id": cid, "label": "T-1"})
        for sid, active in ((self.advisor, True), (self.gone, False)):
            self.tell("directory.staff_user.created", self.staff_fact(sid, active))

    @staticmethod
    def staff_fact(sid: str, active: bool, name: str = "Sam") -> dict[str, Any]:
        return {
            "id": sid,
            "name": name,
            "email": f"{sid[:8]}@shop.test",
            "roles": ["advisor"],
            "active": active,
        }

    def tell(self, kind: str, data: dict[str, Any], at: datetime | None = None) -> dict:
        event = factories.envelope(kind, data, self.tenant, at)
        self.service(self.staff()).on_directory_event(event)
        return event

    def staff(self, *roles: str) -> Actor:
        return factories.staff(*(roles or ("manager",)), tenant=self.tenant, id=self.advisor)

    def portal(self, units: tuple[str, ...] | None = None, actor_id: str | None = None) -> Actor:
        return factories.portal(
            self.customer,
            tenant=self.tenant,
            permissions=(domain.PERM_REQUEST, domain.PERM_APPROVE),
            units=units,
            id=actor_id or self.portal_id,
        )

    def service(self, actor: Actor) -> Any:
        return factories.service_as(QuotesService, self.core, actor)

    def quote(self, actor: Actor | None = None, **body: Any) -> dict[str, Any]:
        actor = actor or self.staff()
        if actor.kind == "staff":
            body.setdefault("customer_id", self.customer)
        body.setdefault("description", "Brakes squeal")
        return self.service(actor).create_quote_request(body)


def count_quotes(owner, tenant: str) -> int:
    with owner.connect() as conn:
        return conn.execute(
            text("select count(*) from quotes.quote_requests where tenant_id = :t"), {"t": tenant}
        ).scalar_one()


def refused(call: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as err:
        call()
    assert err.value.code == "validation_failed"
    return err.value.errors or {}


def unknown(call: Any) -> dict[str, list[str]]:
    """A reference the caller may not use: not_found naming the field (the same whether
    it exists in another tenant or nowhere)."""
    with pytest.raises(NotFound) as err:
        call()
    assert err.value.code == "not_found"
    return err.value.errors or {}


# ------------------------------------------------------- directory copies (item 11)


def test_directory_events_keep_local_copies(core):
    shop = Shop(core)
    with core.unit_of_work(tenant_id=shop.tenant) as uow:
        customers = {c.id: c.name for c in uow.session.scalars(select(KnownCustomer))}
        units = {u.id: u.customer_id for u in uow.session.scalars(select(KnownUnit))}
        staff = {s.id: s.active for s in uow.session.scalars(select(KnownStaff))}
    assert customers == {shop.customer: "Acme", shop.other_customer: "Bolt"}
    assert units == {shop.unit: shop.customer, shop.other_unit: shop.other_customer}
    assert staff == {shop.advisor: True, shop.gone: False}


def test_a_redelivered_event_changes_nothing_and_older_facts_never_win(core):
    shop = Shop(core)
    sid = new_id()
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    newer = shop.tell("directory.staff_user.updated", shop.staff_fact(sid, False, "New"), t0)
    shop.tell("directory.staff_user.created", shop.staff_fact(sid, True, "Old"), t0 - timedelta(1))
    # already handled: nothing applied
    assert directory.handlers.handle(core, newer).first_delivery is False
    with core.unit_of_work(tenant_id=shop.tenant) as uow:
        row = uow.session.get(KnownStaff, sid)
        assert (row.name, row.active) == ("New", False)


def test_events_the_copies_do_not_need_are_recorded_and_ignored(core):
    shop = Shop(core)
    event = shop.tell("directory.tenant.updated", {"id": shop.tenant, "slug": "s", "name": "S"})
    assert directory.handlers.handle(core, event).first_delivery is False
    with pytest.raises(UnsupportedEventVersion):
        directory.handlers.handle(core, {**event, "id": new_id(), "version": 2})


def test_staff_of_another_tenant_cannot_create_on_this_tenants_customer(core, owner):
    shop, other = Shop(core), Shop(core)
    errors = unknown(lambda: other.quote(customer_id=shop.customer))
    assert errors == {"customer_id": ["unknown customer"]}
    assert unknown(lambda: shop.quote(customer_id=new_id())) == {
        "customer_id": ["unknown customer"]
    }
    assert count_quotes(owner, other.tenant) == 0
    assert count_quotes(owner, shop.tenant) == 0


def test_a_unit_must_belong_to_the_quotes_customer_and_the_callers_units(core, owner):
    shop, other = Shop(core), Shop(core)
    portal = shop.portal()
    assert unknown(lambda: shop.quote(portal, unit_id=shop.other_unit)) == {
        "unit_id": ["unknown unit"]
    }
    assert unknown(lambda: shop.quote(portal, unit_id=other.unit)) == {"unit_id": ["unknown unit"]}
    assert unknown(lambda: shop.quote(unit_id=shop.other_unit)) == {"unit_id": ["unknown unit"]}
    restricted = shop.portal(units=())
    assert unknown(lambda: shop.quote(restricted, unit_id=shop.unit)) == {
        "unit_id": ["unknown unit"]
    }
    assert count_quotes(owner, shop.tenant) == 0
    made = shop.quote(portal, unit_id=shop.unit)
    assert (made["customer_id"], made["unit_id"]) == (shop.customer, shop.unit)
    assert shop.quote(unit_id=shop.unit)["unit_id"] == shop.unit


@pytest.mark.parametrize("who", ["other_tenant", "inactive", "never_seen"])
def test_assignee_must_be_an_active_staff_member_of_the_tenant(core, who):
    shop, other = Shop(core), Shop(core)
    quote = shop.quote()
    assignee = {"other_tenant": other.advisor, "inactive": shop.gone, "never_seen": new_id()}[who]
    service = shop.service(shop.staff())
    errors = unknown(lambda: service.update_quote_request(quote["id"], {"assigned_to": assignee}))
    assert errors == {"assigned_to": ["unknown or inactive staff member"]}
    assert stored(core, shop.tenant, quote["id"])["assigned_to"] is None
    done = service.update_quote_request(quote["id"], {"assigned_to": shop.advisor})
    assert done["assigned_to"] == shop.advisor


def test_a_staff_member_deactivated_later_can_no_longer_be_assigned(core):
    shop = Shop(core)
    quote = shop.quote()
    shop.tell("directory.staff_user.updated", shop.staff_fact(shop.advisor, False))
    service = shop.service(shop.staff())
    errors = unknown(
        lambda: service.update_quote_request(quote["id"], {"assigned_to": shop.advisor})
    )
    assert errors == {"assigned_to": ["unknown or inactive staff member"]}


# ---------------------------------------------- tenant-bound foreign keys (item 12)


@pytest.mark.parametrize("table", ["comments", "attachments"])
def test_a_row_can_never_point_at_another_tenants_quote_even_as_the_owner(core, owner, table):
    """Foreign keys are checked without row-level security: only a composite key
    (tenant_id, quote_request_id) keeps a child row inside its tenant."""
    shop, other = Shop(core), Shop(core)
    theirs = other.quote()
    columns = {
        "comments": "author_kind, author_id, author_name, body, created_at",
        "attachments": "kind, filename, content_type, size, sha256, uploaded_by, "
        "uploaded_by_kind, uploaded_by_name, created_at",
    }[table]
    values = {
        "comments": "'staff', gen_random_uuid(), 'x', 'hi', now()",
        "attachments": "'attachment', 'a.pdf', 'application/pdf', 1, repeat('0', 64), "
        "gen_random_uuid(), 'staff', 'x', now()",
    }[table]
    insert = (
        f"insert into quotes.{table} (id, tenant_id, quote_request_id, {columns}) "
        f"values (gen_random_uuid(), :tenant, :quote, {values})"
    )
    with owner.connect() as conn:
        with pytest.raises(IntegrityError) as err:
            conn.execute(text(insert), {"tenant": shop.tenant, "quote": theirs["id"]})
        assert err.value.orig.pgcode == "23503"  # type: ignore[union-attr]  # foreign_key_violation
        conn.execute(text(insert), {"tenant": other.tenant, "quote": theirs["id"]})  # own: fine


# --------------------------------------------------- decisions only by their calls (16)


@pytest.mark.parametrize("status", ["approved", "denied", "cancelled"])
def test_patch_cannot_decide(core, status):
    shop = Shop(core)
    quote = shop.quote()
    service = shop.service(shop.staff("admin"))
    errors = refused(lambda: service.update_quote_request(quote["id"], {"status": status}))
    assert "/approve" in errors["status"][0]
    assert stored(core, shop.tenant, quote["id"])["status"] == "pending"


# ------------------------------------------- the snapshot the gateway's views read


def snapshot_all(service: Any, method: str, limit: int = 2) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = getattr(service, method)({"limit": limit, **({"cursor": cursor} if cursor else {})})
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def test_the_snapshot_pages_every_record_oldest_first_for_the_system_only(core):
    shop, other = Shop(core), Shop(core)
    made = [shop.quote(description=f"Q{i}") for i in range(5)]
    other.quote()
    manager = shop.service(shop.staff("manager"))
    comments = [manager.add_comment(made[0]["id"], {"body": f"c{i}"}) for i in range(3)]
    deleted = manager.delete_comment(made[0]["id"], comments[1]["id"])
    manager.add_attachment(
        made[1]["id"],
        {
            "kind": "attachment",
            "filename": "f.pdf",
            "content_type": "application/pdf",
            "size": 1,
            "sha256": "0" * 64,
        },
    )
    system = shop.service(factories.system(shop.tenant))
    quotes = snapshot_all(system, "snapshot_quote_requests")
    assert [q["id"] for q in quotes] == [q["id"] for q in made]  # this tenant's, oldest first
    assert quotes[0] == {k: v for k, v in made[0].items() if k != "attachment_count"}
    seen = snapshot_all(system, "snapshot_comments")
    assert [c["body"] for c in seen] == ["c0", "c1", "c2"]  # deleted ones too, marked
    assert [c["deleted_at"] for c in seen] == [None, deleted["deleted_at"], None]
    (attachment,) = snapshot_all(system, "snapshot_attachments")
    assert attachment["quote_request_id"] == made[1]["id"]
    for who in (shop.staff("admin"), shop.portal()):
        for method in ("snapshot_quote_requests", "snapshot_comments", "snapshot_attachments"):
            with pytest.raises(Forbidden):
                getattr(shop.service(who), method)({})


def test_comment_and_file_events_carry_the_whole_comment_and_file(core):
    shop = Shop(core)
    quote = shop.quote()
    service = shop.service(shop.staff("manager"))
    comment = service.add_comment(quote["id"], {"body": "Tuesday?"})
    deleted = service.delete_comment(quote["id"], comment["id"])
    service.add_attachment(
        quote["id"],
        {
            "kind": "quote_document",
            "filename": "q.pdf",
            "content_type": "application/pdf",
            "size": 10,
            "sha256": "a" * 64,
        },
    )
    added, gone, filed = outbox_data(core, shop.tenant)[-3:]
    assert added["comment_created_at"] == comment["created_at"]
    assert added["author_id"] == comment["author_id"]
    assert gone["comment_deleted_at"] == deleted["deleted_at"]
    assert (filed["content_type"], filed["size"], filed["sha256"]) == (
        "application/pdf",
        10,
        "a" * 64,
    )
    assert added["created_at"] == quote["created_at"]  # and the request's whole state
