"""The in-app feed's view against a real PostgreSQL (a scratch database with the gateway's
migrations; the code connects as ``portico_gateway``, so row-level security applies):
notify's events through the gateway's one event handler, redelivery and reordering,
read-your-writes from notify's replies, only the caller's own items, unread first then
newest first with the unread count, and a rebuild from notify's snapshot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from contracts.events import PRIVATE_EVENTS, make_envelope, parse_envelope
from contracts.notify import NotificationPage
from kit.context import Actor
from kit.errors import Forbidden
from kit.schemas import shared
from services.gateway import events, feed
from services.gateway.feed_models import NotificationReadView, NotificationView
from services.gateway.models import metadata
from services.notify import domain as notify_domain
from tests.support import scratch_service

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def db():
    with scratch_service("gateway", metadata, autocommit=True) as scratch:
        yield scratch


def new_id() -> str:
    return str(uuid.uuid4())


class Shop:
    """A tenant with a staff member, a customer and two of its portal accounts."""

    def __init__(self) -> None:
        self.tenant, self.customer = new_id(), new_id()
        self.staff = Actor(kind="staff", id=new_id(), tenant_id=self.tenant, roles=("advisor",))
        self.portal = self.account()

    def account(self, unit_ids: tuple[str, ...] | None = None, **kw: Any) -> Actor:
        return Actor(
            kind="portal",
            id=new_id(),
            tenant_id=self.tenant,
            customer_id=self.customer,
            unit_ids=unit_ids,
            **kw,
        )

    def item(self, *, to: str = "customer", at: datetime = T0, **overrides: Any) -> dict[str, Any]:
        """An item as notify's ``notification.created`` carries it."""
        base = {
            "notification_id": new_id(),
            "recipient_kind": to,
            "recipient_id": self.customer if to == "customer" else self.staff.id,
            "unit_id": None,
            "event_id": new_id(),
            "event_type": "quote_request.approval_requested",
            "record_type": "quote_request",
            "record_id": new_id(),
            "title": "Your quote Q-000042 is ready for approval",
            "body": "Please review it.",
            "link": "https://portal.test/quote-requests/x",
            "created_at": at.isoformat(),
            "version": 1,
        }
        base.update(overrides)
        return base


def marks(reader: Actor, ids: list[str], at: datetime = T0) -> dict[str, Any]:
    """What notify answers to a mark (and ``notification.read`` carries)."""
    return {
        "reader_kind": "staff" if reader.kind == "staff" else "portal",
        "reader_id": reader.id,
        "read_at": at.isoformat(),
        "notification_ids": ids,
    }


def envelope(tenant: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return parse_envelope(
        make_envelope(
            event_type,
            data,
            tenant_id=tenant,
            actor={"kind": "system", "id": "system"},
            correlation_id=None,
            causation_id=None,
        )
    )


def handle(db: Any, env: dict[str, Any]) -> bool:
    """Through the gateway's one event handler, as its queue consumer does."""
    handled = events.handlers.handle(db.core, env)
    handled.after_commit()
    return handled.first_delivery


def created(db: Any, shop: Shop, item: dict[str, Any]) -> dict[str, Any]:
    env = envelope(shop.tenant, "notification.created", item)
    handle(db, env)
    return env


def read(db: Any, shop: Shop, m: dict[str, Any]) -> dict[str, Any]:
    env = envelope(shop.tenant, "notification.read", m)
    handle(db, env)
    return env


def page(db: Any, actor: Actor, **query: Any) -> dict[str, Any]:
    with db.core.unit_of_work(actor) as uow:
        out = feed.feed_page(uow, actor, {"limit": 50, **query})
    shared(NotificationPage).dump(out)  # the response schema takes it as it is
    return out


def rows(db: Any, tenant: str, model: Any) -> list[Any]:
    with db.core.unit_of_work(tenant_id=tenant) as uow:
        return list(uow.session.scalars(select(model)))


def reply(db: Any, actor: Actor, m: dict[str, Any]) -> None:
    """What the route does with notify's reply before it answers."""
    with db.core.unit_of_work(actor) as uow:
        feed.apply_marks(uow, m)


# --- redelivery and reordering -----------------------------------------------------------


def test_an_item_arrives_once_however_often_it_is_delivered(db):
    shop = Shop()
    item = shop.item()
    env = created(db, shop, item)
    assert handle(db, env) is False  # the same event again: the ledger skips it
    copy = envelope(shop.tenant, "notification.created", item)  # republished: a new id
    assert handle(db, copy) is True
    [row] = rows(db, shop.tenant, NotificationView)
    assert (row.id, row.title, row.version) == (item["notification_id"], item["title"], 1)
    out = page(db, shop.portal)
    assert out["unread_count"] == 1 and [i["id"] for i in out["items"]] == [row.id]
    assert out["items"][0]["read"] is False and out["items"][0]["read_at"] is None


def test_only_a_newer_version_changes_an_item(db):
    shop = Shop()
    item = shop.item()
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        feed.upsert_item(uow, {**item, "version": 2, "title": "v2"}, T0)
        feed.upsert_item(uow, {**item, "version": 1, "title": "v1"}, T0)  # late, older
    [row] = rows(db, shop.tenant, NotificationView)
    assert (row.title, row.version) == ("v2", 2)
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        feed.upsert_item(uow, {**item, "version": 3, "title": "v3"}, T0)
    assert [r.title for r in rows(db, shop.tenant, NotificationView)] == ["v3"]


def test_a_mark_may_come_before_its_item_and_is_never_undone(db):
    shop = Shop()
    item = shop.item()
    later, earlier = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)
    read(db, shop, marks(shop.portal, [item["notification_id"]], later))  # before the item
    created(db, shop, item)
    [shown] = page(db, shop.portal)["items"]
    assert shown["read"] is True and shown["read_at"] == later
    # a redelivered or later copy changes nothing; an earlier read_at (notify's first) wins
    read(db, shop, marks(shop.portal, [item["notification_id"]], later + timedelta(hours=1)))
    assert page(db, shop.portal)["items"][0]["read_at"] == later
    read(db, shop, marks(shop.portal, [item["notification_id"]], earlier))
    assert page(db, shop.portal)["items"][0]["read_at"] == earlier
    created(db, shop, item)  # the item again: still read
    out = page(db, shop.portal)
    assert out["unread_count"] == 0 and out["items"][0]["read"] is True


@pytest.mark.parametrize("order", ["created first", "read first"])
def test_every_order_of_the_events_ends_the_same(db, order):
    shop = Shop()
    items = [shop.item(at=T0 + timedelta(minutes=i)) for i in range(4)]
    done = marks(shop.portal, [items[1]["notification_id"], items[3]["notification_id"]])
    envs = [envelope(shop.tenant, "notification.created", i) for i in items]
    mark_env = envelope(shop.tenant, "notification.read", done)
    sequence = [*envs, mark_env] if order == "created first" else [mark_env, *envs[::-1]]
    for env in [*sequence, *sequence]:  # and each delivered twice
        handle(db, env)
    out = page(db, shop.portal)
    assert out["unread_count"] == 2
    assert [(i["id"], i["read"]) for i in out["items"]] == [
        (items[2]["notification_id"], False),
        (items[0]["notification_id"], False),
        (items[3]["notification_id"], True),
        (items[1]["notification_id"], True),
    ]


def test_the_feed_events_are_private_and_others_are_no_ops(db):
    assert {"notification.created", "notification.read"} <= PRIVATE_EVENTS
    shop = Shop()
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        other = {"type": "directory.unit.created", "occurred_at": T0.isoformat()}
        assert feed.to_feed(uow, other, {}) is None
        env = envelope(shop.tenant, "notification.created", shop.item())
        assert callable(feed.to_feed(uow, env, env["data"]))  # measures the lag after commit


# --- read-your-writes ----------------------------------------------------------------------


def test_a_reply_is_read_at_once_and_its_event_later_changes_nothing(db):
    shop = Shop()
    items = [shop.item(to="staff", at=T0 + timedelta(minutes=i)) for i in range(3)]
    for item in items:
        created(db, shop, item)
    one = marks(shop.staff, [items[0]["notification_id"]], T0 + timedelta(hours=1))
    reply(db, shop.staff, one)  # POST /notifications/{id}/read
    out = page(db, shop.staff)
    assert out["unread_count"] == 2 and out["items"][-1]["id"] == items[0]["notification_id"]
    read(db, shop, one)  # the event of the same mark, later
    assert page(db, shop.staff) == out

    # read-all: notify marked an item whose notification.created has not arrived yet
    late = shop.item(to="staff", at=T0 + timedelta(minutes=9))
    ids = [items[1]["notification_id"], items[2]["notification_id"], late["notification_id"]]
    reply(db, shop.staff, marks(shop.staff, ids, T0 + timedelta(hours=2)))
    assert page(db, shop.staff)["unread_count"] == 0
    created(db, shop, late)
    out = page(db, shop.staff)
    assert out["unread_count"] == 0 and out["items"][0]["id"] == late["notification_id"]
    assert all(i["read"] for i in out["items"])
    reply(db, shop.staff, marks(shop.staff, [], T0))  # nothing was unread: no change
    assert page(db, shop.staff) == out


# --- whose items ---------------------------------------------------------------------------


def test_a_caller_reads_only_its_own_items_and_its_own_marks(db):
    shop = Shop()
    unit_a, unit_b = new_id(), new_id()
    mine = shop.item(to="staff")
    colleague = Actor(kind="staff", id=new_id(), tenant_id=shop.tenant)
    theirs = shop.item(to="staff", recipient_id=colleague.id)
    of_a = shop.item(unit_id=unit_a, at=T0 + timedelta(minutes=1))
    of_b = shop.item(unit_id=unit_b, at=T0 + timedelta(minutes=2))
    no_unit = shop.item(at=T0 + timedelta(minutes=3))
    other_customer = shop.item(recipient_id=new_id())
    for item in (mine, theirs, of_a, of_b, no_unit, other_customer):
        created(db, shop, item)

    def ids(actor: Actor) -> set[str]:
        return {i["id"] for i in page(db, actor)["items"]}

    assert ids(shop.staff) == {mine["notification_id"]}
    assert ids(colleague) == {theirs["notification_id"]}
    customer_items = {i["notification_id"] for i in (of_a, of_b, no_unit)}
    assert ids(shop.portal) == customer_items
    restricted = shop.account(unit_ids=(unit_a,))
    assert ids(restricted) == {of_a["notification_id"], no_unit["notification_id"]}
    assert page(db, restricted)["unread_count"] == 2
    assert ids(shop.account(unit_ids=())) == {no_unit["notification_id"]}
    stranger = Actor(kind="portal", id=new_id(), tenant_id=shop.tenant, customer_id=new_id())
    assert ids(stranger) == set()

    # each portal account of the customer reads for itself
    reply(db, restricted, marks(restricted, [of_a["notification_id"], no_unit["notification_id"]]))
    assert page(db, restricted)["unread_count"] == 0
    assert page(db, shop.portal)["unread_count"] == 3
    # a staff member's mark on a customer's item is no portal account's
    reply(db, shop.staff, marks(shop.staff, [of_b["notification_id"]]))
    assert page(db, shop.portal)["unread_count"] == 3

    # another tenant's caller with the same ids sees nothing (row-level security)
    other = Actor(**{**shop.staff.__dict__, "tenant_id": new_id()})
    assert ids(other) == set()
    intruder = Actor(**{**shop.portal.__dict__, "tenant_id": other.tenant_id})
    assert ids(intruder) == set()


def test_only_staff_and_portal_users_have_a_feed(db):
    shop = Shop()
    token = Actor(kind="token", id="t", tenant_id=shop.tenant, customer_id=shop.customer)
    no_customer = Actor(kind="portal", id=new_id(), tenant_id=shop.tenant)
    for actor in (token, no_customer):
        with pytest.raises(Forbidden), db.core.unit_of_work(actor) as uow:
            feed.feed_page(uow, actor, {})


@pytest.mark.parametrize(
    "actor",
    [
        Actor(kind="staff", id=new_id(), tenant_id=new_id()),
        Actor(kind="portal", id=new_id(), tenant_id=new_id(), customer_id=new_id()),
        Actor(
            kind="portal",
            id=new_id(),
            tenant_id=new_id(),
            customer_id=new_id(),
            unit_ids=(new_id(),),
        ),
    ],
)
def test_whose_feed_is_notifys_rule(actor):
    ours = feed.feed_owner(actor)
    theirs = notify_domain.feed_owner(actor.kind, actor.id, actor.customer_id, actor.unit_ids)
    assert (
        ours.recipient_kind,
        ours.recipient_id,
        ours.unit_ids,
        ours.reader_kind,
        ours.reader_id,
    ) == (
        theirs.recipient_kind,
        theirs.recipient_id,
        theirs.unit_ids,
        theirs.reader_kind,
        theirs.reader_id,
    )


# --- order, pages, count ---------------------------------------------------------------------


def test_unread_first_then_newest_first_in_pages_with_the_unread_count(db):
    shop = Shop()
    items = [shop.item(to="staff", at=T0 + timedelta(minutes=i)) for i in range(7)]
    twin = shop.item(to="staff", at=T0 + timedelta(minutes=3))  # same moment: by id
    for item in (*items, twin):
        created(db, shop, item)
    read_ids = [items[i]["notification_id"] for i in (0, 4, 6)]
    reply(db, shop.staff, marks(shop.staff, read_ids, T0 + timedelta(hours=1)))

    def key(item: dict[str, Any]) -> tuple[datetime, str]:
        return datetime.fromisoformat(item["created_at"]), item["notification_id"]

    everything = sorted((*items, twin), key=key, reverse=True)
    expected = [i["notification_id"] for i in everything if i["notification_id"] not in read_ids]
    expected += [i["notification_id"] for i in everything if i["notification_id"] in read_ids]

    for limit in (1, 2, 3, 5, 8, 50):
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            out = page(db, shop.staff, limit=limit, **({"cursor": cursor} if cursor else {}))
            assert out["unread_count"] == 5 and len(out["items"]) <= limit
            seen += out["items"]
            cursor = out["next_cursor"]
            if cursor is None:
                break
        assert [i["id"] for i in seen] == expected, limit
        assert [i["read"] for i in seen] == [False] * 5 + [True] * 3
    assert page(db, shop.staff, limit=8)["next_cursor"] is None


def test_the_cursor_is_notifys_and_an_empty_feed_is_a_page(db):
    when, item_id = T0 + timedelta(microseconds=7), new_id()
    for read_flag in (False, True):
        ours = feed.encode_cursor(read_flag, when, item_id)
        assert ours == notify_domain.encode_feed_cursor(read_flag, when, item_id)
        assert feed.decode_cursor(ours) == (read_flag, when, item_id)
    shop = Shop()
    assert page(db, shop.staff) == {"items": [], "next_cursor": None, "unread_count": 0}
    # a cursor past everything (well formed, as the query schema checks) is an empty page
    far = feed.encode_cursor(True, T0 - timedelta(days=1), new_id())
    assert page(db, shop.staff, cursor=far)["items"] == []


# --- rebuild from notify's snapshot ----------------------------------------------------------


def test_a_rebuild_fills_the_view_and_never_undoes_a_mark(db):
    shop = Shop()
    a, b = shop.item(), shop.item(at=T0 + timedelta(minutes=1))
    early = T0 + timedelta(minutes=2)
    # an event already applied: b read early by the account
    read(db, shop, marks(shop.portal, [b["notification_id"]], early))
    snapshot_page = [
        {**a, "reads": []},
        {
            **b,
            "reads": [
                {
                    "reader_kind": "portal",
                    "reader_id": shop.portal.id,
                    "read_at": (early + timedelta(minutes=3)).isoformat(),
                }
            ],
        },
    ]
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        feed.apply_snapshot(uow, snapshot_page)
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        feed.apply_snapshot(uow, snapshot_page)  # again: the same
    out = page(db, shop.portal)
    assert [(i["id"], i["read"]) for i in out["items"]] == [
        (a["notification_id"], False),
        (b["notification_id"], True),
    ]
    assert out["items"][1]["read_at"] == early  # the earlier mark stands
    with db.core.unit_of_work(tenant_id=shop.tenant) as uow:
        count = uow.session.scalar(select(func.count()).select_from(NotificationReadView))
    assert count == 1
