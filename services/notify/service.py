"""Notifications driven by events.

``directory.*`` events keep local copies of tenants, customers, contacts, staff and
the tenant settings notify acts on. An event that notifies someone is planned once
(:func:`domain.plan_deliveries`) in the transaction that records it as processed: email
and SMS become ``deliveries`` rows (one per recipient and channel, deduplicated by
``delivery_key``) holding the template context, in-app becomes ``notifications`` rows
(rendered from the built-in templates; the feed, its marks and the events that keep the
gateway's feed view are in :mod:`services.notify.feed`). Rendering messages, which may
run a tenant's template overrides, and sending happen after the commit: a sender claims
rows with a lease, renders them (:mod:`services.notify.sending`), hands them to SMTP or
the SMS gateway, then records the outcome. A sweep on a timer sends whatever is due and
whatever a crashed sender left behind once its lease expired.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

from nameko.extensions import DependencyProvider
from nameko.timer import timer
from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts import notify as c
from kit import pagination
from kit.access import require_system
from kit.config import env_float, read_settings
from kit.context import Actor
from kit.db import DatabaseCore, UnitOfWork
from kit.errors import Forbidden
from kit.facts import occurred_at, upsert_newer
from kit.handlers import Handlers
from kit.health import HealthEndpoints
from kit.ids import new_id
from kit.observability import Metrics
from kit.providers import Database, RequestContext, WorkerDb, rpc
from kit.schemas import parse as load_payload
from services.notify import attachments, domain
from services.notify.channels import TEMPLATE_DIR, Renderer
from services.notify.feed import (
    mark_all_read,
    mark_read,
    notification_page,
    notification_snapshot,
    store_in_app,
)
from services.notify.models import (
    Contact,
    Customer,
    Delivery,
    StaffMember,
    Tenant,
    TenantSettings,
    metadata,
)
from services.notify.sending import SWEEP_BATCH, deliver, senders_from_settings, sweep

log = logging.getLogger(__name__)

SWEEP_SECONDS = env_float("NOTIFY_SWEEP_SECONDS", 2.0)  # fixes the timer at import
SWEEP_MAX_ROUNDS = 10
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


handlers = Handlers("notify")


# ------------------------------------------------------------------ handling events


@handlers.on("directory.settings.updated")
def copy_settings(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> None:
    """Keep the tenant's ``notify_new_request_roles``; an older event never wins."""
    roles = {"notify_new_request_roles": list(data["notify_new_request_roles"])}
    at = occurred_at(event["occurred_at"])
    upsert_newer(uow, TenantSettings, event["tenant_id"], roles, at)  # the uow's tenant


@handlers.on("directory.#")
def copy_directory_fact(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> None:
    """Upsert the local copy; a fact older than the one held is ignored."""
    entity = event["type"].rsplit(".", 1)[0]
    if entity not in _DIRECTORY:
        return
    model, names = _DIRECTORY[entity]
    values = {name: data.get(name) for name in names}
    upsert_newer(uow, model, data["id"], values, occurred_at(event["occurred_at"]))


@dataclass(frozen=True)
class NewDeliveries:
    """The deliveries one event created, sent right after its commit (the sweep backs
    this up)."""

    channels: Channels
    core: DatabaseCore
    ids: list[str]

    def __call__(self) -> None:
        self.channels.dispatch(self.core, self.ids)


@handlers.on(*domain.NOTIFICATION_RULES)  # other events notify nobody: no lookups
def notify_people(
    uow: UnitOfWork,
    event: dict[str, Any],
    data: dict[str, Any],
    *,
    channels: Channels,
    core: DatabaseCore,
) -> NewDeliveries | None:
    """Plan who is told and store it; the new email and SMS go out after the commit."""
    ids = _store_plan(uow, channels.renderer, {**event, "data": data}, channels.portal_base)
    return NewDeliveries(channels, core, ids) if ids else None


def _new_request_roles(uow: UnitOfWork) -> tuple[str, ...]:
    roles = uow.session.scalar(select(TenantSettings.notify_new_request_roles))
    return domain.DEFAULT_NEW_REQUEST_ROLES if roles is None else tuple(roles)


def _recipients(uow: UnitOfWork, customer_id: str | None) -> tuple[list[Any], list[Any]]:
    contacts: list[Contact] = (
        list(
            uow.session.scalars(
                select(Contact).where(Contact.customer_id == customer_id).order_by(Contact.id)
            )
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


def _store_plan(
    uow: UnitOfWork, renderer: Renderer, event: dict[str, Any], portal_base: str
) -> list[str]:
    """Plan who is told, store it; return the ids of new deliveries to send.

    Deliveries keep the template context and are rendered when sent, outside this
    transaction (tenant overrides are tenant code). In-app items are rendered here,
    from the built-in templates only.
    """
    data = event["data"]
    contacts, staff = _recipients(uow, data.get("customer_id"))
    roles = _new_request_roles(uow) if "staff_roles" in _audiences(event["type"]) else ()
    plan = domain.plan_deliveries(
        event["type"],
        data,
        contacts,
        staff,
        actor_id=event["actor"]["id"],
        new_request_roles=roles,
    )
    if not plan:
        return []
    tenant_name = uow.session.scalar(select(Tenant.name)) or FALLBACK_TENANT_NAME
    customer_name = data.get("customer_id") and uow.session.scalar(
        select(Customer.name).where(Customer.id == data["customer_id"])
    )
    # The templates greet staff with the customer's name, a fact the event does not carry.
    shown = {**event, "data": {**data, "customer_name": customer_name or ""}}
    built_in = renderer.with_overrides(None)
    # Files the event asks to attach travel with its email deliveries only.
    files = [ref.as_json() for ref in attachments.requested(data)] or None
    created: list[str] = []
    for recipient, channel in plan:
        ctx = Renderer.context(shown, recipient, tenant_name=tenant_name, portal_base=portal_base)
        if channel == domain.IN_APP:
            store_in_app(
                uow, event, recipient, built_in.render_context(ctx, ("subject", "in_app")), ctx
            )
            continue
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
            context=ctx,
            attachments=files if channel == "email" else None,
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


def _audiences(event_type: str) -> set[str]:
    return {rule.audience for rule in domain.NOTIFICATION_RULES.get(event_type, ())}


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
    rows, next_cursor = pagination.read_page(
        uow.session, stmt, Delivery, f.get("limit"), f.get("cursor")
    )
    schema = c.DeliverySchema()
    return {
        "items": [schema.dump({k: getattr(d, k) for k in schema.fields}) for d in rows],
        "next_cursor": next_cursor,
    }


# ------------------------------------------------------------------------- service


class Channels(DependencyProvider):
    """Renderer and senders, built once per process from the configuration."""

    def setup(self) -> None:
        settings = read_settings()
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

    on_event = handlers.consumer()

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

    @rpc
    def list_notifications(self, query: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self._db.unit_of_work() as uow:
            return notification_page(uow, actor, query)

    @rpc
    def mark_read(self, notification_id: str) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self._db.unit_of_work() as uow:
            return mark_read(uow, actor, notification_id)

    @rpc
    def mark_all_read(self) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self._db.unit_of_work() as uow:
            return mark_all_read(uow, actor)

    @rpc
    def snapshot_notifications(self, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every in-app item of the tenant with its readers' marks, oldest first, page by
        page (the system only): what the gateway's feed view is rebuilt from."""
        actor = self.ctx.require_actor()
        require_system(actor)
        with self._db.unit_of_work() as uow:
            return notification_snapshot(uow, query or {})
