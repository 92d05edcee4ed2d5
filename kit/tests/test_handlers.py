"""The event-handler registry: topic matching and routing (pure), and every step around
a handler against a real PostgreSQL (version, ledger, validation, one unit of work,
work after the commit)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from marshmallow import ValidationError
from sqlalchemy import select, text

from contracts.events import make_envelope, validate_data
from kit.db import DatabaseCore, UnitOfWork
from kit.facts import occurred_at, upsert_newer
from kit.handlers import Handlers, UnsupportedEventVersion, topic_matches
from services.quotes.models import KnownCustomer, metadata
from tests.support import scratch_service


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("directory.#", "directory.customer.created", True),
        ("directory.#", "directory", True),
        ("directory.#", "directoryx.customer.created", False),
        ("directory.*", "directory.customer.created", False),
        ("directory.customer.*", "directory.customer.created", True),
        ("quote_request.*", "quote_request.created", True),
        ("quote_request.*", "quote_request", False),
        ("#", "anything.at.all", True),
        ("*.created", "quote_request.created", True),
        ("#.created", "directory.customer.created", True),
        ("#.created", "directory.customer.updated", False),
        ("auth.link_issued", "auth.link_issued", True),
        ("auth.link_issued", "auth.link_issued.x", False),
    ],
)
def test_topic_matching_is_amqps(pattern: str, event_type: str, expected: bool) -> None:
    assert topic_matches(pattern, event_type) is expected


def test_an_exact_type_wins_then_patterns_in_declaration_order() -> None:
    h = Handlers("svc")

    @h.on("directory.#")
    def broad(uow: Any, event: Any, data: Any) -> None: ...

    @h.on("directory.settings.updated")
    def exact(uow: Any, event: Any, data: Any) -> None: ...

    @h.on("directory.customer.*", "auth.#")
    def later(uow: Any, event: Any, data: Any) -> None: ...

    assert h.handler_for("directory.settings.updated") is exact
    assert h.handler_for("directory.customer.created") is broad  # declared first
    assert h.handler_for("auth.link_issued") is later
    assert h.handler_for("quote_request.created") is None
    assert h.patterns == (
        "directory.settings.updated",
        "directory.#",
        "directory.customer.*",
        "auth.#",
    )
    with pytest.raises(ValueError, match="already has a handler"):
        h.on("auth.#")(broad)
    with pytest.raises(ValueError, match="at least one"):
        h.on()


def test_a_handler_asks_for_dependencies_by_keyword() -> None:
    h = Handlers("svc", ledger="svc.custom")

    @h.on("a.b")
    def needs(uow: Any, event: Any, data: Any, *, channels: Any, core: Any) -> None: ...

    @h.on("c.d")
    def plain(uow: Any, event: Any, data: Any) -> None: ...

    assert h.needs == {"channels", "core"} and h.ledger == "svc.custom"
    assert Handlers("notify").ledger == "notify.on_event"


# --------------------------------------------------------------- against PostgreSQL


@pytest.fixture(scope="module")
def database() -> Iterator[tuple[DatabaseCore, Any]]:
    # the owner (superuser) engine reads past row-level security
    with scratch_service("quotes", metadata) as scratch:
        yield scratch.core, scratch.owner


@pytest.fixture
def core(database: tuple[DatabaseCore, Any]) -> DatabaseCore:
    return database[0]


def ledger(database: tuple[DatabaseCore, Any], event_id: str) -> list[str]:
    with database[1].connect() as conn:
        return list(
            conn.execute(
                text("select handler from quotes.processed_events where event_id = :e"),
                {"e": event_id},
            ).scalars()
        )


def customer_event(tenant: str, name: str = "Acme", **kw: Any) -> dict[str, Any]:
    return make_envelope(
        "directory.customer.created",
        {"id": str(uuid.uuid4()), "name": name, **kw},
        tenant_id=tenant,
        actor={"kind": "system", "id": "system"},
        correlation_id=None,
        causation_id=None,
    )


class Recorder:
    """A registry whose customer handler copies the customer and records what it saw."""

    def __init__(self) -> None:
        self.h = Handlers("kit_test")
        self.seen: list[tuple[str | None, str | None, dict[str, Any]]] = []
        self.after: list[str] = []

        @self.h.on("directory.customer.*")
        def copy(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any], *, core: Any):
            self.seen.append((uow.tenant_id, uow.causation_id, data))
            at = occurred_at(event["occurred_at"])
            upsert_newer(uow, KnownCustomer, data["id"], {"name": data["name"]}, at)
            if data["name"] == "boom":
                raise RuntimeError("handler failed")

            def after() -> None:  # runs once the row is committed: another session sees it
                with core.unit_of_work(tenant_id=event["tenant_id"]) as other:
                    found = other.session.scalar(
                        select(KnownCustomer.name).where(KnownCustomer.id == data["id"])
                    )
                self.after.append(found)

            return after


def test_one_unit_of_work_per_event_exactly_once_and_after_the_commit(database, core) -> None:
    r, tenant = Recorder(), str(uuid.uuid4())
    event = customer_event(tenant)
    handled = r.h.handle(core, event, core=core)
    assert handled.first_delivery and r.after == []  # the caller runs the after-commit work
    handled.after_commit()
    assert r.after == ["Acme"]
    assert r.seen == [(tenant, event["id"], validate_data(event["type"], event["data"]))]
    assert ledger(database, event["id"]) == ["kit_test.on_event"]

    again = r.h.handle(core, event, core=core)
    assert again == type(again)(first_delivery=False) and len(r.seen) == 1
    again.after_commit()
    assert r.after == ["Acme"]


def test_unknown_versions_are_refused_before_anything_is_recorded(database, core) -> None:
    r = Recorder()
    future = {**customer_event(str(uuid.uuid4())), "version": 2}
    with pytest.raises(UnsupportedEventVersion, match="version 2"):
        r.h.handle(core, future, core=core)
    assert r.seen == [] and ledger(database, future["id"]) == []
    assert Handlers("v2", versions=(1, 2)).handle(core, future).first_delivery is True


def test_events_without_a_handler_are_recorded_and_acked(database, core) -> None:
    r, tenant = Recorder(), str(uuid.uuid4())
    unhandled = {**customer_event(tenant), "type": "directory.tenant.updated"}
    unknown = {**customer_event(tenant), "type": "work_order.invented", "data": {"x": 1}}
    for event in (unhandled, unknown):
        handled = r.h.handle(core, event, core=core)
        assert handled.first_delivery and handled.result is None
        assert ledger(database, event["id"]) == ["kit_test.on_event"]
    assert r.seen == []


def test_invalid_payloads_and_failing_handlers_leave_no_trace(database, core) -> None:
    r, tenant = Recorder(), str(uuid.uuid4())
    invalid = customer_event(tenant)
    invalid["data"] = {"id": "not-a-uuid"}
    with pytest.raises(ValidationError):
        r.h.handle(core, invalid, core=core)
    failing = customer_event(tenant, name="boom")
    with pytest.raises(RuntimeError):
        r.h.handle(core, failing, core=core)
    # rolled back with the handler's effect, so the retry applies it
    assert ledger(database, invalid["id"]) == [] and ledger(database, failing["id"]) == []
    with core.unit_of_work(tenant_id=tenant) as uow:
        assert uow.session.scalars(select(KnownCustomer)).all() == []
