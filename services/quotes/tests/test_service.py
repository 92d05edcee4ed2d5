"""The quotes service's entrypoints against a real PostgreSQL.

A scratch database gets the quotes migrations; the code under test connects as
``portico_quotes`` so row-level security applies, and an owner (superuser) connection
plays the part of anything that bypasses it. No broker: the nameko entrypoints are
called through ``worker_factory`` and directory events are handed to the consumer's
entrypoint directly.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError

from contracts.events import make_envelope, parse_envelope
from kit.context import ACTOR_KEY, Actor, Context
from kit.db import DatabaseCore, sa_url
from kit.errors import NotFound, ValidationFailed
from kit.handlers import UnsupportedEventVersion
from kit.providers import WorkerDb
from services.quotes import directory, domain
from services.quotes.models import KnownCustomer, KnownStaff, KnownUnit, QuoteRequest, metadata
from services.quotes.queries import scope_condition
from services.quotes.service import QuotesService
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


def new_id() -> str:
    return str(uuid.uuid4())


def envelope(kind: str, data: dict[str, Any], tenant: str, occurred_at: datetime | None = None):
    env = make_envelope(
        kind,
        data,
        tenant_id=tenant,
        actor={"kind": "system", "id": "system", "name": "Portico"},
        correlation_id=None,
        causation_id=None,
    )
    if occurred_at is not None:
        env["occurred_at"] = occurred_at.isoformat().replace("+00:00", "Z")
    return parse_envelope(env)


def service_as(core: DatabaseCore, actor: Actor) -> Any:
    context = Context(SimpleNamespace(data={ACTOR_KEY: actor.to_json()}))
    return worker_factory(QuotesService, db=WorkerDb(core, context), ctx=context)


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
        event = envelope(kind, data, self.tenant, at)
        self.service(self.staff()).on_directory_event(event)
        return event

    def staff(self, *roles: str) -> Actor:
        return Actor(
            kind="staff", id=self.advisor, tenant_id=self.tenant, roles=roles or ("manager",)
        )

    def portal(self, units: tuple[str, ...] | None = None, actor_id: str | None = None) -> Actor:
        return Actor(
            kind="portal",
            id=actor_id or self.portal_id,
            tenant_id=self.tenant,
            customer_id=self.customer,
            permissions=(domain.PERM_REQUEST, domain.PERM_APPROVE),
            unit_ids=units,
        )

    def service(self, actor: Actor) -> Any:
        return service_as(self.core, actor)

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
    assert service.get_quote_request(quote["id"])["assigned_to"] is None
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
    assert service.get_quote_request(quote["id"])["status"] == "pending"


# ------------------------------------------------------ export of every row (item 17)


def bulk_quotes(owner, tenant: str, customer: str, n: int, *, start: int = 1, **cols: Any) -> None:
    """``n`` quote requests inserted in one statement; every three share a created_at
    so the keyset's tie-break on id is exercised."""
    with owner.connect() as conn:
        conn.execute(
            text(
                "insert into quotes.quote_requests (id, tenant_id, number, customer_id, unit_id,"
                " description, status, created_by, created_by_kind, created_by_name,"
                " created_by_customer, visible_to_customer, decided_on_behalf, version,"
                " created_at, updated_at)"
                " select gen_random_uuid(), :t, g, :c, cast(:unit as uuid), 'Bulk ' || g,"
                " 'pending', coalesce(cast(:by as uuid), gen_random_uuid()), 'staff', '', false,"
                " :visible, false, 1,"
                " timestamptz '2030-01-01' - (g / 3) * interval '1 second', now()"
                " from generate_series(cast(:start as int), :start + :n - 1) g"
            ),
            {
                "t": tenant,
                "c": customer,
                "n": n,
                "start": start,
                "unit": cols.get("unit_id"),
                "by": cols.get("created_by"),
                "visible": cols.get("visible_to_customer", True),
            },
        )


def export_all(service: Any, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """What the gateway does: follow the pages to the end."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = service.export_quote_requests(
            {**(query or {}), **({"cursor": cursor} if cursor else {})}
        )
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return rows


def test_the_export_pages_through_more_than_ten_thousand_rows(core, owner):
    shop = Shop(core)
    total = 10_050
    bulk_quotes(owner, shop.tenant, shop.customer, total)
    service = shop.service(shop.staff("advisor"))
    first = service.export_quote_requests({})
    assert len(first["items"]) == 1000 and first["next_cursor"]
    rows = export_all(service)
    assert len(rows) == total
    assert len({r["id"] for r in rows}) == total
    numbers = [int(r["number"][2:]) for r in rows]
    keys = [(r["created_at"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id
    assert set(numbers) == set(range(1, total + 1))
    # filters and scope apply to every page
    assert len(export_all(service, {"q": "Bulk 1000"})) == len(
        [n for n in numbers if str(n).startswith("1000")]
    )


def test_a_portal_user_exports_only_what_it_may_see(core, owner):
    shop = Shop(core)
    bulk_quotes(owner, shop.tenant, shop.customer, 5)
    bulk_quotes(owner, shop.tenant, shop.customer, 3, start=10, visible_to_customer=False)
    bulk_quotes(owner, shop.tenant, shop.other_customer, 4, start=20)
    rows = export_all(shop.service(shop.portal()))
    assert sorted(int(r["number"][2:]) for r in rows) == [1, 2, 3, 4, 5]
    restricted = export_all(shop.service(shop.portal(units=(shop.unit,))))
    assert restricted == []


# ---------------------------------------------- one scope rule, in Python and SQL (20)

CUSTOMERS = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
UNITS = [str(uuid.UUID(int=11)), str(uuid.UUID(int=12)), str(uuid.UUID(int=13))]
WORK_ORDERS = [str(uuid.UUID(int=21)), str(uuid.UUID(int=22))]
PEOPLE = [str(uuid.UUID(int=31)), str(uuid.UUID(int=32)), str(uuid.UUID(int=33))]


@pytest.fixture(scope="module")
def scope_world(core, owner):
    """Every combination of the columns the scope reads, in one tenant (and a few rows
    in a second): (tenant, quote rows as loaded)."""
    tenant, other = new_id(), new_id()
    number = 0
    with owner.connect() as conn:
        for tenant_id in (tenant, other):
            for customer in CUSTOMERS:
                for unit in (None, *UNITS):
                    for work_order in (None, *WORK_ORDERS):
                        for visible in (True, False):
                            for creator in PEOPLE:
                                if tenant_id == other and creator != PEOPLE[0]:
                                    continue
                                number += 1
                                conn.execute(
                                    text(
                                        "insert into quotes.quote_requests (id, tenant_id,"
                                        " number, customer_id, unit_id, work_order_id,"
                                        " description, status, created_by, created_by_kind,"
                                        " created_by_name, created_by_customer,"
                                        " visible_to_customer, decided_on_behalf, version,"
                                        " created_at, updated_at) values (gen_random_uuid(),"
                                        " :t, :n, :c, :u, :w, 'x', 'pending', :by, 'portal',"
                                        " '', true, :v, false, 1, now(), now())"
                                    ),
                                    {
                                        "t": tenant_id,
                                        "n": number,
                                        "c": customer,
                                        "u": unit,
                                        "w": work_order,
                                        "by": creator,
                                        "v": visible,
                                    },
                                )
    rows: list[QuoteRequest] = []
    for tenant_id in (tenant, other):
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            rows.extend(uow.session.scalars(select(QuoteRequest)))
    return tenant, other, rows


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_scope_predicate_and_its_sql_twin_agree(core, scope_world, data):
    tenant, other, rows = scope_world
    actor = data.draw(
        st.builds(
            Actor,
            kind=st.sampled_from(["staff", "portal", "token", "system", "robot"]),
            id=st.sampled_from(PEOPLE[:2]),
            tenant_id=st.sampled_from([tenant, other]),
            roles=st.sampled_from([(), ("advisor",)]),
            customer_id=st.one_of(st.none(), st.sampled_from(CUSTOMERS)),
            unit_ids=st.one_of(st.none(), st.lists(st.sampled_from(UNITS), unique=True).map(tuple)),
            work_order_id=st.one_of(st.none(), st.sampled_from(WORK_ORDERS)),
        )
    )
    scope = domain.list_scope(actor)
    with core.unit_of_work(tenant_id=actor.tenant_id) as uow:
        in_sql = set(uow.session.scalars(select(QuoteRequest.id).where(scope_condition(scope))))
    in_python = {q.id for q in rows if scope.matches(q)}
    assert in_sql == in_python


# ---------------------------------------------- comments and attachments pages (21)


def test_comments_and_attachments_page_oldest_first(core):
    shop = Shop(core)
    quote = shop.quote()
    service = shop.service(shop.staff("manager"))
    bodies = [f"comment {i}" for i in range(5)]
    made = [service.add_comment(quote["id"], {"body": b}) for b in bodies]
    service.delete_comment(quote["id"], made[1]["id"])
    for i in range(3):
        service.add_attachment(
            quote["id"],
            {
                "kind": "attachment",
                "filename": f"f{i}.pdf",
                "content_type": "application/pdf",
                "size": 1,
                "sha256": "0" * 64,
            },
        )

    def pages(method: Any, limit: int) -> list[list[str]]:
        out, cursor = [], None
        while True:
            query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = method(quote["id"], query)
            out.append([x.get("body") or x.get("filename") for x in page["items"]])
            cursor = page["next_cursor"]
            if not cursor:
                return out

    assert pages(service.list_comments, 2) == [
        ["comment 0", "comment 2"],
        ["comment 3", "comment 4"],
    ]
    assert pages(service.list_attachments, 2) == [["f0.pdf", "f1.pdf"], ["f2.pdf"]]
    assert service.list_comments(quote["id"])["next_cursor"] is None  # default limit 50
    with pytest.raises(ValidationFailed):
        service.list_comments(quote["id"], {"limit": 201})
    with pytest.raises(ValidationFailed):
        service.list_attachments(quote["id"], {"cursor": "not-a-cursor"})
    stranger = shop.service(shop.portal(units=()))  # sees nothing it did not create
    with pytest.raises(NotFound):
        stranger.list_comments(quote["id"], {})


@pytest.mark.parametrize("term", ["³", "Q-²", "١٢"])  # digits str.isdigit() knows, int() not all
def test_a_search_for_digits_of_other_scripts_is_text_not_a_number(core, term):
    shop = Shop(core)
    shop.quote(description=f"Part {term}")
    service = shop.service(shop.staff())
    assert len(service.list_quote_requests({"q": term})["items"]) == 1
    assert len(service.export_quote_requests({"q": term})["items"]) == 1
