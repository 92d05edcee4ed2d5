"""``/healthz``, ``/readyz`` and ``/metrics`` for every service process."""

from __future__ import annotations

import json
from typing import Any

from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.wrappers import Response

from kit.config import load
from kit.http import http


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

    @http("GET", "/healthz")
    def healthz(self, request: Any) -> Response:
        return Response(json.dumps({"status": "ok"}), mimetype="application/json")

    @http("GET", "/readyz")
    def readyz(self, request: Any) -> Response:
        checks = {
            "database": "up" if self.db.core.ping() else "down",
            "broker": "up" if broker_reachable(load().amqp_uri) else "down",
        }
        ready = all(v == "up" for v in checks.values())
        body = {"status": "ready" if ready else "not_ready", "checks": checks}
        return Response(json.dumps(body), status=200 if ready else 503, mimetype="application/json")

    @http("GET", "/metrics")
    def prometheus_metrics(self, request: Any) -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
