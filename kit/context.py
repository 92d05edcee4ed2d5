"""Request context: who is calling, for which tenant, under which request id.

The gateway builds an :class:`Actor` from a verified token and puts it, with the
request id, into nameko's context data. nameko copies context data into the headers
of every RPC call it makes, so each service reads the same identity back with
``kit.providers.RequestContext`` and the same request id reaches logs and events.
The broker is internal: only processes holding AMQP credentials can set these headers.

Pure (standard library only), so that every ``domain.py`` can use :class:`Actor`;
:class:`Context` reads a worker's context data without importing nameko, and the
nameko dependency provider that injects it lives in ``kit.providers``.
"""

from __future__ import annotations

import contextvars
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from kit.errors import Unauthenticated

ACTOR_KEY = "portico_actor"
REQUEST_ID_KEY = "portico_request_id"
CAUSATION_KEY = "portico_causation_id"

STAFF_ROLES = ("admin", "manager", "advisor", "technician")
PORTAL_PERMISSIONS = (
    "quotes.request",
    "quotes.approve",
    "bookings.request",
    "estimates.approve",
    "invoices.authorize",
    "payments.make",
    "history.view",
)

# The log filter reads these; set per worker so concurrent greenthreads don't mix.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
current_tenant_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tenant_id", default=None
)


@dataclass(frozen=True)
class Actor:
    kind: str  # staff | portal | token | system
    id: str
    tenant_id: str
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    customer_id: str | None = None
    unit_ids: tuple[str, ...] | None = None  # None: every unit of the customer
    work_order_id: str | None = None
    read_only: bool = False
    name: str = ""
    views: tuple[str, ...] = field(default=())

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"

    def has_role(self, *roles: str) -> bool:
        return self.kind == "staff" and any(r in self.roles for r in roles)

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> Actor:
        data = json.loads(raw)
        for key in ("roles", "permissions", "views"):
            data[key] = tuple(data.get(key) or ())
        if data.get("unit_ids") is not None:
            data["unit_ids"] = tuple(data["unit_ids"])
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        """What events record about who did it."""
        return {"kind": self.kind, "id": self.id, "name": self.name}


def system_actor(tenant_id: str) -> Actor:
    return Actor(kind="system", id="system", tenant_id=tenant_id, name="Portico")


def new_request_id() -> str:
    return uuid.uuid4().hex


class Context:
    """The calling context of one worker."""

    def __init__(self, worker_ctx: Any) -> None:
        self._worker_ctx = worker_ctx

    @property
    def actor(self) -> Actor | None:
        raw = self._worker_ctx.data.get(ACTOR_KEY)
        return Actor.from_json(raw) if raw else None

    def require_actor(self) -> Actor:
        actor = self.actor
        if actor is None:
            raise Unauthenticated("no caller identity in the request context")
        return actor

    @property
    def request_id(self) -> str:
        rid = self._worker_ctx.data.get(REQUEST_ID_KEY)
        if not rid:
            rid = new_request_id()
            self._worker_ctx.data[REQUEST_ID_KEY] = rid
        return rid

    @property
    def causation_id(self) -> str | None:
        return self._worker_ctx.data.get(CAUSATION_KEY)

    def bind(
        self,
        actor: Actor | None = None,
        request_id: str | None = None,
        causation_id: str | None = None,
    ) -> None:
        """Set identity for this worker; later RPC calls carry it in their headers."""
        if actor is not None:
            self._worker_ctx.data[ACTOR_KEY] = actor.to_json()
            current_tenant_id.set(actor.tenant_id)
        if request_id:
            self._worker_ctx.data[REQUEST_ID_KEY] = request_id
            current_request_id.set(request_id)
        if causation_id:
            self._worker_ctx.data[CAUSATION_KEY] = causation_id
