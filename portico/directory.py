"""Republish the directory: every fact other services keep a copy of, as events.

Services keep local copies of directory facts from ``directory.*`` events (notify for
recipients, quotes to check references; tenant and customer settings and portal
accounts for the services that act on them). A copy that began after the facts were
published (a service added later, a queue declared later, a restored database) starts
empty; ``portico directory republish`` fills it. Consumers apply a fact only when it is
newer than the one they hold and record every event id, so republishing is harmless.
The events leave through the gateway's outbox like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from kit.config import Settings
from kit.db import DatabaseCore
from kit.messaging import EventPublisher, publish_committed
from services.gateway import domain
from services.gateway.api_accounts import account_event
from services.gateway.api_directory import _contact_event, _customer_event, _unit_event
from services.gateway.api_staff import _user_event
from services.gateway.models import (
    Contact,
    Customer,
    PortalAccount,
    StaffUser,
    Tenant,
    TenantSettings,
    Unit,
    metadata,
)

BATCH = 500  # rows per transaction: bounded outbox commits on big tenants

# entity -> (model, how one row becomes its event)
_ENTITIES: tuple[tuple[Any, Callable[[Any, Any], None]], ...] = (
    (Customer, lambda uow, c: _customer_event(uow, "directory.customer.updated", c)),
    (Contact, lambda uow, c: _contact_event(uow, "directory.contact.updated", c)),
    (Unit, lambda uow, u: _unit_event(uow, "directory.unit.updated", u)),
    (StaffUser, lambda uow, s: _user_event(uow, "directory.staff_user.updated", s)),
    (PortalAccount, lambda uow, a: account_event(uow, "directory.portal_account.updated", a)),
)


def republish(settings: Settings, slug: str | None = None) -> dict[str, int]:
    """Emit every directory fact of one tenant (or all); returns counts per entity."""
    core = DatabaseCore(settings.service_database_url("gateway"), metadata, pool_size=1)
    publisher = EventPublisher(settings.amqp_uri)
    core.after_commit.append(lambda envelopes: publish_committed(core, publisher, envelopes))
    counts: dict[str, int] = {}
    try:
        with core.unit_of_work(system=True) as uow:
            stmt = select(Tenant).order_by(Tenant.slug)
            if slug is not None:
                stmt = stmt.where(Tenant.slug == slug)
            tenants = [(t.id, t.slug, t.name) for t in uow.session.scalars(stmt)]
        if slug is not None and not tenants:
            raise SystemExit(f"portico: no tenant {slug!r}")
        for tenant_id, tenant_slug, name in tenants:
            with core.unit_of_work(tenant_id=tenant_id) as uow:
                uow.emit(
                    "directory.tenant.updated", {"id": tenant_id, "slug": tenant_slug, "name": name}
                )
                row = uow.session.scalars(select(TenantSettings)).first()
                if row is not None:
                    uow.emit("directory.settings.updated", domain.settings_event(row))
            counts["tenants"] = counts.get("tenants", 0) + 1
            for model, emit in _ENTITIES:
                counts[model.__tablename__] = counts.get(model.__tablename__, 0) + _each(
                    core, tenant_id, model, emit
                )
    finally:
        core.dispose()
    return counts


def _each(core: DatabaseCore, tenant_id: str, model: Any, emit: Callable[[Any, Any], None]) -> int:
    """Emit one event per row, in id order, ``BATCH`` rows per transaction."""
    done, after = 0, None
    while True:
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            stmt = select(model).order_by(model.id).limit(BATCH)
            if after is not None:
                stmt = stmt.where(model.id > after)
            rows = list(uow.session.scalars(stmt))
            for row in rows:
                emit(uow, row)
        done += len(rows)
        if len(rows) < BATCH:
            return done
        after = rows[-1].id
