"""Helpers for tests that run the real system: its own database, vhost and ports per
run, so runs never collide; real PostgreSQL and RabbitMQ, never mocks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from kit import registry

if TYPE_CHECKING:  # the database helpers import these when they are used
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Engine

    from kit.db import DatabaseCore

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MGMT = os.environ.get("TEST_RABBIT_MGMT", "http://guest:guest@127.0.0.1:15672")
BIN = Path(sys.executable).parent


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True
    except OSError:
        return False


_containers: list[Any] = []


def ensure_infrastructure() -> None:
    """Use the machine's PostgreSQL and RabbitMQ; where they are missing but a Docker
    engine runs, start both with testcontainers (once per test process)."""
    global PG_ADMIN, AMQP_BASE, MGMT
    if _containers or (_reachable(PG_ADMIN, 5432) and _reachable(AMQP_BASE, 5672)):
        return
    from portico.infra import docker_engine_available

    if not docker_engine_available():
        raise RuntimeError(
            f"PostgreSQL ({PG_ADMIN}) or RabbitMQ ({AMQP_BASE}) is not reachable and no Docker "
            "engine runs for testcontainers: start them, or set TEST_PG_URL / TEST_AMQP_URL."
        )
    import atexit

    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.community.rabbitmq import RabbitMqContainer

    pg = PostgresContainer(
        "postgres:16", username="postgres", password="postgres", dbname="postgres", driver=None
    ).start()
    mq = RabbitMqContainer("rabbitmq:3.13-management", username="guest", password="guest").start()
    _containers.extend([pg, mq])
    atexit.register(lambda: [c.stop() for c in _containers])
    PG_ADMIN = pg.get_connection_url().rsplit("/", 1)[0]
    host = mq.get_container_host_ip()
    AMQP_BASE = f"amqp://guest:guest@{host}:{mq.get_exposed_port(5672)}"
    MGMT = f"http://guest:guest@{host}:{mq.get_exposed_port(15672)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_vhost(name: str) -> None:
    if _containers:
        _containers[1].exec(["rabbitmqctl", "add_vhost", name])
        _containers[1].exec(
            ["rabbitmqctl", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"]
        )
        return
    if shutil.which("rabbitmqctl"):
        subprocess.run(
            ["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True, timeout=60
        )
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return
    r = requests.put(f"{MGMT}/api/vhosts/{quote(name, safe='')}", timeout=10)
    r.raise_for_status()


def drop_vhost(name: str) -> None:
    if _containers:
        _containers[1].exec(["rabbitmqctl", "delete_vhost", name])
        return
    if shutil.which("rabbitmqctl"):
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)
    else:
        requests.delete(f"{MGMT}/api/vhosts/{quote(name, safe='')}", timeout=10)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    from kit.db import sa_url

    engine = create_engine(
        sa_url(admin_url.rsplit("/", 1)[0] + "/postgres"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.execute(
            text(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = :d and pid <> pg_backend_pid()"
            ),
            {"d": name},
        )
        conn.execute(text(f'drop database if exists "{name}"'))
    engine.dispose()


class Environment:
    """A private database + vhost + ports + var folders for one test session."""

    def __init__(self, tmp: Path) -> None:
        ensure_infrastructure()
        self.run_id = uuid.uuid4().hex[:10]
        self.db_name = f"portico_t_{self.run_id}"
        self.vhost = f"portico-t-{self.run_id}"
        self.tmp = tmp
        self.admin_url = f"{PG_ADMIN}/{self.db_name}"
        # The broker administrator on this run's vhost (setup, and tests that need to
        # publish like a broker admin would); the services get their own account.
        self.amqp_uri = f"{AMQP_BASE}/{quote(self.vhost, safe='')}"
        # Broker user names are global to the server: a prefix per run keeps them apart.
        self.broker_prefix = f"portico-t-{self.run_id}-"
        self.ports = {k: free_port() for k in (*registry.names(), "smtp")}
        self.mail_dir = tmp / "mail"
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PORTICO_ENV": "development",
            **{
                f"{svc.env_prefix}_DB_PASSWORD": f"pw-{svc.name}-{self.run_id}"
                for svc in registry.registered()
            },
            "PORTICO_TEST_RUN": self.run_id,
            "ADMIN_DATABASE_URL": self.admin_url,
            "AMQP_ADMIN_URI": self.amqp_uri,
            "AMQP_USER_PREFIX": self.broker_prefix,
            **{
                f"{svc.env_prefix}_PORT": str(self.ports[svc.name]) for svc in registry.registered()
            },
            "SMTP_PORT": str(self.ports["smtp"]),
            "MAIL_DIR": str(self.mail_dir),
            "BLOB_DIR": str(tmp / "blobs"),
            "SMS_DIR": str(tmp / "sms"),
            "JWT_DEV_KEY_FILE": str(tmp / "keys" / "dev.pem"),
            "PORTICO_ARGON2_FAST": "1",
            "EVENT_RETRY_DELAYS_MS": "200,500,1000,2000",
            "OUTBOX_RELAY_INTERVAL": "0.5",
            "NOTIFY_SWEEP_SECONDS": "0.5",
            "RPC_TIMEOUT_SECONDS": "8",
            "LOGIN_LIMIT_PER_ACCOUNT": "5",
            "LOGIN_LIMIT_PER_ADDRESS": "1000",
            # Every test calls from 127.0.0.1; the per-account reset limit stays at 3.
            "PASSWORD_RESET_LIMIT_PER_ADDRESS": "1000",
            "PORTAL_BASE_URL": "http://portal.test",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("PORT", "AMQP_URI", "AMQP_OPERATOR_URI", "RABBITMQ_MANAGEMENT_URL"):
            self.env.pop(name, None)
        if _containers:
            self.env["RABBITMQ_MANAGEMENT_URL"] = MGMT
        self.base = f"http://127.0.0.1:{self.ports['gateway']}"
        make_vhost(self.vhost)

    def settings(self) -> Any:
        """The configuration every process of this run reads (kit.config)."""
        from kit.config import read_settings

        return read_settings(self.env)

    def close(self) -> None:
        drop_database(self.admin_url, self.db_name)
        self.close_broker()

    def close_broker(self) -> None:
        """Drop this run's vhost and its broker users (names are global to the server,
        so dropping the vhost alone leaves them behind)."""
        from portico.broker import drop_users

        drop_vhost(self.vhost)
        try:  # this run's services, operator and integration users
            drop_users(self.settings())
        except Exception as exc:  # noqa: BLE001 - leftovers are named by the run's prefix
            print(f"could not drop broker users {self.broker_prefix}*: {exc}", file=sys.stderr)


class Process:
    """One child process with its output in a log file (read on failure)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log_path = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up handlers run."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]


def wait_ready(url: str, timeout: float = 90, proc: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.output()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s" + (f"\n{proc.output()}" if proc else ""))


class Client:
    """The public HTTP API, as a web or mobile client uses it."""

    refresh_token: str  # set by login(), for clients that signed in

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base + "/api/v1"
        self.http = requests.Session()
        self.token = token
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 20)
        return self.http.request(method, self.base + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, json=json, **kw)

    def patch(self, path: str, json: Any = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def login(self, tenant: str, email: str, password: str) -> Client:
        r = self.post("/auth/token", {"tenant": tenant, "email": email, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        client = Client(self.base[: -len("/api/v1")], body["access_token"])
        client.refresh_token = body["refresh_token"]
        return client


def wait_for(predicate: Any, timeout: float = 20, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


class TcpProxy:
    """A TCP forwarder ``127.0.0.1:<port>`` -> ``target``, to take a dependency away
    from the processes that connect through it, and only from them.

    ``cut()`` resets every live connection and resets new ones as they arrive (a
    broker that went away); ``restore()`` forwards again. Threads, no asyncio: it lives
    in the test process next to blocking HTTP calls.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.accepted = 0  # connections forwarded since start
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    @property
    def live(self) -> int:
        """Open client connections (each also has its upstream half)."""
        with self._lock:
            return len(self._live) // 2

    def cut(self) -> int:
        """Reset every live connection and refuse new ones; returns how many were cut."""
        with self._lock:
            self._cut = True
            victims = list(self._live)
            self._live.clear()
        for sock in victims:
            _reset(sock)
        return len(victims) // 2

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed:
                    return
                continue
            client.settimeout(None)
            if self._cut:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut:
                    refused = True
                else:
                    refused = False
                    self._live.update((client, upstream))
                    self.accepted += 1
            if refused:
                _reset(client)
                _reset(upstream)
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(src)
                self._live.discard(dst)
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), waking any thread blocked on the socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@contextlib.contextmanager
def scratch_database(*services: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A private database with the services' migrations applied, dropped afterwards.
    Yields the admin URL and, per service, the URL of its own (RLS-bound) role."""
    from kit.config import with_user
    from kit.migrate import ensure_database, upgrade

    ensure_infrastructure()
    name = f"portico_t_{uuid.uuid4().hex[:12]}"
    admin = f"{PG_ADMIN}/{name}"
    ensure_database(admin)
    try:
        urls = {}
        for service in services:
            password = f"pw-{service}-{name}"
            upgrade(service, admin, password)
            urls[service] = with_user(admin, f"portico_{service}", password)
        yield admin, urls
    finally:
        drop_database(admin, name)


@contextlib.contextmanager
def database_core(url: str, metadata: MetaData, *, pool_size: int = 2) -> Iterator[DatabaseCore]:
    """A :class:`kit.db.DatabaseCore` over ``url`` (a service role's, so row-level
    security applies), disposed afterwards."""
    from kit.db import DatabaseCore

    core = DatabaseCore(url, metadata, pool_size=pool_size)
    try:
        yield core
    finally:
        core.dispose()


@contextlib.contextmanager
def owner_engine(admin_url: str, *, autocommit: bool = False) -> Iterator[Engine]:
    """An engine for the database's owner (the superuser: past row-level security, as a
    migration sees it), disposed afterwards."""
    from sqlalchemy import create_engine

    from kit.db import sa_url

    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(sa_url(admin_url), **options)
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass(frozen=True)
class ScratchService:
    """One service's scratch database: the owner's URL and engine, the service role's
    URL and a DatabaseCore over it."""

    admin: str
    url: str
    core: DatabaseCore
    owner: Engine


@contextlib.contextmanager
def scratch_service(
    service: str, metadata: MetaData, *, pool_size: int = 2, autocommit: bool = False
) -> Iterator[ScratchService]:
    """:func:`scratch_database` for one service with what its tests use of it: a core as
    the service (``pool_size``) and an owner engine (``autocommit``), all disposed and
    the database dropped afterwards."""
    with (
        scratch_database(service) as (admin, urls),
        database_core(urls[service], metadata, pool_size=pool_size) as core,
        owner_engine(admin, autocommit=autocommit) as owner,
    ):
        yield ScratchService(admin, urls[service], core, owner)


# --- logins made the way people get them: an invitation by email (accounts) -------------
LINK_RE = re.compile(r"(/invitations/accept|/password-reset)\?token=([A-Za-z0-9%._~-]+)")
LINK_PATH = {"invitation": "/invitations/accept", "password_reset": "/password-reset"}


def strong_password() -> str:
    """A password the gateway's policy accepts (long, random, no email or shop name)."""
    return f"Quartz-{uuid.uuid4().hex[:12]}-ravel!"


def mailed_link_token(
    mail_dir: Path,
    email: str,
    purpose: str = "invitation",
    *,
    exclude: Any = (),
    timeout: float = 30,
) -> str:
    """The token of the newest ``purpose`` link mailed to ``email`` (read from the
    development mail catcher), waiting for it; tokens in ``exclude`` do not count."""
    from urllib.parse import unquote

    from portico.devmail import read_mailbox

    def newest() -> str | None:
        for message in reversed(read_mailbox(mail_dir)):
            if str(message["To"]).strip().lower() != email.lower():
                continue
            body = message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            for path, token in LINK_RE.findall(text):
                token = unquote(token)
                if path == LINK_PATH[purpose] and token not in exclude:
                    return token
        return None

    return wait_for(newest, timeout=timeout)


def accept_invitation(base: str, mail_dir: Path, email: str) -> str:
    """Accept the invitation mailed to ``email`` with a good password; returns it."""
    password = strong_password()
    token = mailed_link_token(mail_dir, email, "invitation")
    r = Client(base).post("/auth/invitations/accept", {"token": token, "password": password})
    assert r.status_code == 200, r.text
    return password


def invite_portal_user(
    system: Any, admin: Client, customer_id: str, **fields: Any
) -> tuple[Client, dict[str, Any]]:
    """A working portal login for tests: the account is created through the API (staff
    never choose its password), its invitation is read from the mail catcher and
    accepted with a good password, and the person signs in. Returns the signed-in
    client and the account (with ``password`` added)."""
    body = {
        "email": f"portal-{uuid.uuid4().hex[:10]}@example.com",
        "first_name": "Test",
        "last_name": "Portal",
        **fields,
    }
    r = admin.post(f"/customers/{customer_id}/portal-accounts", body)
    assert r.status_code == 201, r.text
    account = r.json()
    password = accept_invitation(system.base, system.env.mail_dir, account["email"])
    client = system.anonymous().login(system.tenant, account["email"], password)
    return client, {**account, "password": password}


def invite_staff_user(
    system: Any, admin: Client, roles: list[str]
) -> tuple[Client, dict[str, Any]]:
    """The same for a staff user created by an admin."""
    body = {
        "email": f"staff-{uuid.uuid4().hex[:10]}@example.com",
        "first_name": "Test",
        "last_name": "Staff",
        "roles": roles,
    }
    r = admin.post("/users", body)
    assert r.status_code == 201, r.text
    user = r.json()
    password = accept_invitation(system.base, system.env.mail_dir, user["email"])
    client = system.anonymous().login(system.tenant, user["email"], password)
    return client, {**user, "password": password}
