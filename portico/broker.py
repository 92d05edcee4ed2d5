"""The broker as a trust boundary: RabbitMQ users and what each may touch.

Services, operators and integrations each get their own broker account, limited by
RabbitMQ's own access control (https://www.rabbitmq.com/docs/access-control):

* vhost permissions are three regular expressions over exchange and queue names:
  *configure* (declare, delete), *write* (publish to an exchange; ``queue.bind`` needs
  it on the queue) and *read* (consume or get from a queue; ``queue.bind`` needs it on
  the exchange). Publishing to the default exchange is a write on ``amq.default``, and
  it reaches any queue by name: only the services get it.
* topic permissions restrict, per topic exchange, the routing keys a user may publish
  with (write) and the binding keys it may bind with (read, also for exchange-to-exchange
  bindings). A user with no topic permission on an exchange is not restricted there, so
  integration users always get one.

Users are created through the management HTTP API (``RABBITMQ_MANAGEMENT_URL``, works
from anywhere, e.g. the Kubernetes setup Job) or, where that is not reachable and the
broker runs on this machine, with ``rabbitmqctl``: :class:`BrokerAdmin`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from contracts.events import EXCHANGE, INTEGRATION_EXCHANGE
from kit.config import ConfigError, Settings, amqp_vhost, amqp_with_user
from kit.messaging import REPLAY_EXCHANGE

RPC_EXCHANGE = "nameko-rpc"
NOTHING = "^$"  # matches no name: RabbitMQ's way to grant nothing


class BrokerAdminError(RuntimeError):
    """The broker refused or could not be reached; the message says what to check."""


@dataclass(frozen=True)
class Grant:
    configure: str
    write: str
    read: str
    topics: dict[str, tuple[str, str]]  # topic exchange -> (write regex, read regex)


def _names(*names: str) -> str:
    return "|".join(re.escape(n) for n in names)


def services_grant() -> Grant:
    """What nameko and the kit need: the RPC exchange, RPC and reply queues
    (``rpc-<service>``, ``rpc.reply-<service>-<id>``), every ``portico.*`` exchange and
    queue (events, integration, replay, service queues, retry tiers, dead letters), and
    the default exchange (retry and dead-letter parking). Never integration queues."""
    own = rf"^({_names(RPC_EXCHANGE)}|rpc-.+|rpc\.reply-.+|portico\..+)$"
    write = rf"^({_names(RPC_EXCHANGE)}|rpc-.+|rpc\.reply-.+|portico\..+|amq\.default)$"
    return Grant(configure=own, write=write, read=own, topics={})


def operator_grant() -> Grant:
    """Dead letters: get and requeue them, replay them through the replay exchange,
    which routes only to the services' event queues. Nothing can be declared, and the
    RPC, event and default exchanges are out of reach."""
    return Grant(
        configure=NOTHING,
        write=rf"^{re.escape(REPLAY_EXCHANGE)}$",
        read=r"^portico\.[a-z0-9_]+\.dead$",
        topics=_closed_topics(),
    )


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def integration_queue_prefix(tenant_id: str, name: str) -> str:
    return f"integration.{tenant_id}.{name}."


def integration_grant(tenant_id: str, name: str) -> Grant:
    """Its own queues only (declare, bind, consume), bound to the integration exchange
    with binding keys of its own tenant: ``<tenant_id>.<event type>``. Its write
    permission covers only its own queue names (``queue.bind`` needs it), so it can
    publish nowhere that anyone else reads."""
    own = re.escape(integration_queue_prefix(tenant_id, name))
    return Grant(
        configure=f"^{own}",
        write=f"^{own}",
        read=rf"^({own}.*|{re.escape(INTEGRATION_EXCHANGE)})$",
        topics={
            **_closed_topics(),
            INTEGRATION_EXCHANGE: (NOTHING, rf"^{re.escape(str(tenant_id))}\."),
        },
    )


def _closed_topics() -> dict[str, tuple[str, str]]:
    """An explicit nothing on Portico's topic exchanges: without any topic permission a
    user is not restricted by routing key at all (the vhost permissions still apply)."""
    return {x: (NOTHING, NOTHING) for x in (EXCHANGE, INTEGRATION_EXCHANGE)}


class BrokerAdmin:
    """Users and permissions of one RabbitMQ server, through the management HTTP API or
    ``rabbitmqctl``. Every call is idempotent."""

    def __init__(self, http_url: str | None = None, timeout: float = 10.0) -> None:
        self.http_url = http_url.rstrip("/") if http_url else None
        self.timeout = timeout

    @classmethod
    def for_settings(cls, settings: Settings) -> BrokerAdmin:
        """HTTP when ``RABBITMQ_MANAGEMENT_URL`` (else the admin URI's host on 15672,
        with its credentials) answers; else ``rabbitmqctl`` if the broker is local."""
        admin_uri = settings.admin_amqp_uri()
        parts = urlsplit(admin_uri)
        url = settings.rabbitmq_management_url
        if url is None:
            netloc = f"{parts.hostname or '127.0.0.1'}:15672"
            if parts.username:
                netloc = f"{parts.username}:{parts.password or ''}@{netloc}"
            url = urlunsplit(("http", netloc, "", "", ""))
        if _reachable(url, 15672):
            return cls(url)
        local = (parts.hostname or "127.0.0.1") in {"127.0.0.1", "localhost", "::1"}
        if local and shutil.which("rabbitmqctl"):
            return cls(None)
        raise BrokerAdminError(
            f"cannot manage RabbitMQ users: the management API ({_safe(url)}) is not "
            "reachable and rabbitmqctl is not usable here. Enable the management plugin "
            "(`rabbitmq-plugins enable rabbitmq_management`) and set RABBITMQ_MANAGEMENT_URL."
        )

    # ------------------------------------------------------------------ users ---

    def ensure_user(self, user: str, password: str) -> None:
        if self.http_url:
            self._http("PUT", f"/api/users/{_q(user)}", {"password": password, "tags": ""})
            return
        done = self._ctl("add_user", user, password, check=False)
        if done.returncode != 0:
            if "already exists" not in (done.stderr + done.stdout):
                raise BrokerAdminError(f"rabbitmqctl add_user {user}: {done.stderr.strip()}")
            self._ctl("change_password", user, password)

    def delete_user(self, user: str) -> None:
        if self.http_url:
            self._http("DELETE", f"/api/users/{_q(user)}", ok_missing=True)
            return
        self._ctl("delete_user", user, check=False)

    def users(self) -> list[str]:
        if self.http_url:
            return [u["name"] for u in self._http("GET", "/api/users")]
        return [row[0] for row in self._ctl_rows("list_users")]

    def grant(self, vhost: str, user: str, grant: Grant) -> None:
        """Set the user's vhost permissions and exactly these topic permissions."""
        if self.http_url:
            self._http(
                "PUT",
                f"/api/permissions/{_q(vhost)}/{_q(user)}",
                {"configure": grant.configure, "write": grant.write, "read": grant.read},
            )
            for exchange, (write, read) in grant.topics.items():
                self._http(
                    "PUT",
                    f"/api/topic-permissions/{_q(vhost)}/{_q(user)}",
                    {"exchange": exchange, "write": write, "read": read},
                )
            return
        self._ctl("set_permissions", "-p", vhost, user, grant.configure, grant.write, grant.read)
        for exchange, (write, read) in grant.topics.items():
            self._ctl("set_topic_permissions", "-p", vhost, user, exchange, write, read)

    def permissions(self, vhost: str) -> dict[str, dict[str, str]]:
        """user -> {configure, write, read} on the vhost."""
        if self.http_url:
            rows = self._http("GET", f"/api/vhosts/{_q(vhost)}/permissions")
            return {r["user"]: {k: r[k] for k in ("configure", "write", "read")} for r in rows}
        return {
            r[0]: {"configure": r[1], "write": r[2], "read": r[3]}
            for r in self._ctl_rows("list_permissions", "-p", vhost)
        }

    def topic_permissions(self, vhost: str) -> dict[str, dict[str, tuple[str, str]]]:
        """user -> {exchange: (write, read)} on the vhost."""
        out: dict[str, dict[str, tuple[str, str]]] = {}
        if self.http_url:
            for r in self._http("GET", f"/api/vhosts/{_q(vhost)}/topic-permissions"):
                out.setdefault(r["user"], {})[r["exchange"]] = (r["write"], r["read"])
            return out
        for r in self._ctl_rows("list_topic_permissions", "-p", vhost):
            out.setdefault(r[0], {})[r[1]] = (r[2], r[3])
        return out

    # -------------------------------------------------------------- backends ---

    def _http(self, method: str, path: str, body: Any = None, *, ok_missing: bool = False) -> Any:
        import requests

        assert self.http_url is not None
        parts = urlsplit(self.http_url)
        netloc = parts.netloc.rpartition("@")[2]  # credentials go in the auth header
        url = urlunsplit((parts.scheme, netloc, parts.path + path, "", ""))
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        try:
            r = requests.request(method, url, json=body, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise BrokerAdminError(f"RabbitMQ management API unreachable: {exc}") from exc
        if r.status_code == 404 and ok_missing:
            return None
        if r.status_code in (401, 403):
            raise BrokerAdminError(
                "RabbitMQ management API refused the admin credentials "
                f"({r.status_code}): check RABBITMQ_MANAGEMENT_URL / AMQP_ADMIN_URI"
            )
        if r.status_code >= 400:
            raise BrokerAdminError(f"RabbitMQ {method} {path}: {r.status_code} {r.text[:200]}")
        return r.json() if r.content else None

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerAdminError(f"rabbitmqctl {args[0]} failed: {exc}") from exc
        if check and done.returncode != 0:
            raise BrokerAdminError(f"rabbitmqctl {args[0]}: {done.stderr.strip()}")
        return done

    def _ctl_rows(self, *args: str) -> list[list[str]]:
        done = self._ctl(*args, "--formatter", "json")
        rows = json.loads(done.stdout or "[]")
        keys = {
            "list_users": ("user",),
            "list_permissions": ("user", "configure", "write", "read"),
            "list_topic_permissions": ("user", "exchange", "write", "read"),
        }[args[0]]
        return [[str(row.get(k, "")) for k in keys] for row in rows]


def _q(value: str) -> str:
    return quote(value, safe="")


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2
        ):
            return True
    except OSError:
        return False


# ------------------------------------------------------------- the accounts ---


def provision(settings: Settings, admin: BrokerAdmin | None = None) -> list[str]:
    """Create (or update) the services and operator accounts on the admin URI's vhost."""
    admin = admin or BrokerAdmin.for_settings(settings)
    vhost = amqp_vhost(settings.admin_amqp_uri())
    grants = {"services": services_grant(), "operator": operator_grant()}
    users = []
    for role, grant in grants.items():
        user = settings.broker_user(role)
        admin.ensure_user(user, settings.broker_password(role))
        admin.grant(vhost, user, grant)
        users.append(user)
    return users


@dataclass(frozen=True)
class Integration:
    user: str
    tenant_id: str
    name: str
    password: str | None = None  # only when just issued

    def as_dict(self, settings: Settings) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": self.user,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "exchange": INTEGRATION_EXCHANGE,
            "binding_key": f"{self.tenant_id}.#",
            "queue_prefix": integration_queue_prefix(self.tenant_id, self.name),
        }
        if self.password is not None:
            out["password"] = self.password
            out["amqp_uri"] = amqp_with_user(settings.amqp_uri, self.user, self.password)
        return out


def integration_user(settings: Settings, tenant_id: str, name: str) -> str:
    return settings.broker_user(f"integration.{tenant_id}.{name}")


def create_integration(
    settings: Settings, tenant_id: str, name: str, admin: BrokerAdmin | None = None
) -> Integration:
    """Issue (or, for an existing name, re-issue with a new password) an integration
    account that reads its tenant's events and nothing else."""
    if not NAME_RE.match(name):
        raise ConfigError("an integration name is 1-40 lowercase letters, digits and dashes")
    admin = admin or BrokerAdmin.for_settings(settings)
    vhost = amqp_vhost(settings.admin_amqp_uri())
    user = integration_user(settings, tenant_id, name)
    password = secrets.token_urlsafe(24)
    admin.ensure_user(user, password)
    admin.grant(vhost, user, integration_grant(tenant_id, name))
    return Integration(user, tenant_id, name, password)


def list_integrations(settings: Settings, admin: BrokerAdmin | None = None) -> list[Integration]:
    admin = admin or BrokerAdmin.for_settings(settings)
    vhost = amqp_vhost(settings.admin_amqp_uri())
    prefix = settings.broker_user("integration.")
    found = []
    for user in sorted(admin.permissions(vhost)):
        if user.startswith(prefix):
            tenant_id, _, name = user[len(prefix) :].partition(".")
            found.append(Integration(user, tenant_id, name))
    return found


def revoke_integration(
    settings: Settings, tenant_id: str, name: str, admin: BrokerAdmin | None = None
) -> bool:
    """Delete the account: RabbitMQ closes its open connections and refuses new ones. Its
    queues stay until an operator deletes them (they may hold events someone still wants)."""
    admin = admin or BrokerAdmin.for_settings(settings)
    user = integration_user(settings, tenant_id, name)
    if user not in admin.users():
        return False
    admin.delete_user(user)
    return True


def drop_users(settings: Settings, admin: BrokerAdmin | None = None) -> list[str]:
    """Delete every user with this installation's prefix (test runs clean up with it)."""
    admin = admin or BrokerAdmin.for_settings(settings)
    mine = [u for u in admin.users() if u.startswith(settings.amqp_user_prefix)]
    for user in mine:
        admin.delete_user(user)
    return mine
