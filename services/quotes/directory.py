"""What the quotes service knows of the directory: local copies of customers, units
and staff, kept from ``directory.*`` events, and the lookups that turn the ids a
request names into :class:`services.quotes.domain.Known` facts.

The copies are eventually consistent: a customer, unit or staff account created in
the gateway is known here once its event has been consumed (normally a few
milliseconds after the gateway's commit; up to the outbox relay interval plus its
two-second grace if the post-commit publish failed). Until then a reference to it is
refused like any unknown id, and the caller retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from kit.db import UnitOfWork
from kit.facts import occurred_at, upsert_newer
from kit.handlers import Handlers
from kit.ids import is_uuid
from services.quotes.domain import Known
from services.quotes.models import KnownCustomer, KnownStaff, KnownUnit

log = logging.getLogger(__name__)

# Events recorded under the entrypoint's former name, so a redelivery stays a no-op.
handlers = Handlers("quotes", ledger="quotes.on_directory_event")

# entity prefix -> (local copy, fields copied from the event data)
COPIES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "directory.customer": (KnownCustomer, ("name",)),
    "directory.unit": (KnownUnit, ("customer_id", "label")),
    "directory.staff_user": (KnownStaff, ("name", "active")),
}


@handlers.on(*(f"{entity}.*" for entity in COPIES))
def copy_fact(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> None:
    """Upsert the local copy; a fact older than the one held is ignored. Other
    directory events on the queue (tenants, contacts, settings) are recorded and acked."""
    model, names = COPIES[event["type"].rsplit(".", 1)[0]]
    values = {name: data.get(name) for name in names}
    upsert_newer(uow, model, str(data["id"]), values, occurred_at(event["occurred_at"]))


def _ids(values: Iterable[str | None]) -> list[str]:
    return sorted({str(v) for v in values if v and is_uuid(str(v))})


def known(
    uow: UnitOfWork,
    *,
    customers: Iterable[str | None] = (),
    units: Iterable[str | None] = (),
    staff: Iterable[str | None] = (),
) -> Known:
    """The facts held about exactly these ids, in the caller's tenant (the unit of work
    scopes every query, and row-level security checks it again)."""
    customer_ids, unit_ids, staff_ids = _ids(customers), _ids(units), _ids(staff)
    found_customers: frozenset[str] = frozenset()
    unit_customers: dict[str, str] = {}
    active: frozenset[str] = frozenset()
    if customer_ids:
        found_customers = frozenset(
            str(x)
            for x in uow.session.scalars(
                select(KnownCustomer.id).where(KnownCustomer.id.in_(customer_ids))
            )
        )
    if unit_ids:
        rows = uow.session.execute(
            select(KnownUnit.id, KnownUnit.customer_id).where(KnownUnit.id.in_(unit_ids))
        )
        unit_customers = {str(u): str(c) for u, c in rows}
    if staff_ids:
        active = frozenset(
            str(x)
            for x in uow.session.scalars(
                select(KnownStaff.id).where(
                    KnownStaff.id.in_(staff_ids), KnownStaff.active.is_(True)
                )
            )
        )
    return Known(customers=found_customers, unit_customers=unit_customers, active_staff=active)
