"""The queue bindings in the catalogue agree with the handlers services declare: every
declared type or pattern is bound to the service's queue (else its events never
arrive), every bound pattern has a handler for some event (else the binding only fills
the ledger), and each consuming service has one registry and one queue entrypoint."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

from contracts.catalogue import SUBSCRIPTIONS
from contracts.events import EVENTS
from kit.handlers import Handlers, topic_matches
from kit.messaging import EventConsumer

SERVICES = sorted(p.parent.name for p in Path("services").glob("*/service.py"))


def declared() -> dict[str, Handlers]:
    """The registries defined in each service's modules, by the service they name."""
    found: dict[str, list[Handlers]] = {}
    for service in SERVICES:
        importlib.import_module(f"services.{service}.service")
    for name, module in list(sys.modules.items()):
        if not name.startswith("services.") or name.count(".") < 2 or ".tests" in name:
            continue
        for value in vars(module).values():
            if isinstance(value, Handlers) and all(
                value is not h for h in found.get(value.service, [])
            ):
                found.setdefault(value.service, []).append(value)
    assert all(len(registries) == 1 for registries in found.values()), found
    return {service: registries[0] for service, registries in found.items()}


def test_every_consuming_service_has_a_queue_and_a_registry() -> None:
    assert set(declared()) == set(SUBSCRIPTIONS)


@pytest.mark.parametrize("service", sorted(SUBSCRIPTIONS))
def test_every_declared_pattern_is_bound(service: str) -> None:
    handlers, bound = declared()[service], SUBSCRIPTIONS[service]
    for pattern in handlers.patterns:
        matching = [t for t in EVENTS if topic_matches(pattern, t)]
        assert matching, f"{service} handles {pattern!r}, which names no event"
        unbound = [t for t in matching if not any(topic_matches(b, t) for b in bound)]
        assert not unbound, f"{service} handles {unbound} but its queue is not bound to them"


@pytest.mark.parametrize("service", sorted(SUBSCRIPTIONS))
def test_every_bound_pattern_has_a_handler(service: str) -> None:
    handlers = declared()[service]
    for pattern in SUBSCRIPTIONS[service]:
        handled = [t for t in EVENTS if topic_matches(pattern, t) and handlers.handler_for(t)]
        assert handled, f"{service} binds {pattern!r} but handles none of its events"


@pytest.mark.parametrize("service", sorted(SUBSCRIPTIONS))
def test_the_service_has_one_queue_entrypoint(service: str) -> None:
    module = importlib.import_module(f"services.{service}.service")
    consumers = [
        entrypoint
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__
        for _, member in inspect.getmembers(cls, inspect.isfunction)
        for entrypoint in getattr(member, "nameko_entrypoints", ())
        if isinstance(entrypoint, EventConsumer)
    ]
    assert len(consumers) == 1 and consumers[0].service == service
