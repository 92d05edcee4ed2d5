"""Run one service in this process: ``portico run quotes``.

Many copies of the same service may run at once: RPC and event queues are shared,
so copies are competing consumers and the broker spreads the work.
"""

from __future__ import annotations

import importlib
import os
import signal
import warnings
from typing import Any

from kit import registry


def service_class(name: str, services: tuple[registry.Service, ...] | None = None) -> Any:
    """The nameko class of a registered service (KeyError for an unknown name)."""
    module, _, attr = registry.get(name, services).entry.partition(":")
    return getattr(importlib.import_module(module), attr)


def nameko_config(service: str) -> dict[str, Any]:
    from kit.config import read_settings

    settings = read_settings()
    return {
        "AMQP_URI": settings.amqp_uri,
        "WEB_SERVER_ADDRESS": f"{settings.raw.get('BIND_HOST', '0.0.0.0')}:{settings.port(service)}",  # noqa: S104
        "max_workers": int(settings.raw.get("MAX_WORKERS", "20")),
        "parent_calls_tracked": 5,
        "serializer": "json",
        "HEARTBEAT": 30,
    }


def silence_eventlet_deprecation() -> None:
    """eventlet warns on import that it is deprecated (nine lines on stderr of every
    process, before logging is set up). nameko 2 runs on it: known, nothing to act on."""
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


def run(service: str) -> None:
    # eventlet's green DNS resolver (dnspython) costs ~18 MB per process; hosts are
    # resolved only when pooled connections open, so the OS resolver is enough.
    os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")
    silence_eventlet_deprecation()
    import eventlet

    eventlet.monkey_patch()  # before anything opens a socket

    from nameko.runners import ServiceRunner

    from kit.config import read_settings
    from kit.observability import configure_logging

    settings = read_settings()
    configure_logging(settings.log_level)
    runner = ServiceRunner(nameko_config(service))
    runner.add_service(service_class(service))

    def shutdown(signum: int, frame: Any) -> None:
        eventlet.spawn_n(runner.stop)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    runner.start()
    runner.wait()
