"""The gateway's read views against a real PostgreSQL (a scratch database with the
gateway's migrations; the code connects as ``portico_gateway``, so row-level security
applies): the version rule under redelivery and reordering, tombstones, the reads every
quote-request route makes (scope, filters, pages, the export's ten thousand rows) and a
rebuild from a snapshot while events keep arriving."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from kit.context import Actor
from kit.errors import NotFound
from services.gateway import actions, views
from services.gateway.models import QuoteRequestView, ViewBuild, metadata
from tests import factories
from tests.factories import new_id
from tests.support import scratch_service

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db():
    with scratch_service("gateway", metadata, autocommit=True) as scratch:
        yield scratch


def record(**overrides: Any) -> dict[str, Any]:
    """A quote request as the quotes service answers and snapshots it."""
    base = {
        "id": new_id(), "number": "Q-000001", "customer_id": new_id(), "unit_id": None,
        "work_order_id": None, "description": "Brakes squeal", "status": "pending",
        "created_by": new_id(), "created_by_name": "Pat", "created_by_customer": True,
        "visible_to_customer": True, "assigned_to": None, "po_number": None,
        "decision_reason": None, "decided_on_behalf": False, "decided_at": None,
        "version": 1, "created_at": T0.isoformat(), "updated_at": T0.isoformat(),
    }  # fmt: skip
    base.update(overrides)
    return base


def event_of(tenant: str, rec: dict[str, Any], kind: str = "updated", **extra: Any) -> Any:
    data = {
        **{k: v for k, v in rec.items() if k not in ("id", "decision_reason")},
        "quote_request_id": rec["id"],
        "reason": rec["decision_reason"],
        **extra,
    }
    if kind == "updated":
        data["previous_status"] = rec["status"]
    return factories.envelope(f"quote_request.{kind}", data, tenant)


def apply_event(db: Any, envelope: dict[str, Any]) -> None:
    from contracts.events import validate_data

    with db.core.unit_of_work(tenant_id=envelope["tenant_id"]) as uow:
        views.apply(uow, envelope, validate_data(envelope["type"], envelope["data"]))


def row_of(db: Any, tenant: str, quote_id: str) -> QuoteRequestView | None:
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        row = uow.session.get(QuoteRequestView, quote_id)
        if row is not None:
            uow.session.expunge(row)
        return row


def stored(db: Any, tenant: str, quote_id: str) -> QuoteRequestView:
    row = row_of(db, tenant, quote_id)
    assert row is not None
    return row


def staff(tenant: str) -> Actor:
    return factories.staff("advisor", tenant=tenant)


def portal(tenant: str, customer: str, units: tuple[str, ...] | None = None) -> Actor:
    return factories.portal(customer, tenant=tenant, units=units)


# --- the version rule -------------------------------------------------------------------


def test_only_a_newer_version_changes_a_row(db):
    tenant = new_id()
    v1 = record()
    v2 = {**v1, "version": 2, "status": "in_process", "updated_at": (T0 + timedelta(1)).isoformat()}
    v3 = {**v2, "version": 3, "status": "customer_approval_needed"}
    apply_event(db, event_of(tenant, v2))
    apply_event(db, event_of(tenant, v1))  # late: older than what is there
    assert stored(db, tenant, v1["id"]).status == "in_process"
    duplicate = event_of(tenant, v3)
    apply_event(db, duplicate)
    apply_event(db, duplicate)  # redelivered
    assert stored(db, tenant, v1["id"]).version == 3
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        views.apply_quote_reply(uow, v2)  # a slow command reply after a newer event
    assert stored(db, tenant, v1["id"]).status == "customer_approval_needed"


def test_an_event_from_before_events_carried_the_whole_state_changes_nothing(db):
    tenant = new_id()
    rec = record()
    legacy = event_of(tenant, rec)
    legacy["data"] = {k: v for k, v in legacy["data"].items() if k != "created_at"}
    apply_event(db, legacy)
    assert row_of(db, tenant, rec["id"]) is None  # a rebuild brings it


def test_a_view_row_is_its_tenants_only(db):
    tenant, other = new_id(), new_id()
    rec = record()
    apply_event(db, event_of(tenant, rec))
    assert row_of(db, other, rec["id"]) is None
    with db.core.unit_of_work(tenant_id=other) as uow, pytest.raises(NotFound):
        views.visible_quote(uow, staff(other), rec["id"])


# --- comments and files -----------------------------------------------------------------


def comment_event(tenant: str, rec: dict[str, Any], kind: str, comment_id: str, **extra: Any):
    return event_of(
        tenant, rec, kind, comment_id=comment_id, author_kind="staff", author_name="Sam", **extra
    )


def comments(db: Any, tenant: str, quote_id: str) -> list[str]:
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        rows, _ = views.comments_page(uow, views.QUOTE_REQUEST, quote_id, 50, None)
        return [r.body for r in rows]


def test_a_deleted_comment_never_comes_back_whatever_the_order(db):
    tenant = new_id()
    rec = record()
    apply_event(db, event_of(tenant, rec))
    kept, gone = new_id(), new_id()
    when = (T0 + timedelta(hours=1)).isoformat()
    delete = comment_event(tenant, rec, "comment_deleted", gone, comment_deleted_at=when)
    add = comment_event(
        tenant, rec, "comment_added", gone, comment_body="oops", comment_created_at=T0.isoformat()
    )
    apply_event(db, delete)  # the deletion overtakes the comment
    apply_event(db, add)
    apply_event(
        db,
        comment_event(
            tenant, rec, "comment_added", kept, comment_body="ok", comment_created_at=when
        ),
    )
    apply_event(db, add)  # redelivered
    assert comments(db, tenant, rec["id"]) == ["ok"]


def test_attachments_arrive_once_and_count(db):
    tenant = new_id()
    rec = record()
    apply_event(db, event_of(tenant, rec))
    file_id = new_id()
    added = event_of(
        tenant,
        rec,
        "attachment_added",
        attachment_id=file_id,
        filename="q.pdf",
        attachment_kind="quote_document",
        content_type="application/pdf",
        size=3,
        sha256="a" * 64,
        attachment_created_at=T0.isoformat(),
        author_name="Sam",
    )
    apply_event(db, added)
    apply_event(db, added)
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        assert views.attachment_count(uow, views.QUOTE_REQUEST, rec["id"]) == 1
        row = views.attachment_of(uow, views.QUOTE_REQUEST, rec["id"], file_id)
        assert (row.filename, row.uploaded_by_name) == ("q.pdf", "Sam")
        with pytest.raises(NotFound):
            views.attachment_of(uow, views.QUOTE_REQUEST, new_id(), file_id)


# --- reads: pages, filters, scope -------------------------------------------------------


def bulk(db: Any, tenant: str, customer: str, count: int, start: int = 0, **cols: Any) -> None:
    """``count`` rows straight into the view (as if their events had been applied)."""
    with db.owner.connect() as conn:
        conn.execute(
            text(
                "insert into gateway.quote_request_views (id, tenant_id, number, customer_id,"
                " unit_id, work_order_id, description, status, created_by, created_by_name,"
                " created_by_customer, visible_to_customer, decided_on_behalf, version,"
                " created_at, updated_at, source_at)"
                " select gen_random_uuid(), :t, n, :c, :unit, null, 'Bulk ' || n, 'pending',"
                " coalesce(:by, gen_random_uuid()), '', true, :visible, false, 1,"
                " now() - make_interval(secs => n), now(), now()"
                " from generate_series(:start + 1, :start + :n) as n"
            ),
            {
                "t": tenant,
                "c": customer,
                "n": count,
                "start": start,
                "unit": cols.get("unit_id"),
                "by": cols.get("created_by"),
                "visible": cols.get("visible_to_customer", True),
            },
        )


def export_all(db: Any, actor: Actor, query: dict[str, Any] | None = None) -> list[Any]:
    """What the export route does: follow the pages to the end, 1,000 at a time."""
    rows: list[Any] = []
    cursor = None
    while True:
        with db.core.unit_of_work(tenant_id=actor.tenant_id) as uow:
            f = {**(query or {}), "limit": 1000, "cursor": cursor}
            page, cursor = views.quote_page(uow, actor, f, max_limit=1000)
            rows.extend(views.quote_dict(r) for r in page)
        if not cursor:
            return rows


def test_the_export_pages_through_more_than_ten_thousand_rows(db):
    tenant, customer = new_id(), new_id()
    total = 10_050
    bulk(db, tenant, customer, total)
    rows = export_all(db, staff(tenant))
    assert len(rows) == total and len({r["id"] for r in rows}) == total
    keys = [(r["created_at"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by id
    numbers = [int(r["number"][2:]) for r in rows]
    assert set(numbers) == set(range(1, total + 1))
    assert len(export_all(db, staff(tenant), {"q": "Bulk 1000"})) == len(
        [n for n in numbers if str(n).startswith("1000")]
    )


def test_a_portal_user_reads_only_what_it_may_see(db):
    tenant, customer, other, unit = new_id(), new_id(), new_id(), new_id()
    bulk(db, tenant, customer, 5)
    bulk(db, tenant, customer, 3, start=10, visible_to_customer=False)
    bulk(db, tenant, other, 4, start=20)
    rows = export_all(db, portal(tenant, customer))
    assert sorted(int(r["number"][2:]) for r in rows) == [1, 2, 3, 4, 5]
    assert export_all(db, portal(tenant, customer, units=(unit,))) == []
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        counts = views.quote_counts(uow, portal(tenant, customer), {"status": "approved"})
    assert counts == {"pending": 5}  # the tabs ignore the status filter


@pytest.mark.parametrize("term", ["³", "Q-²", "١٢"])  # digits str.isdigit() knows, int() not all
def test_a_search_for_digits_of_other_scripts_is_text_not_a_number(db, term):
    tenant = new_id()
    rec = record(description=f"Part {term}")
    apply_event(db, event_of(tenant, rec))
    assert len(export_all(db, staff(tenant), {"q": term})) == 1


CUSTOMERS = [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]
UNITS = [str(uuid.UUID(int=11)), str(uuid.UUID(int=12)), str(uuid.UUID(int=13))]
WORK_ORDERS = [str(uuid.UUID(int=21)), str(uuid.UUID(int=22))]
PEOPLE = [str(uuid.UUID(int=31)), str(uuid.UUID(int=32)), str(uuid.UUID(int=33))]


@pytest.fixture(scope="module")
def scope_world(db):
    """Every combination of the columns the scope reads, in one tenant (and a few rows
    in a second): (tenant, other, rows as read)."""
    tenant, other = new_id(), new_id()
    with db.owner.connect() as conn:
        for tenant_id in (tenant, other):
            conn.execute(
                text(
                    "insert into gateway.quote_request_views (id, tenant_id, number,"
                    " customer_id, unit_id, work_order_id, description, status, created_by,"
                    " created_by_name, created_by_customer, visible_to_customer,"
                    " decided_on_behalf, version, created_at, updated_at, source_at)"
                    " select gen_random_uuid(), :t, row_number() over (), c::uuid, u::uuid,"
                    " w::uuid, 'x', 'pending', p::uuid, '', true, v, false, 1, now(), now(),"
                    " now() from unnest(:cs) c, unnest(:us) u, unnest(:ws) w,"
                    " unnest(array[true, false]) v, unnest(:ps) p"
                ),
                {
                    "t": tenant_id,
                    "cs": CUSTOMERS,
                    "us": [None, *UNITS],
                    "ws": [None, *WORK_ORDERS],
                    "ps": PEOPLE if tenant_id == tenant else PEOPLE[:1],
                },
            )
    rows: list[QuoteRequestView] = []
    for tenant_id in (tenant, other):
        with db.core.unit_of_work(tenant_id=tenant_id) as uow:
            found = list(uow.session.scalars(select(QuoteRequestView)))
            uow.session.expunge_all()
            rows.extend(found)
    return tenant, other, rows


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_the_scope_predicate_and_the_view_query_agree(db, scope_world, data):
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
    with db.core.unit_of_work(tenant_id=actor.tenant_id) as uow:
        in_sql = {r.id for r in views.quote_page(uow, actor, {"limit": 200}, max_limit=200)[0]}
        in_sql |= {r["id"] for r in export_all(db, actor)}
    scope = views.Scope.of(actor)
    in_python = {
        r.id
        for r in rows
        if r.tenant_id == actor.tenant_id and scope.matches(r, views.QUOTE_FIELDS)
    }
    assert in_sql == in_python
    for row in rows[:20]:
        with db.core.unit_of_work(tenant_id=actor.tenant_id) as uow:
            try:
                views.visible_quote(uow, actor, row.id)
                seen = True
            except NotFound:
                seen = False
        assert seen == (row.id in in_python)


# --- rebuild ----------------------------------------------------------------------------


def test_a_rebuild_fills_the_views_and_never_overwrites_a_newer_event(db):
    tenant = new_id()
    recs = [record(number=f"Q-{n:06d}") for n in range(1, 6)]
    newer = {**recs[0], "version": 2, "status": "in_process"}
    apply_event(db, event_of(tenant, newer))  # an event that overtook the snapshot
    comment = {
        "id": new_id(), "quote_request_id": recs[1]["id"], "author_kind": "portal",
        "author_id": new_id(), "author_name": "Pat", "body": "hi",
        "created_at": T0.isoformat(), "deleted_at": (T0 + timedelta(1)).isoformat(),
    }  # fmt: skip
    pages: dict[str, list[list[dict[str, Any]]]] = {
        "snapshot_quote_requests": [recs[:2], recs[2:4], recs[4:]],
        "snapshot_comments": [[comment]],
        "snapshot_attachments": [[]],
        "snapshot_notifications": [[]],
    }
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def fetch(service: str, method: str, query: dict[str, Any]) -> dict[str, Any]:
        calls.append((service, method, query))
        index = int(query.get("cursor") or 0)
        chunks = pages[method]
        more = index + 1 < len(chunks)
        return {"items": chunks[index], "next_cursor": str(index + 1) if more else None}

    assert set(views.unbuilt(db.core, [tenant])) == {(tenant, v) for v in views.SNAPSHOTS}
    for view in views.SNAPSHOTS:
        views.rebuild(db.core, tenant, view, fetch)
    assert views.unbuilt(db.core, [tenant]) == []
    assert [c[2].get("cursor") for c in calls if c[1] == "snapshot_quote_requests"] == [
        None,
        "1",
        "2",
    ]
    assert stored(db, tenant, recs[0]["id"]).status == "in_process"  # kept the newer
    assert all(row_of(db, tenant, r["id"]) is not None for r in recs)
    assert comments(db, tenant, recs[1]["id"]) == []  # deleted in the snapshot
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        built = uow.session.get(ViewBuild, ("quote_requests", tenant))
        assert built is not None and built.rows == 5


# --- action required --------------------------------------------------------------------

ALL_ON = {"quotes": True}


def waiting(db: Any, actor: Actor, features: dict[str, bool] = ALL_ON, limit: int = 50) -> list:
    out, cursor = [], None
    while True:
        with db.core.unit_of_work(tenant_id=actor.tenant_id) as uow:
            page = actions.page(uow, actor, features, limit, cursor)
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return out


def test_action_required_lists_what_the_caller_may_act_on_newest_first(db):
    tenant, customer, other = new_id(), new_id(), new_id()
    unit = new_id()
    made = []
    for n in range(1, 6):
        rec = record(
            number=f"Q-{n:06d}",
            customer_id=customer,
            unit_id=unit if n % 2 else None,
            status="customer_approval_needed",
            created_at=(T0 + timedelta(minutes=n)).isoformat(),
        )
        apply_event(db, event_of(tenant, rec))
        made.append(rec)
    apply_event(db, event_of(tenant, record(customer_id=customer)))  # pending: not waiting
    apply_event(db, event_of(tenant, record(customer_id=other, status="customer_approval_needed")))
    hidden = record(
        customer_id=customer, status="customer_approval_needed", visible_to_customer=False
    )
    apply_event(db, event_of(tenant, hidden))
    approver = factories.portal(customer, tenant=tenant, permissions=("quotes.approve",))
    items = waiting(db, approver, limit=2)  # three pages
    assert [i["id"] for i in items] == [r["id"] for r in reversed(made)]
    assert items[0] == {
        "kind": "quote_approval",
        "id": made[-1]["id"],
        "title": "Quote Q-000005",
        "created_at": datetime.fromisoformat(made[-1]["created_at"]),
        "link": f"/quote-requests/{made[-1]['id']}",
    }
    restricted = replace(approver, unit_ids=(unit,))
    assert [i["title"] for i in waiting(db, restricted)] == [
        "Quote Q-000005",
        "Quote Q-000003",
        "Quote Q-000001",
    ]
    no_permission = replace(approver, permissions=("quotes.request",))
    preview = replace(approver, read_only=True)
    token = factories.token(new_id(), tenant=tenant)
    for nobody in (no_permission, preview, token):
        assert waiting(db, nobody) == []
    assert waiting(db, approver, {"quotes": False}) == []
