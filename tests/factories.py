"""Shared builders for every service's test tier: callers of each kind
(:class:`kit.context.Actor`), a nameko worker of a service bound to a real database and a
caller (:func:`service_as`), and event envelopes as a consumer receives them.

Every id a caller is not given is a fresh uuid, so tests that share a database never
collide; a module with fixed values (a ``TENANT`` constant, ids its assertions name)
wraps these in a one-line partial rather than building :class:`Actor` itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from kit.context import ACTOR_KEY, Actor, Context, system_actor

if TYPE_CHECKING:  # imported when used, so pure domain tests load no nameko or SQLAlchemy
    from kit.db import DatabaseCore

__all__ = ["envelope", "new_id", "portal", "service_as", "staff", "system", "token"]


def new_id() -> str:
    return str(uuid.uuid4())


# --- callers ---------------------------------------------------------------------------


def staff(
    *roles: str,
    tenant: str | None = None,
    id: str | None = None,
    name: str = "",
    read_only: bool = False,
) -> Actor:
    """A staff user holding ``roles`` (none: a roleless account)."""
    return Actor(
        kind="staff",
        id=id or new_id(),
        tenant_id=tenant or new_id(),
        roles=roles,
        name=name,
        read_only=read_only,
    )


def portal(
    customer: str | None,
    *,
    tenant: str | None = None,
    permissions: tuple[str, ...] = (),
    units: tuple[str, ...] | None = None,
    read_only: bool = False,
    id: str | None = None,
    name: str = "",
) -> Actor:
    """A customer's portal user: no permissions unless given, every unit of the customer
    unless ``units`` limits it (``()``: none), writing unless ``read_only`` (a preview)."""
    return Actor(
        kind="portal",
        id=id or new_id(),
        tenant_id=tenant or new_id(),
        permissions=permissions,
        customer_id=customer,
        unit_ids=units,
        read_only=read_only,
        name=name,
    )


def token(
    work_order: str | None,
    *,
    tenant: str | None = None,
    customer: str | None = None,
    views: tuple[str, ...] = (),
    id: str | None = None,
) -> Actor:
    """The holder of a work order's link (and of its customer's, when ``customer``)."""
    return Actor(
        kind="token",
        id=id or new_id(),
        tenant_id=tenant or new_id(),
        customer_id=customer,
        work_order_id=work_order,
        views=views,
    )


def system(tenant: str) -> Actor:
    """The services themselves (never built from a token)."""
    return system_actor(tenant)


# --- workers and events ----------------------------------------------------------------


def service_as(service_cls: type, core: DatabaseCore, actor: Actor, **dependencies: Any) -> Any:
    """A nameko worker of ``service_cls`` called by ``actor``: its ``db`` a
    :class:`kit.providers.WorkerDb` over the real ``core`` (so row-level security and the
    outbox apply) and its ``ctx`` the actor's request context; any other dependency is a
    mock unless given in ``dependencies``."""
    from nameko.testing.services import worker_factory

    from kit.providers import WorkerDb

    context = Context(SimpleNamespace(data={ACTOR_KEY: actor.to_json()}))
    return worker_factory(service_cls, db=WorkerDb(core, context), ctx=context, **dependencies)


def envelope(
    event_type: str,
    data: dict[str, Any],
    tenant: str,
    occurred_at: datetime | None = None,
    *,
    actor: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated event envelope as a consumer receives it, sent by the system unless
    ``actor`` (an :meth:`Actor.summary`) says otherwise; ``occurred_at`` overrides now."""
    from contracts.events import make_envelope, parse_envelope

    env = make_envelope(
        event_type,
        data,
        tenant_id=tenant,
        actor=dict(actor if actor is not None else system(tenant).summary()),
        correlation_id=None,
        causation_id=None,
    )
    if occurred_at is not None:
        env["occurred_at"] = occurred_at.isoformat().replace("+00:00", "Z")
    return parse_envelope(env)
