"""Reaching and preparing the infrastructure: PostgreSQL and RabbitMQ."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kit import registry
from kit.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"


def _tcp(url: str, default_port: int, timeout: float = 3.0) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} ({exc.strerror or exc})"


def check_dependencies(settings: Settings) -> list[str]:
    """Plain sentences about what is missing; empty when all is well. Never hangs."""
    problems = []
    pg = _tcp(settings.admin_database_url or settings.database_url or "", 5432)
    if pg:
        problems.append(
            f"PostgreSQL is not reachable at {pg}. Start one (e.g. `docker compose -f "
            "deploy/compose.yaml up -d postgres`, or your distribution's postgresql package) "
            "or point ADMIN_DATABASE_URL at one."
        )
    seen = set()
    for uri, variable in _broker_uris(settings):
        mq = _tcp(uri, 5672)
        if mq and mq not in seen:
            seen.add(mq)
            problems.append(
                f"RabbitMQ is not reachable at {mq}. Start one (e.g. `docker compose -f "
                "deploy/compose.yaml up -d rabbitmq`, or `rabbitmq-server -detached`) "
                f"or point {variable} at one."
            )
    if not problems:
        problems += _login_problems(settings)
    return problems


def _broker_uris(settings: Settings) -> list[tuple[str, str]]:
    """The broker logins this process may use, the administrator's first (setup needs it;
    the services' account only exists once setup has created it)."""
    uris = [(settings.amqp_uri, "AMQP_URI")]
    if settings.amqp_admin_uri:
        uris.insert(0, (settings.amqp_admin_uri, "AMQP_ADMIN_URI"))
    return uris


def broker_login_problem(uri: str, variable: str) -> str | None:
    """A plain sentence when the broker refuses this login (bad user, password or vhost)."""
    from kombu import Connection

    try:
        with Connection(uri, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        return (
            f"RabbitMQ refused the login of {variable} ({type(exc).__name__}: {exc}): "
            "check its user, password and vhost."
        )
    return None


def _login_problems(settings: Settings) -> list[str]:
    from sqlalchemy import create_engine, text

    from kit.db import sa_url

    problems = []
    if settings.admin_database_url:  # a service's pod in production has no owner login
        url = sa_url(settings.admin_database_url)
        engine = create_engine(
            url.rsplit("/", 1)[0] + "/postgres", connect_args={"connect_timeout": 5}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:  # noqa: BLE001 - report, don't crash
            problems.append(
                f"PostgreSQL refused the admin login ({type(exc).__name__}): "
                "check ADMIN_DATABASE_URL."
            )
        finally:
            engine.dispose()
    uri, variable = _broker_uris(settings)[0]
    problem = broker_login_problem(uri, variable)
    if problem:
        problems.append(problem)
    return problems


def docker_engine_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_with_compose(log: Callable[[str], Any]) -> None:
    log("Starting PostgreSQL and RabbitMQ with docker compose ...")
    subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "up", "-d", "--wait", "postgres", "rabbitmq"],
        check=True,
        timeout=300,
    )


def migration_plan(
    settings: Settings, services: tuple[registry.Service, ...] | None = None
) -> list[tuple[str, str | None, str | None]]:
    """What setup migrates, in registry order: each service with the passwords of its
    role and worker role (``<NAME>_DB_PASSWORD``, ``<NAME>_WORKER_DB_PASSWORD``)."""
    return [
        (
            s.name,
            settings.raw.get(f"{s.env_prefix}_DB_PASSWORD"),
            settings.raw.get(f"{s.env_prefix}_WORKER_DB_PASSWORD"),
        )
        for s in (registry.registered() if services is None else services)
    ]


def setup(
    settings: Settings,
    log: Callable[[str], Any] = print,
    services: tuple[registry.Service, ...] | None = None,
) -> None:
    """Idempotent: database, per-service roles and schemas, migrations (of every service
    in the registry), topology, and the broker accounts of the services and operators
    (portico.broker), all with the administrator's credentials (ADMIN_DATABASE_URL,
    AMQP_ADMIN_URI)."""
    from kit.messaging import declare_topology
    from kit.migrate import ensure_database, upgrade
    from portico.broker import provision

    if not settings.admin_database_url:
        raise ConfigError("ADMIN_DATABASE_URL is required to set up (PORTICO_ENV=production)")
    ensure_database(settings.admin_database_url)
    for name, password, worker_password in migration_plan(settings, services):
        upgrade(name, settings.admin_database_url, password, worker_password)
        log(f"  migrated {name}")
    queues = declare_topology(settings.admin_amqp_uri())
    log(f"  broker topology declared ({', '.join(queues)})")
    users = provision(settings)
    log(f"  broker accounts ready ({', '.join(users)})")


def tenant_id_for_slug(settings: Settings, slug: str) -> str | None:
    """The id of a tenant (operator commands take the slug people know)."""
    from sqlalchemy import select

    from kit.db import DatabaseCore
    from services.gateway.models import Tenant, metadata

    # The owner's login where this runs with it (the setup Job's Secret), else the gateway's.
    url = settings.admin_database_url or settings.service_database_url("gateway")
    core = DatabaseCore(url, metadata, pool_size=1)
    try:
        with core.unit_of_work(system=True) as uow:
            found = uow.session.scalars(
                select(Tenant.id).where(Tenant.slug == slug.strip().lower())
            ).first()
            return str(found) if found is not None else None
    finally:
        core.dispose()


def wait_http(url: str, timeout: float, proc: Any = None) -> bool:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.3)
    return False
