"""Structured JSON logs and Prometheus metrics, the same in every service."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from nameko.extensions import DependencyProvider
from prometheus_client import Counter, Histogram

from kit.context import current_request_id, current_tenant_id

ENTRYPOINT_SECONDS = Histogram(
    "portico_entrypoint_seconds",
    "Time spent in a service entrypoint (RPC, event handler, HTTP)",
    ["service", "entrypoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ENTRYPOINT_ERRORS = Counter(
    "portico_entrypoint_errors_total",
    "Entrypoint calls that raised (domain errors included)",
    ["service", "entrypoint", "error"],
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": current_request_id.get(),
            "tenant_id": current_tenant_id.get(),
        }
        for key in ("event_id", "service"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stdout, for everything: Python warnings included
    (``logging.captureWarnings``: a library's multi-line warning becomes one record)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    logging.Formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    for noisy in ("kombu", "amqp", "nameko", "urllib3"):
        logging.getLogger(noisy).setLevel("WARNING")


class Metrics(DependencyProvider):
    """Times every entrypoint of the service it is declared on."""

    def setup(self) -> None:
        self._starts: dict[Any, float] = {}

    def worker_setup(self, worker_ctx: Any) -> None:
        self._starts[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        t0 = self._starts.pop(worker_ctx, None)
        name = worker_ctx.entrypoint.method_name
        if t0 is not None:
            ENTRYPOINT_SECONDS.labels(self.container.service_name, name).observe(
                time.perf_counter() - t0
            )
        if exc_info is not None:
            ENTRYPOINT_ERRORS.labels(
                self.container.service_name, name, type(exc_info[1]).__name__
            ).inc()
