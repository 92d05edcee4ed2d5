"""Event handlers by declaration: a service that reacts to others' events says which
types it handles and the kit does every step around the handler.

```python
handlers = Handlers("quotes")

@handlers.on("directory.unit.*")
def copy_unit(uow, event, data): ...

class Quotes(HealthEndpoints):
    db = Database("quotes", metadata)
    on_event = handlers.consumer()
```

For each event the queue delivers (the consumer in :mod:`kit.messaging` has already
checked the envelope and owns the retry tiers and the dead-letter queue):

1. a version this service does not know raises :class:`UnsupportedEventVersion`: the
   event retries and is dead-lettered, never guessed at;
2. one unit of work in the event's tenant, caused by the event;
3. the exactly-once ledger (``uow.claim_event``) in that same transaction: a redelivered
   event changes nothing;
4. routing by type: an exact type wins over a pattern, patterns (topic syntax, as in
   ``contracts.catalogue.SUBSCRIPTIONS``: ``*`` one word, ``#`` any number) in the order
   declared; an event no handler takes is recorded in the ledger and acked;
5. the payload validated against its contract (``contracts.events.validate_data``);
6. the handler ``(uow, event, data)``; a callable it returns runs after the commit
   (notify sends its new deliveries there, outside the transaction).

A handler names a service dependency it needs as a keyword-only parameter (the way
nameko injects dependencies by attribute name); ``core`` is the service's
:class:`kit.db.DatabaseCore`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from contracts.events import EVENTS, validate_data
from kit.db import DatabaseCore
from kit.messaging import event_consumer

log = logging.getLogger(__name__)

Handler = Callable[..., Any]


class UnsupportedEventVersion(ValueError):
    """An envelope version this consumer does not know: dead-letter it, never guess."""


def topic_matches(pattern: str, event_type: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""

    def match(p: list[str], t: list[str]) -> bool:
        if not p:
            return not t
        if p[0] == "#":
            return any(match(p[1:], t[i:]) for i in range(len(t) + 1))
        return bool(t) and p[0] in ("*", t[0]) and match(p[1:], t[1:])

    return match(pattern.split("."), event_type.split("."))


@dataclass(frozen=True)
class Handled:
    """What became of one event: ``first_delivery`` is False for a redelivery (nothing was
    applied); ``result`` is what the handler returned (None if none ran)."""

    first_delivery: bool
    result: Any = None

    def after_commit(self) -> None:
        if callable(self.result):
            self.result()


class Handlers:
    """The event handlers of one service; ``consumer()`` is its queue's entrypoint."""

    def __init__(
        self, service: str, *, ledger: str | None = None, versions: Collection[int] = (1,)
    ) -> None:
        self.service = service
        # The name events are recorded under in the service's processed-events table.
        self.ledger = ledger or f"{service}.on_event"
        self.versions = frozenset(versions)
        self._exact: dict[str, Handler] = {}
        self._patterns: list[tuple[str, Handler]] = []
        self._needs: dict[Handler, tuple[str, ...]] = {}

    def on(self, *patterns: str) -> Callable[[Handler], Handler]:
        """Declare ``fn`` the handler of these event types or topic patterns."""
        if not patterns:
            raise ValueError("name at least one event type or pattern")

        def register(fn: Handler) -> Handler:
            for pattern in patterns:
                if pattern in self.patterns:
                    raise ValueError(f"{self.service}: {pattern!r} already has a handler")
                if "*" in pattern.split(".") or "#" in pattern.split("."):
                    self._patterns.append((pattern, fn))
                else:
                    self._exact[pattern] = fn
            self._needs[fn] = tuple(
                name
                for name, p in inspect.signature(fn).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY
            )
            return fn

        return register

    @property
    def patterns(self) -> tuple[str, ...]:
        """Every declared type and pattern, in declaration order within each kind."""
        return (*self._exact, *(p for p, _ in self._patterns))

    @property
    def needs(self) -> frozenset[str]:
        """The dependency names the handlers ask for."""
        return frozenset(name for names in self._needs.values() for name in names)

    def handler_for(self, event_type: str) -> Handler | None:
        if event_type in self._exact:
            return self._exact[event_type]
        for pattern, fn in self._patterns:
            if topic_matches(pattern, event_type):
                return fn
        return None

    def handle(self, core: DatabaseCore, event: dict[str, Any], /, **deps: Any) -> Handled:
        """Apply one event exactly once, in one unit of work (see the module's steps)."""
        if int(event.get("version", 1)) not in self.versions:
            raise UnsupportedEventVersion(f"{event['type']} version {event['version']}")
        with core.unit_of_work(tenant_id=event["tenant_id"], causation_id=event["id"]) as uow:
            if not uow.claim_event(self.ledger, event["id"]):
                log.info("event %s already handled", event["id"], extra={"event_id": event["id"]})
                return Handled(first_delivery=False)
            fn = self.handler_for(event["type"]) if event["type"] in EVENTS else None
            if fn is None:
                log.info("ignoring %s", event["type"], extra={"event_id": event["id"]})
                return Handled(first_delivery=True)
            data = validate_data(event["type"], event["data"])
            wanted = {name: deps[name] for name in self._needs[fn] if name in deps}
            return Handled(first_delivery=True, result=fn(uow, event, data, **wanted))

    def consumer(self, db: str = "db") -> Callable[[Any, dict[str, Any]], None]:
        """The service's event-queue entrypoint: ``on_event = handlers.consumer()``.

        ``db`` names the service's :class:`kit.providers.Database` attribute.
        """
        registry = self

        @event_consumer(self.service)
        def on_event(service: Any, event: dict[str, Any]) -> None:
            core = getattr(service, db).core
            deps = {name: getattr(service, name) for name in registry.needs - {"core"}}
            registry.handle(core, event, core=core, **deps).after_commit()

        return on_event
