"""The gateway's one event queue (``portico.gateway.events``, bound as
``contracts.catalogue.SUBSCRIPTIONS["gateway"]`` says): gateway replicas are competing
consumers of it, so each event is applied once however many replicas run.

Every event goes first to the read views (:mod:`services.gateway.views`), then to each
part of the gateway that registered with :func:`also` (the live stream's log), all in
the event's one unit of work with the exactly-once ledger (``kit.handlers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kit.db import UnitOfWork
from kit.handlers import Handlers
from services.gateway import views

handlers = Handlers("gateway")
EventHook = Callable[[UnitOfWork, dict[str, Any], dict[str, Any]], Any]
_hooks: list[EventHook] = []


def also(hook: EventHook) -> EventHook:
    """Run ``hook(uow, event, data)`` for every event after the views; a callable it
    returns runs after the commit."""
    _hooks.append(hook)
    return hook


@handlers.on("#")
def on_event(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> Any:
    after = [views.apply(uow, event, data), *(hook(uow, event, data) for hook in _hooks)]

    def after_commit() -> None:
        for fn in after:
            if callable(fn):
                fn()

    return after_commit
