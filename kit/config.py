"""Configuration from the environment, with safe local defaults.

Every process reads its settings once from ``os.environ`` through :func:`read_settings`. Local
development needs no variables at all; ``PORTICO_ENV=production`` turns every default
that is only safe on a laptop into a hard error naming the missing variable.

This module is the only reader of ``os.environ``. A service's own knobs, which the kit
does not name (``NOTIFY_SWEEP_SECONDS``, the gateway's login limits), are read through
:func:`env_text` / :func:`env_float` / :func:`env_int` when a module needs them before
any :class:`Settings` exists (a timer interval fixed at import), or parsed by the
service's domain from :attr:`Settings.raw`, which the service passes in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kit import registry

DEV_AMQP_ADMIN_URI = "amqp://guest:guest@127.0.0.1:5672/"
# Broker accounts `portico setup` creates (user <AMQP_USER_PREFIX><role>); integration
# accounts are issued one by one (`portico integration create`).
BROKER_ROLES = ("services", "operator")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    env: str
    amqp_uri: str  # the services' broker account
    amqp_admin_uri: str | None  # broker administrator: `portico setup` only
    amqp_user_prefix: str
    rabbitmq_management_url: str | None
    admin_database_url: str
    database_url: str | None
    rpc_timeout: float
    retry_delays_ms: tuple[int, ...]
    blob_dir: str
    mail_dir: str
    smtp_host: str
    smtp_port: int
    smtp_from: str
    smtp_username: str | None
    smtp_password: str | None
    smtp_starttls: bool
    sms_http_url: str | None
    sms_http_token: str | None
    sms_dir: str
    portal_base_url: str
    jwt_issuer: str
    jwt_audience: str
    log_level: str
    outbox_relay_interval: float
    # How long the gateway keeps the first answer to an Idempotency-Key.
    idempotency_ttl_hours: float = 24.0
    # Every variable as read_settings() read it: services parse their own settings from it (a
    # pure domain gets it passed in, it never imports this module).
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def production(self) -> bool:
        return self.env == "production"

    def service_database_url(self, service: str) -> str:
        """The URL a service connects with: its own role, which cannot bypass RLS.

        ``<SERVICE>_DATABASE_URL`` wins, then ``DATABASE_URL``; locally the admin URL
        with the user swapped for ``portico_<service>`` (trust auth on a dev box).
        """
        specific = self.raw.get(f"{service.upper()}_DATABASE_URL")
        if specific:
            return specific
        if self.database_url:
            return self.database_url
        if self.production:
            raise ConfigError(f"{service.upper()}_DATABASE_URL or DATABASE_URL is required")
        password = self.raw.get(f"{service.upper()}_DB_PASSWORD") or None
        return with_user(self.admin_database_url, f"portico_{service}", password)

    def worker_database_url(self, service: str) -> str | None:
        """The URL of the service's worker role (outbox relay, sweepers). None means the
        service's own URL with the user ``portico_<service>_worker`` and the same password
        (``portico setup`` gives both roles the same one unless told otherwise)."""
        specific = self.raw.get(f"{service.upper()}_WORKER_DATABASE_URL")
        if specific:
            return specific
        password = self.raw.get(f"{service.upper()}_WORKER_DB_PASSWORD") or None
        if password is None:
            return None
        return with_user(self.admin_database_url, f"portico_{service}_worker", password)

    def port(self, service: str) -> int:
        """``PORT``, else the service's default port from the registry."""
        return int(self.raw.get("PORT") or registry.get(service).port)

    def broker_user(self, role: str) -> str:
        """Broker user names are global to a RabbitMQ server (permissions are per vhost),
        hence the configurable prefix: two installations, or two test runs, never share one."""
        return f"{self.amqp_user_prefix}{role}"

    def broker_password(self, role: str) -> str:
        """``AMQP_<ROLE>_PASSWORD``; in development a password derived from the admin URI
        (stable across processes, so nothing has to be written down)."""
        return broker_password(self.raw, role, self.amqp_admin_uri)

    def admin_amqp_uri(self) -> str:
        if not self.amqp_admin_uri:
            raise ConfigError("AMQP_ADMIN_URI is required when PORTICO_ENV=production")
        return self.amqp_admin_uri

    def operator_amqp_uri(self) -> str:
        """What operator tools (``portico dead-letters``) connect as: ``AMQP_OPERATOR_URI``,
        else the services' host and vhost with the operator account."""
        explicit = self.raw.get("AMQP_OPERATOR_URI")
        if explicit:
            return explicit
        base = self.amqp_admin_uri or self.amqp_uri
        return amqp_with_user(base, self.broker_user("operator"), self.broker_password("operator"))


def with_user(url: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    auth = user if password is None else f"{user}:{password}"
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, ""))


def amqp_with_user(uri: str, user: str, password: str) -> str:
    """The same broker and vhost as ``uri``, logged in as ``user`` (both quoted)."""
    parts = urlsplit(uri)
    host = parts.hostname or "127.0.0.1"
    if parts.port:
        host = f"{host}:{parts.port}"
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path or "/", parts.query, ""))


def amqp_vhost(uri: str) -> str:
    """The vhost of an AMQP URI as kombu reads it: ``/`` when the path is empty."""
    path = urlsplit(uri).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def broker_password(env: Mapping[str, str], role: str, admin_uri: str | None) -> str:
    name = f"AMQP_{role.upper()}_PASSWORD"
    explicit = env.get(name)
    if explicit:
        return explicit
    if env.get("PORTICO_ENV", "development") == "production" or not admin_uri:
        raise ConfigError(f"{name} is required when PORTICO_ENV=production")
    # Development only: not a secret from anyone who knows the admin URI, which on a dev
    # box is guest/guest on loopback. Never used in production (above).
    digest = hmac.new(admin_uri.encode(), f"portico-dev:{role}".encode(), hashlib.sha256)
    return "dev-" + digest.hexdigest()[:24]


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def env_text(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """One variable of the process environment (or ``environ``), else ``default``.

    Read at each call, not cached: a switch such as ``PORTICO_ARGON2_FAST`` is read
    when it is used, so a test may flip it."""
    env = os.environ if environ is None else environ
    return env.get(name, default)


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """A number of the environment, else ``default``; malformed is a :class:`ConfigError`
    naming the variable."""
    env = os.environ if environ is None else environ
    if name not in env:
        return float(default)
    raw = env[name]
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A whole number of the environment, else ``default``; malformed is a
    :class:`ConfigError` naming the variable."""
    env = os.environ if environ is None else environ
    if name not in env:
        return int(default)
    raw = env[name]
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    mode = env.get("PORTICO_ENV", "development")
    production = mode == "production"

    def need(name: str, default: str) -> str:
        value = env.get(name)
        if value:
            return value
        if production:
            raise ConfigError(f"{name} is required when PORTICO_ENV=production")
        return default

    try:
        delays = tuple(
            int(x) for x in env.get("EVENT_RETRY_DELAYS_MS", "1000,5000,30000,120000").split(",")
        )
        rpc_timeout = float(env.get("RPC_TIMEOUT_SECONDS", "10"))
        smtp_port = int(env.get("SMTP_PORT", "1025"))
        relay_interval = float(env.get("OUTBOX_RELAY_INTERVAL", "1.0"))
        idempotency_ttl_hours = float(env.get("IDEMPOTENCY_TTL_HOURS", "24"))
        if not idempotency_ttl_hours > 0:  # also refuses nan
            raise ValueError("IDEMPOTENCY_TTL_HOURS must be a positive number of hours")
    except ValueError as exc:
        raise ConfigError(f"malformed numeric setting: {exc}") from exc

    # Services connect with their own broker account (AMQP_URI); only `portico setup`
    # holds the administrator's (AMQP_ADMIN_URI), which creates every account.
    prefix = env.get("AMQP_USER_PREFIX") or "portico-"
    amqp_admin_uri = env.get("AMQP_ADMIN_URI") or (None if production else DEV_AMQP_ADMIN_URI)
    # An operator's shell holds only AMQP_OPERATOR_URI: whatever it runs uses that account.
    amqp_uri = env.get("AMQP_URI") or env.get("AMQP_OPERATOR_URI")
    if not amqp_uri:
        if amqp_admin_uri is None:
            raise ConfigError("AMQP_URI is required when PORTICO_ENV=production")
        password = broker_password(env, "services", amqp_admin_uri)
        amqp_uri = amqp_with_user(amqp_admin_uri, f"{prefix}services", password)

    return Settings(
        env=mode,
        amqp_uri=amqp_uri,
        amqp_admin_uri=amqp_admin_uri,
        amqp_user_prefix=prefix,
        rabbitmq_management_url=env.get("RABBITMQ_MANAGEMENT_URL") or None,
        # The owner role is `portico setup`'s alone: in production only setup needs it
        # (checked there); services connect with DATABASE_URL.
        admin_database_url=env.get("ADMIN_DATABASE_URL")
        or ("" if production else "postgresql://postgres@127.0.0.1:5432/portico"),
        database_url=env.get("DATABASE_URL") or None,
        rpc_timeout=rpc_timeout,
        retry_delays_ms=delays,
        blob_dir=need("BLOB_DIR", "var/blobs"),
        mail_dir=env.get("MAIL_DIR", "var/mail"),
        smtp_host=need("SMTP_HOST", "127.0.0.1"),
        smtp_port=smtp_port,
        smtp_from=need("SMTP_FROM", "Portico <no-reply@portico.local>"),
        smtp_username=env.get("SMTP_USERNAME") or None,
        smtp_password=env.get("SMTP_PASSWORD") or None,
        smtp_starttls=_bool(env.get("SMTP_STARTTLS")),
        sms_http_url=env.get("SMS_HTTP_URL") or None,
        sms_http_token=env.get("SMS_HTTP_TOKEN") or None,
        sms_dir=env.get("SMS_DIR", "var/sms"),
        portal_base_url=need("PORTAL_BASE_URL", "http://127.0.0.1:8080"),
        jwt_issuer=env.get("JWT_ISSUER", "portico"),
        jwt_audience=env.get("JWT_AUDIENCE", "portico-api"),
        log_level=env.get("LOG_LEVEL", "INFO"),
        outbox_relay_interval=relay_interval,
        idempotency_ttl_hours=idempotency_ttl_hours,
        raw=env,
    )
