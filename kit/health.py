"""``/healthz``, ``/readyz`` and ``/metrics`` for every service process."""

from __future__ import annotations

import json
from typing import Any

from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from werkzeug.wrappers import Response

from kit.config import read_settings
from kit.http import http

OUTBOX_UNPUBLISHED = Gauge(
    "portico_outbox_unpublished", "Outbox rows not yet published", ["service"]
)
OUTBOX_LAG = Gauge(
    "portico_outbox_lag_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
QUEUE_DEPTH = Gauge(
    "portico_queue_depth", "Messages waiting in this service's event queues", ["service", "queue"]
)


def broker_reachable(amqp_uri: str, timeout: float = 2.0) -> bool:
    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - readiness reports, never raises
        return False


class HealthEndpoints:
    """Mixin: needs a ``db`` dependency (kit.providers.Database) on the service."""

    db: Any
    name: str  # the nameko service name

    @http("GET", "/healthz")
    def healthz(self, request: Any) -> Response:
        return Response(json.dumps({"status": "ok"}), mimetype="application/json")

    @http("GET", "/readyz")
    def readyz(self, request: Any) -> Response:
        checks = {
            "database": "up" if self.db.core.ping() else "down",
            "broker": "up" if broker_reachable(read_settings().amqp_uri) else "down",
        }
        ready = all(v == "up" for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return Response(json.dumps(body), status=200 if ready else 503, mimetype="application/json")

    @http("GET", "/metrics")
    def prometheus_metrics(self, request: Any) -> Response:
        service = self.name
        lag = outbox_lag(self.db.core)
        if lag is not None:
            OUTBOX_UNPUBLISHED.labels(service).set(lag[0])
            OUTBOX_LAG.labels(service).set(lag[1])
        for queue, depth in queue_depths(read_settings().amqp_uri, service).items():
            QUEUE_DEPTH.labels(service, queue).set(depth)
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def outbox_lag(core: Any) -> tuple[int, float] | None:
    """(unpublished rows, seconds the oldest has waited), read at scrape time."""
    if core.outbox is None:
        return None
    from sqlalchemy import func, select

    from kit.db import utcnow

    try:
        with core.unit_of_work(worker=True) as uow:
            count, oldest = uow.session.execute(
                select(func.count(), func.min(core.outbox.c.created_at)).where(
                    core.outbox.c.published_at.is_(None)
                )
            ).one()
    except Exception:  # noqa: BLE001 - metrics never fail the scrape
        return None
    return int(count), (utcnow() - oldest).total_seconds() if oldest else 0.0


def queue_depths(amqp_uri: str, service: str) -> dict[str, int]:
    """Ready messages in the service's event queue and its dead-letter queue."""
    from contracts.catalogue import SUBSCRIPTIONS, dead_queue_name, queue_name

    if service not in SUBSCRIPTIONS:
        return {}
    depths = {}
    try:
        with Connection(amqp_uri, connect_timeout=2) as conn:
            channel = conn.channel()
            for name in (queue_name(service), dead_queue_name(service)):
                depths[name] = channel.queue_declare(name, passive=True).message_count
    except Exception:  # noqa: BLE001 - metrics never fail the scrape
        return depths
    return depths
