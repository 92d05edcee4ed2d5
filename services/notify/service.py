"""Notifications driven by events.

``directory.*`` events keep local copies of tenants, customers, contacts and staff.
``quote_request.*`` events become ``deliveries`` rows (one per recipient and channel,
deduplicated by ``delivery_key``) in the same transaction that records the event as
processed. Sending happens after the commit: a sender claims rows with a lease, hands
them to SMTP or the SMS gateway, then records the outcome. A sweep on a timer sends
whatever is due and whatever a crashed sender left behind once its lease expired.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts import notify as c
from contracts.events import EVENTS, validate_data
from kit import pagination
from kit.config import load
from kit.context import Actor, RequestContext
from kit.db import DatabaseCore, UnitOfWork
from kit.errors import Forbidden
from kit.health import HealthEndpoints
from kit.ids import new_id
from kit.messaging import event_consumer
from kit.observability import Metrics
from kit.providers import Database, WorkerDb, rpc
from kit.schemas import load as load_payload
from services.notify import domain
from services.notify.channels import Renderer
from services.notify.models import (
    Contact,
    Customer,
    Delivery,
    StaffMember,
    TemplateOverride,
    Tenant,
    metadata,
)
from services.notify.sending import SWEEP_BATCH, deliver, senders_from_settings, sweep

log = logging.getLogger(__name__)

HANDLER = "notify.on_event"
SUPPORTED_EVENT_VERSION = 1
SWEEP_SECONDS = float(os.environ.get("NOTIFY_SWEEP_SECONDS", "2"))
SWEEP_MAX_ROUNDS = 10
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
FALLBACK_TENANT_NAME = "your service shop"

# entity prefix -> (local copy, fields copied from the event data)
_DIRECTORY: dict[str, tuple[Any, tuple[str, ...]]] = {
    "directory.tenant": (Tenant, ("slug", "name")),
    "directory.customer": (Customer, ("name",)),
    "directory.contact": (
        Contact,
        ("customer_id", "name", "email", "phone", "notify_by", "is_team_manager"),
    ),
    "directory.staff_user": (StaffMember, ("name", "email", "roles", "active")),
}

_T = cast(Table, Delivery.__table__)


class UnsupportedEventVersion(ValueError):
    """An envelope version this consumer does not know: dead-letter it, never guess."""


# ------------------------------------------------------------------ handling events


def handle_event(
    core: DatabaseCore, renderer: Renderer, event: dict[str, Any], *, portal_base: str
) -> list[str]:
    """Apply one event in one unit of work; return the ids of new deliveries to send.

    A redelivered event changes nothing and returns no ids.
    """
    if int(event.get("version", SUPPORTED_EVENT_VERSION)) != SUPPORTED_EVENT_VERSION:
        raise UnsupportedEventVersion(f"{event['type']} version {event['version']}")
    with core.unit_of_work(tenant_id=event["tenant_id"], causation_id=event["id"]) as uow:
        if not uow.first_time(HANDLER, event["id"]):
            log.info("event %s already handled", event["id"], extra={"event_id": event["id"]})
            return []
        if event["type"] not in EVENTS:
            log.info("ignoring %s", event["type"], extra={"event_id": event["id"]})
            return []
        data = validate_data(event["type"], event["data"])
        if event["type"].startswith("directory."):
            _copy_directory_fact(uow, event, data)
            return []
        if event["type"] in domain.NOTIFICATION_RULES:  # others notify nobody: no lookups
            return _store_deliveries(uow, renderer, {**event, "data": data}, portal_base)
        return []


def _copy_directory_fact(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> None:
    """Upsert the local copy; a fact older than the one held is ignored."""
    entity = event["type"].rsplit(".", 1)[0]
    if entity not in _DIRECTORY:
        return
    model, names = _DIRECTORY[entity]
    values = {name: data.get(name) for name in names}
    stmt = pg_insert(model).values(
        id=data["id"],
        tenant_id=uow.tenant_id,
        source_occurred_at=domain.parse_occurred_at(event["occurred_at"]),
        **values,
    )
    table = model.__table__
    uow.session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={name: stmt.excluded[name] for name in (*names, "source_occurred_at")},
            where=table.c.source_occurred_at <= stmt.excluded.source_occurred_at,
        )
    )


def _recipients(uow: UnitOfWork, customer_id: str | None) -> tuple[list[Any], list[Any]]:
    contacts = (
        uow.session.scalars(
            select(Contact).where(Contact.customer_id == customer_id).order_by(Contact.id)
        )
        if customer_id
        else []
    )
    staff = uow.session.scalars(
        select(StaffMember).where(StaffMember.active.is_(True)).order_by(StaffMember.id)
    )
    return (
        [
            domain.Recipient("contact", x.id, x.name, x.email, x.phone, x.notify_by)
            for x in contacts
        ],
        [
            domain.Recipient("staff", x.id, x.name, email=x.email, roles=tuple(x.roles or ()))
            for x in staff
        ],
    )


def _store_deliveries(
    uow: UnitOfWork, renderer: Renderer, event: dict[str, Any], portal_base: str
) -> list[str]:
    data = event["data"]
    contacts, staff = _recipients(uow, data.get("customer_id"))
    plan = [
        (recipient, channel)
        for recipient, channel in domain.plan_deliveries(
            event["type"], data, contacts, staff, actor_id=event["actor"]["id"]
        )
        if channel in domain.CHANNELS
    ]
    if not plan:
        return []
    tenant_name = uow.session.scalar(select(Tenant.name)) or FALLBACK_TENANT_NAME
    overrides = {
        (o.event_type, o.part): o.source for o in uow.session.scalars(select(TemplateOverride))
    }
    bound = renderer.with_overrides(lambda _tenant, name, part: overrides.get((name, part)))
    messages: dict[tuple[str, str], Any] = {}
    created: list[str] = []
    for recipient, channel in plan:
        who = (recipient.kind, recipient.id)
        if who not in messages:
            messages[who] = bound.render(
                event, recipient, tenant_name=tenant_name, portal_base=portal_base
            )
        message = messages[who]
        email = channel == "email"
        stmt = pg_insert(_T).values(
            id=new_id(),
            tenant_id=uow.tenant_id,
            event_id=event["id"],
            event_type=event["type"],
            delivery_key=domain.delivery_key(event["id"], recipient.id, channel),
            recipient_kind=recipient.kind,
            recipient_id=recipient.id,
            channel=channel,
            address=domain.address_for(recipient, channel),
            subject=message.subject if email else None,
            body_text=message.text if email else None,
            body_html=message.html if email else None,
            sms_body=None if email else message.sms,
            status="pending",
            attempts=0,
            next_attempt_at=func.now(),
            created_at=func.now(),
        )
        new = uow.session.execute(
            stmt.on_conflict_do_nothing(index_elements=[_T.c.delivery_key]).returning(_T.c.id)
        ).scalar()
        if new is not None:
            created.append(str(new))
    return created


# ------------------------------------------------------------------------- reading


def delivery_page(uow: UnitOfWork, actor: Actor, query: dict[str, Any]) -> dict[str, Any]:
    """The staff delivery log of the actor's tenant, newest first."""
    if not actor.is_staff:
        raise Forbidden("Only staff can read the delivery log.")
    f = load_payload(c.DeliveryListQuery, query)
    stmt = select(Delivery)
    for key in ("status", "channel", "event_type"):
        if f.get(key):
            stmt = stmt.where(getattr(Delivery, key) == f[key])
    stmt, limit = pagination.page(stmt, Delivery, f.get("limit"), f.get("cursor"))
    rows, next_cursor = pagination.split(list(uow.session.scalars(stmt)), limit)
    schema = c.DeliverySchema()
    return {
        "items": [schema.dump({k: getattr(d, k) for k in schema.fields}) for d in rows],
        "next_cursor": next_cursor,
    }


# ------------------------------------------------------------------------- service


class Channels(DependencyProvider):
    """Renderer and senders, built once per process from the configuration."""

    def setup(self) -> None:
        settings = load()
        self.renderer = Renderer(TEMPLATE_DIR)
        self.senders = senders_from_settings(settings)
        self.portal_base = settings.portal_base_url

    def dispatch(self, core: DatabaseCore, ids: list[str]) -> None:
        """Send new deliveries in the background; the sweep covers any failure here."""

        def run() -> None:
            try:
                deliver(core, self.senders, ids)
            except Exception:  # noqa: BLE001 - must not kill the container
                log.exception("post-commit delivery failed; the sweep will retry")

        self.container.spawn_managed_thread(run, identifier="notify.deliver")

    def get_dependency(self, worker_ctx: Any) -> Channels:
        return self


class NotifyService(HealthEndpoints):
    name = "notify"

    db = Database("notify", metadata)
    ctx = RequestContext()
    metrics = Metrics()
    channels = Channels()

    @property
    def _db(self) -> WorkerDb:
        return cast(WorkerDb, self.db)  # nameko injects the provider's WorkerDb

    @event_consumer("notify")
    def on_event(self, event: dict[str, Any]) -> None:
        core = self._db.core
        ids = handle_event(
            core, self.channels.renderer, event, portal_base=self.channels.portal_base
        )
        if ids:  # after the commit, outside the transaction; the sweep backs this up
            self.channels.dispatch(core, ids)

    @timer(interval=SWEEP_SECONDS)
    def sweep_deliveries(self) -> None:
        for _ in range(SWEEP_MAX_ROUNDS):
            if sweep(self._db.core, self.channels.senders).get("claimed", 0) < SWEEP_BATCH:
                break

    @rpc
    def list_deliveries(self, query: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self._db.unit_of_work() as uow:
            return delivery_page(uow, actor, query)
