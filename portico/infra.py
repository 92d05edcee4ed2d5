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

from kit.config import SERVICES, Settings

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
    pg = _tcp(settings.admin_database_url, 5432)
    if pg:
        problems.append(
            f"PostgreSQL is not reachable at {pg}. Start one (e.g. `docker compose -f "
            "deploy/compose.yaml up -d postgres`, or your distribution's postgresql package) "
            "or point ADMIN_DATABASE_URL at one."
        )
    mq = _tcp(settings.amqp_uri, 5672)
    if mq:
        problems.append(
            f"RabbitMQ is not reachable at {mq}. Start one (e.g. `docker compose -f "
            "deploy/compose.yaml up -d rabbitmq`, or `rabbitmq-server -detached`) "
            "or point AMQP_URI at one."
        )
    if not problems:
        problems += _login_problems(settings)
    return problems


def _login_problems(settings: Settings) -> list[str]:
    from kombu import Connection
    from sqlalchemy import create_engine, text

    from kit.db import sa_url

    problems = []
    url = sa_url(settings.admin_database_url)
    engine = create_engine(url.rsplit("/", 1)[0] + "/postgres", connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        problems.append(
            f"PostgreSQL refused the admin login ({type(exc).__name__}): check ADMIN_DATABASE_URL."
        )
    finally:
        engine.dispose()
    try:
        with Connection(settings.amqp_uri, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"RabbitMQ refused the connection ({exc}): check AMQP_URI and its vhost.")
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


def setup(settings: Settings, log: Callable[[str], Any] = print) -> None:
    """Idempotent: database, per-service roles and schemas, migrations, topology."""
    from kit.messaging import declare_topology
    from kit.migrate import ensure_database, upgrade

    ensure_database(settings.admin_database_url)
    for service in SERVICES:
        password = settings.raw.get(f"{service.upper()}_DB_PASSWORD")
        worker_password = settings.raw.get(f"{service.upper()}_WORKER_DB_PASSWORD")
        upgrade(service, settings.admin_database_url, password, worker_password)
        log(f"  migrated {service}")
    queues = declare_topology(settings.amqp_uri)
    log(f"  broker topology declared ({', '.join(queues)})")


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
