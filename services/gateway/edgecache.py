"""The per-request lookups of the edge, cached in the process and invalidated across
replicas by PostgreSQL ``LISTEN``/``NOTIFY``.

Every authenticated request asked PostgreSQL whether its session was still alive, and
every feature-gated one read the caller's feature switches. Both change rarely and must
change at once: logout, a revoked session, a password change or a disabled account end
a session now, and a switched-off feature is refused now, on every gateway replica.

How it stays correct:

- **The notification is part of the change.** Whatever writes a session, an account, a
  customer or the tenant's settings through the ORM (attribute changes, and bulk
  ``update``/``delete`` statements) sends ``pg_notify`` in the same transaction
  (:func:`install_hooks`). PostgreSQL delivers it only if the transaction commits, and
  delivers it at commit, to every replica's listener.
- **No cache without a listener.** The cache answers only while its listening
  connection is up; when that connection breaks (PostgreSQL restarting), it empties
  and every lookup reads the database until the listener is back and listening again.
- **No stale refill.** An invalidation that arrives while a request reads the database
  bumps the epoch; the request's answer is then not stored.
- **The very next request.** The replica that made the change applies it to its own
  cache right after the commit. Before answering from the cache, a request drains the
  notifications already waiting on the listening socket (one non-blocking read), so it
  does not depend on when the listener's green thread is scheduled. What remains on
  another replica is PostgreSQL's own delivery of the notification to its listening
  connection (normally well under a millisecond after the commit; more if PostgreSQL is
  starved of CPU).
- A time limit (``EDGE_CACHE_SECONDS``, 60 s) bounds what a change made outside the
  application (hand-written SQL) could leave behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import eventlet
import eventlet.hubs
from prometheus_client import Counter
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from kit.db import utcnow

log = logging.getLogger(__name__)

CHANNEL = "portico_gateway_edge"
LOOKUPS = Counter(
    "portico_edge_cache_lookups_total",
    "Per-request lookups of the gateway (session, features), answered from the cache or not",
    ["lookup", "result"],
)
INVALIDATIONS = Counter(
    "portico_edge_cache_invalidations_total", "Invalidations received by this process", ["kind"]
)
MAX_ENTRIES = 100_000
KEEPALIVE_SECONDS = 20.0
RECONNECT_SECONDS = 1.0


_KINDS = ("session", "subject", "sessions", "features")


class _Idle(Exception):
    """The listening socket stayed quiet for a keep-alive interval."""


class EdgeCache:
    """Sessions known alive and feature switches, per process."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        # session id -> (tenant id, subject id, expires_at, cached at)
        self._sessions: dict[str, tuple[str, str, datetime, float]] = {}
        # (tenant id, customer id) -> (tenant features, customer features, cached at)
        self._switches: dict[tuple[str, str | None], tuple[Any, Any, float]] = {}
        self.epoch = 0
        self.live = False
        self._conn: Any = None
        self._busy = False  # the listener is using the connection (keep-alive query)
        self._stopped = False

    # --- lookups ------------------------------------------------------------------------
    def session_alive(
        self,
        tenant_id: str,
        session_id: str,
        load: Callable[[], tuple[str, datetime] | None],
    ) -> bool:
        """Whether the session is neither revoked nor expired; ``load`` reads it from the
        database as ``(subject_id, expires_at)`` (``None``: ended or unknown)."""
        self.sync()
        if self.live:
            hit = self._sessions.get(session_id)
            if (
                hit is not None
                and hit[0] == tenant_id
                and hit[2] > utcnow()
                and time.monotonic() - hit[3] < self.ttl
            ):
                LOOKUPS.labels("session", "hit").inc()
                return True
        LOOKUPS.labels("session", "miss").inc()
        epoch = self.epoch
        row = load()
        if row is None:
            return False
        if self.live and epoch == self.epoch:
            self._make_room(self._sessions)
            self._sessions[session_id] = (tenant_id, row[0], row[1], time.monotonic())
        return True

    def switches(
        self,
        tenant_id: str,
        customer_id: str | None,
        load: Callable[[], tuple[Any, Any]],
    ) -> tuple[Any, Any]:
        """The tenant's ``features`` and the customer's ``portal_features``."""
        self.sync()
        key = (tenant_id, customer_id)
        if self.live:
            hit = self._switches.get(key)
            if hit is not None and time.monotonic() - hit[2] < self.ttl:
                LOOKUPS.labels("features", "hit").inc()
                return hit[0], hit[1]
        LOOKUPS.labels("features", "miss").inc()
        epoch = self.epoch
        tenant_features, customer_features = load()
        if self.live and epoch == self.epoch:
            self._make_room(self._switches)
            self._switches[key] = (tenant_features, customer_features, time.monotonic())
        return tenant_features, customer_features

    @staticmethod
    def _make_room(entries: dict[Any, Any]) -> None:
        if len(entries) >= MAX_ENTRIES:
            entries.clear()

    # --- invalidation ---------------------------------------------------------------------
    def invalidate(self, payload: str) -> None:
        """``session:<id>``, ``subject:<id>``, ``sessions:<tenant>``,
        ``features:<tenant>``, or ``*`` for everything."""
        self.epoch += 1
        kind, _, key = payload.partition(":")
        INVALIDATIONS.labels(kind if kind in _KINDS else "*").inc()
        if kind == "session":
            self._sessions.pop(key, None)
        elif kind == "subject":
            for sid in [s for s, v in self._sessions.items() if v[1] == key]:
                self._sessions.pop(sid, None)
        elif kind == "sessions":
            for sid in [s for s, v in self._sessions.items() if v[0] == key]:
                self._sessions.pop(sid, None)
        elif kind == "features":
            for k in [k for k in self._switches if k[0] == key]:
                self._switches.pop(k, None)
        else:
            self.clear()

    def clear(self) -> None:
        self.epoch += 1
        self._sessions.clear()
        self._switches.clear()

    def sync(self) -> None:
        """Apply the notifications already on the listening socket (no waiting)."""
        conn = self._conn
        if conn is None or self._busy:
            return
        try:
            conn.poll()
        except Exception as exc:  # noqa: BLE001 - the listener reconnects; serve from the db
            self._go_dark(f"listening connection failed: {exc}")
            return
        self._drain(conn)

    def _drain(self, conn: Any) -> None:
        while conn.notifies:
            self.invalidate(conn.notifies.pop(0).payload)

    def _go_dark(self, why: str) -> None:
        """Stop answering from memory; the listener closes its connection and
        reconnects (a request that finds it broken only lets go of it)."""
        if self.live:
            log.warning("edge cache off until its listener reconnects: %s", why)
        self.live = False
        self._conn = None
        self.clear()

    # --- the listener (one green thread per process) ----------------------------------------
    def listen_forever(self, connect: Callable[[], Any]) -> None:
        """Keep a connection listening on :data:`CHANNEL`; the cache is live only while it
        does. ``connect`` returns a new DBAPI (psycopg2) connection."""
        while not self._stopped:
            conn = None
            try:
                conn = connect()
                conn.rollback()  # whatever the pool's connect hooks began
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                # Whatever changed while nobody listened is unknown: start empty.
                self.clear()
                self._conn = conn
                self.live = True
                log.info("edge cache listening on %s", CHANNEL)
                self._listen(conn)
            except Exception as exc:  # noqa: BLE001 - database down: retry
                self._go_dark(str(exc))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):  # already broken
                        conn.close()
            if not self._stopped:
                eventlet.sleep(RECONNECT_SECONDS)

    def _listen(self, conn: Any) -> None:
        while not self._stopped:
            try:
                eventlet.hubs.trampoline(
                    conn.fileno(), read=True, timeout=KEEPALIVE_SECONDS, timeout_exc=_Idle
                )
            except _Idle:
                self._busy = True
                try:
                    with conn.cursor() as cur:  # is the connection still there?
                        cur.execute("select 1")
                finally:
                    self._busy = False
            if self._conn is not conn:  # a request found it broken meanwhile
                raise ConnectionError("listening connection closed")
            conn.poll()
            self._drain(conn)

    def stop(self) -> None:
        self._stopped = True
        self._go_dark("stopping")


# --- one cache per database (the gateway's) ------------------------------------------------
_caches: weakref.WeakKeyDictionary[Any, EdgeCache] = weakref.WeakKeyDictionary()


def register(core: Any, cache: EdgeCache) -> None:
    _caches[core] = cache


def unregister(core: Any) -> None:
    _caches.pop(core, None)


def cache_for(core: Any) -> EdgeCache | None:
    """The cache of this database core, if its process runs one (not in unit tests)."""
    try:
        return _caches.get(core)
    except TypeError:  # a test double that cannot be weakly referenced
        return None


# --- notifications sent with the change ------------------------------------------------------
def notify(session_or_conn: Any, payload: str) -> None:
    """Queue an invalidation in the caller's transaction (sent only if it commits)."""
    session_or_conn.execute(text("select pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})


def _watched() -> dict[type, str]:
    from services.gateway.models import (
        AuthSession,
        Customer,
        PortalAccount,
        StaffUser,
        TenantSettings,
    )

    return {
        AuthSession: "session",
        StaffUser: "subject",
        PortalAccount: "subject",
        Customer: "features",
        TenantSettings: "features",
    }


def _payloads_for_flush(session: Session) -> set[str]:
    watched = _watched()
    out = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        kind = watched.get(type(obj))
        if kind == "session":
            out.add(f"session:{obj.id}")
        elif kind == "subject":
            out.add(f"subject:{obj.id}")
        elif kind == "features":
            out.add(f"features:{obj.tenant_id or session.info.get('tenant_id')}")
    return out


def _send(session: Session, payloads: set[str]) -> None:
    conn = session.connection()
    for payload in sorted(payloads):
        notify(conn, payload)
    # This replica applies them itself right after the commit: its own next request
    # must not depend on when PostgreSQL delivers the notification back to it.
    session.info.setdefault("edge_invalidations", set()).update(payloads)


def _after_flush(session: Session, flush_context: Any) -> None:
    payloads = _payloads_for_flush(session)
    if payloads:
        _send(session, payloads)


def _after_commit(session: Session) -> None:
    payloads = session.info.pop("edge_invalidations", None)
    if payloads:
        for cache in list(_caches.values()):
            for payload in payloads:
                cache.invalidate(payload)


def _after_rollback(session: Session) -> None:
    session.info.pop("edge_invalidations", None)


def _bulk(state: Any) -> None:
    """``update(AuthSession)...``, ``delete(Customer)...`` and the like: the rows are not
    known, so everything of the kind in the tenant is invalidated."""
    if not (state.is_update or state.is_delete) or state.bind_mapper is None:
        return
    kind = _watched().get(state.bind_mapper.class_)
    if kind is None:
        return
    tenant = state.session.info.get("tenant_id")
    if tenant is None:
        payload = "*"
    elif kind == "features":
        payload = f"features:{tenant}"
    else:
        payload = f"sessions:{tenant}"
    _send(state.session, {payload})


_installed = False


def install_hooks() -> None:
    """Send the invalidations with every change of a watched table (idempotent)."""
    global _installed
    if _installed:
        return
    # after_flush still sees the flushed objects in new / dirty / deleted.
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_rollback", _after_rollback)
    event.listen(Session, "do_orm_execute", _bulk)
    _installed = True
