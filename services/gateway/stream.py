"""Live updates at the edge: the stream log, its live fan-out to every gateway replica,
and the Server-Sent Events a connected client reads (``GET /events/stream``).

How an event reaches a screen:

1. **Written once.** Every gateway replica consumes the durable queue
   ``portico.gateway.events`` (:mod:`services.gateway.events`: ``kit.handlers`` +
   ``kit.messaging``; bound in ``contracts.catalogue.SUBSCRIPTIONS``), so the replicas
   share the work and each event is appended to ``gateway.stream_events`` exactly once
   (:func:`to_stream`, with the ledger in the same transaction). Its stream id is the tenant's next number from ``stream_heads``,
   whose row stays locked until the commit: a tenant's events commit in id order.
2. **Fanned out to every replica** by PostgreSQL: the same transaction runs
   ``pg_notify('portico_stream', '<tenant> <id>')``, and each replica LISTENs on a
   connection of its own (:class:`Hub`), then reads the tenant's new rows from the log.
   Why not an exclusive auto-delete queue per replica: a broker copy and the log could
   disagree (an event shown live that is not resumable, or a live copy without its
   stream id); NOTIFY is delivered only if, and only after, the row commits, so what
   is shown live is exactly what Last-Event-ID can resume, and a replica that lost its
   LISTEN connection catches up from the log, by id, when it is back.
3. **Filtered per client** with the kit's one access rule: ``Scope.of(actor).matches``
   over the record fields the event carries (:func:`visible`); private events never
   appear, portal callers get no field only staff see (:data:`STAFF_ONLY_FIELDS`).

A stream holds neither a nameko worker nor a database connection while idle: the route
handler authenticates and returns a werkzeug ``Response`` whose body is a generator;
the generator waits on an eventlet queue and takes a pooled connection only for a
resume, a heartbeat's session check, or the hub's read of new rows (once per tenant
and notification, shared by all its subscribers).

Settings (``kit.config.env_float``/``env_int``, read when first needed):
``STREAM_HEARTBEAT_SECONDS`` (15: ``: keep-alive`` and the session check),
``STREAM_RETENTION_HOURS`` (24: how long Last-Event-ID resumes without loss),
``STREAM_TICKET_SECONDS`` (60), ``STREAM_PRUNE_SECONDS`` (300: expired rows are deleted
in batches, one replica at a time), ``STREAM_CLIENT_BUFFER`` (1000 events waiting for a
slow client; beyond it the stream is closed and the client resumes from the log).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import eventlet
import eventlet.queue
from eventlet.hubs import trampoline
from sqlalchemy import Table, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts.events import PRIVATE_EVENTS
from kit.access import Fields, Scope
from kit.config import env_float, env_int
from kit.context import Actor
from kit.db import DatabaseCore, UnitOfWork, utcnow
from services.gateway import domain, edgecache
from services.gateway import events as gateway_events
from services.gateway.models import Tenant
from services.gateway.stream_models import StreamEvent, StreamHead, StreamTicket
from services.gateway.web import ApiError

log = logging.getLogger(__name__)

CHANNEL = "portico_stream"
KEEP_ALIVE = b": keep-alive\n\n"
# The prune lock: one replica at a time deletes expired rows (any constant of our own).
PRUNE_LOCK = 0x706F7274_73747265


def heartbeat_seconds() -> float:
    return env_float("STREAM_HEARTBEAT_SECONDS", 15.0)


def retention() -> timedelta:
    return timedelta(hours=env_float("STREAM_RETENTION_HOURS", 24.0))


def ticket_seconds() -> int:
    return env_int("STREAM_TICKET_SECONDS", 60)


# --- who sees what ----------------------------------------------------------------------

# Where each event type's data keeps the record fields the access rule reads. A type
# not named here is about the tenant's directory (customers, units, staff, accounts,
# settings): staff only. ``quote_request.*`` data carry the request's full state.
QUOTE_FIELDS = Fields()  # customer_id, unit_id, visible_to_customer, created_by, work_order_id
SCOPED_PREFIXES: dict[str, Fields] = {"quote_request.": QUOTE_FIELDS}

# Fields of an event's data that only staff see: a portal caller (or token holder) gets
# the event without them. The rule is that the stream shows a customer no more than the
# portal's reads do: those show the request in full (assignee included) and a comment
# with its author's id, but never which staff member decided, cancelled, uploaded or
# deleted something, so ``author_id`` goes from those events (a new request's is its
# ``created_by``, a new comment's is shown with it). ``author_kind`` and ``author_name`` stay (the feed and emails name who).
STAFF_ONLY_FIELDS: dict[str, frozenset[str]] = dict.fromkeys(
    (
        "quote_request.approved",
        "quote_request.denied",
        "quote_request.cancelled",
        "quote_request.comment_deleted",
        "quote_request.attachment_added",
    ),
    frozenset({"author_id"}),
)


def fields_for(event_type: str) -> Fields | None:
    """The scope fields of the record an event type is about; None: staff only."""
    for prefix, fields in SCOPED_PREFIXES.items():
        if event_type.startswith(prefix):
            return fields
    return None


class _Record:
    """An event's data read as a record: the tenant from the envelope, the rest from
    the data (a missing field reads as None, which never widens the rule)."""

    def __init__(self, tenant_id: str, data: Mapping[str, Any]) -> None:
        self._tenant_id = tenant_id
        self._data = data

    def __getattr__(self, name: str) -> Any:
        if name == "tenant_id":
            return self._tenant_id
        return self._data.get(name)


def visible(scope: Scope, tenant_id: str, event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether a caller of ``scope`` may see this event: never a private one, never
    another tenant's; staff every other event of their tenant; anyone else only events
    about a record the one access rule lets them see."""
    if event_type in PRIVATE_EVENTS or scope.nothing or str(tenant_id) != scope.tenant_id:
        return False
    if scope.everything:
        return True
    fields = fields_for(event_type)
    return fields is not None and scope.matches(_Record(str(tenant_id), data), fields)


def shown(scope: Scope, event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The data as this caller gets it (staff-only fields dropped for everyone else)."""
    if scope.everything:
        return dict(data)
    hidden = STAFF_ONLY_FIELDS.get(event_type, frozenset())
    return {k: v for k, v in data.items() if k not in hidden}


# --- SSE framing ------------------------------------------------------------------------


def frame(seq: int, event_type: str, payload: Mapping[str, Any]) -> bytes:
    """One SSE message. Compact JSON with non-ASCII escaped has no CR or LF, so the data
    is always one ``data:`` line; the event type is a dotted name."""
    if any(c in event_type for c in "\r\n"):
        raise ValueError("an event type is one line")
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return f"id: {int(seq)}\nevent: {event_type}\ndata: {data}\n\n".encode("ascii")


def control(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """A message of the stream itself (no id: the client's Last-Event-ID stays)."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    return f"event: {event_type}\ndata: {data}\n\n".encode("ascii")


def message(scope: Scope, row: Row) -> bytes | None:
    """The frame of ``row`` for this caller, or None when it may not see it."""
    if not visible(scope, row.tenant_id, row.type, row.data):
        return None
    payload = {
        "id": row.event_id,
        "type": row.type,
        "occurred_at": row.occurred_at,
        "data": shown(scope, row.type, row.data),
    }
    return frame(row.seq, row.type, payload)


@dataclass(frozen=True)
class Row:
    tenant_id: str
    seq: int
    event_id: str
    type: str
    occurred_at: str
    data: dict[str, Any]


HEADS = cast(Table, StreamHead.__table__)
EVENTS = cast(Table, StreamEvent.__table__)
TICKETS = cast(Table, StreamTicket.__table__)


def _row(r: Any) -> Row:
    return Row(str(r.tenant_id), int(r.seq), str(r.event_id), r.type, r.occurred_at, r.data)


# --- writing the log (competing consumers of portico.gateway.events) -------------------


def append(uow: UnitOfWork, event: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    """Append one event to its tenant's stream inside ``uow`` and notify every replica
    when it commits. Returns its stream id."""
    tenant_id = str(event["tenant_id"])
    head = HEADS
    seq = uow.session.execute(
        pg_insert(head)
        .values(tenant_id=tenant_id, last_seq=1)
        .on_conflict_do_update(
            index_elements=[head.c.tenant_id], set_={"last_seq": head.c.last_seq + 1}
        )
        .returning(head.c.last_seq)
    ).scalar_one()
    uow.session.execute(
        pg_insert(EVENTS).values(
            tenant_id=tenant_id,
            seq=seq,
            event_id=str(event["id"]),
            type=event["type"],
            occurred_at=str(event["occurred_at"]),
            data=dict(data),
            created_at=utcnow(),
        )
    )
    # Delivered to the listeners only if, and when, this transaction commits.
    uow.session.execute(
        text("select pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": f"{tenant_id} {seq}"},
    )
    return int(seq)


_pruned_at: dict[str, float] = {}


def prune_tenant(uow: UnitOfWork, tenant_id: str, batch: int = 1000) -> int:
    """Delete up to ``batch`` of the tenant's rows older than the retention window (one
    range of the ``(tenant_id, created_at)`` index), at most once per
    ``STREAM_PRUNE_SECONDS`` per tenant and process: retention costs the writer next to
    nothing and needs no cross-tenant role. The hub's timer sweeps quiet tenants."""
    now = time.monotonic()
    if now - _pruned_at.get(tenant_id, 0.0) < env_float("STREAM_PRUNE_SECONDS", 300.0):
        return 0
    _pruned_at[tenant_id] = now
    events_t = EVENTS
    expired = (
        select(events_t.c.seq)
        .where(events_t.c.tenant_id == tenant_id, events_t.c.created_at < utcnow() - retention())
        .limit(batch)
        .scalar_subquery()
    )
    result = uow.session.execute(
        delete(events_t).where(events_t.c.tenant_id == tenant_id, events_t.c.seq.in_(expired))
    )
    return int(getattr(result, "rowcount", 0) or 0)  # a CursorResult's


@gateway_events.also
def to_stream(uow: UnitOfWork, event: dict[str, Any], data: dict[str, Any]) -> None:
    """The stream's part of the gateway's one event handler (services.gateway.events):
    in the event's unit of work, under its exactly-once ledger, after the views."""
    if event["type"] in PRIVATE_EVENTS:  # bound ("#") but never written
        return
    append(uow, event, data)
    prune_tenant(uow, str(event["tenant_id"]))


# --- tickets ------------------------------------------------------------------------------


def _ticket_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_ticket(core: DatabaseCore, actor: Actor, claims: Mapping[str, Any]) -> dict[str, Any]:
    """A single-use ticket for ``GET /events/stream?ticket=`` standing for this caller's
    session; only its hash is kept. The tenant travels in it (the lookup is tenant-scoped)."""
    secret = secrets.token_urlsafe(32)
    lifetime = ticket_seconds()
    kept = {k: v for k, v in claims.items() if k not in ("exp", "iat", "nbf", "jti")}
    with core.unit_of_work(tenant_id=actor.tenant_id) as uow:
        uow.session.add(
            StreamTicket(
                token_hash=_ticket_hash(secret),
                session_id=str(claims["sid"]),
                claims=kept,
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(seconds=lifetime),
            )
        )
    return {"ticket": f"{actor.tenant_id}.{secret}", "expires_in": lifetime}


def redeem_ticket(core: DatabaseCore, ticket: str) -> tuple[Actor, dict[str, Any]]:
    """The caller a ticket stands for, once: used, unknown, malformed or expired are
    the same 401."""
    refused = ApiError("unauthenticated", "Unknown, used or expired stream ticket.")
    tenant_id, _, secret = ticket.partition(".")
    if not domain.is_uuid(tenant_id) or not secret:
        raise refused
    table = TICKETS
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        claims = uow.session.execute(
            update(table)
            .where(
                table.c.token_hash == _ticket_hash(secret),
                table.c.used_at.is_(None),
                table.c.expires_at > func.now(),
            )
            .values(used_at=func.now())
            .returning(table.c.claims)
        ).scalar_one_or_none()
    if not isinstance(claims, dict):
        raise refused
    actor = domain.actor_from_claims(claims)
    if actor is None or actor.tenant_id != tenant_id:
        raise refused
    return actor, claims


# --- the session behind a stream ----------------------------------------------------------


def session_alive(auth: Any, core: DatabaseCore, actor: Actor, session_id: str) -> bool:
    """Whether the session a stream was opened with still stands (not logged out,
    revoked, expired, its account not disabled).

    auth.py's public check is ``AuthCore.authenticate(request, core)``; a stream has no
    request after the first, so it presents a token for the same caller and session,
    issued in memory by auth's own ``access_token`` (it never leaves this function).
    Whatever auth checks, and however it caches it (with its cross-replica
    invalidation), applies to streams as to any request.
    """
    token, _ = auth.access_token(actor, session_id)
    request = Request(EnvironBuilder(headers=[("Authorization", f"Bearer {token}")]).get_environ())
    try:
        auth.authenticate(request, core)
    except ApiError:
        return False
    return True


# --- the replica's hub: LISTEN, read new rows, hand them to this replica's streams --------


RECHECK = "recheck"  # queued to a stream: check the session now


@dataclass(eq=False)
class Subscription:
    tenant_id: str
    subject_id: str
    session_id: str = ""
    queue: eventlet.queue.LightQueue = field(default_factory=eventlet.queue.LightQueue)
    closed: str | None = None  # why, once closed

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self.queue.put(None)


# What ends a subject's streams at once, on every replica (they all read the log): the
# account disabled or deleted, the staff user deactivated. (A logout has no event: the
# stream's next heartbeat finds the session ended.)
def ends_subject(row: Row) -> str | None:
    if row.type == "directory.portal_account.deleted":
        return str(row.data.get("id"))
    if row.type == "directory.portal_account.updated" and row.data.get("enabled") is False:
        return str(row.data.get("id"))
    if row.type == "directory.staff_user.updated" and row.data.get("active") is False:
        return str(row.data.get("id"))
    return None


class Hub:
    """One per process: the LISTEN connection, each tenant's subscribers and the last
    stream id read for it, and the pruning of expired rows."""

    def __init__(self) -> None:
        self.core: DatabaseCore | None = None
        self.subscribers: dict[str, set[Subscription]] = {}
        self.last: dict[str, int] = {}
        self.pending: set[str] = set()
        self.fetching: set[str] = set()
        self.listening = False
        self._threads: list[Any] = []

    # -- lifecycle --

    def ensure_running(self, core: DatabaseCore) -> None:
        if self.core is not None:
            return
        self.core = core
        self._threads = [eventlet.spawn(self._listen_forever), eventlet.spawn(self._prune_forever)]

    def _dsn(self) -> str:
        assert self.core is not None
        url = self.core.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _listen_forever(self) -> None:
        import psycopg2
        import psycopg2.extensions

        while True:
            conn = None
            try:
                conn = psycopg2.connect(self._dsn(), application_name="portico-stream")
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                    # auth's invalidations (logout, revocation, disabling): the streams
                    # they may concern check their session at once, not at the heartbeat
                    cur.execute(f"LISTEN {edgecache.CHANNEL}")
                self.listening = True
                # Anything committed while not listening is in the log: read it.
                for tenant_id in list(self.subscribers):
                    self._wake(tenant_id)
                while True:
                    trampoline(conn.fileno(), read=True)
                    conn.poll()
                    while conn.notifies:
                        note = conn.notifies.pop(0)
                        if note.channel == CHANNEL:
                            tenant_id, _, _seq = note.payload.partition(" ")
                            if tenant_id in self.subscribers:
                                self._wake(tenant_id)
                        else:
                            self.recheck(note.payload)
            except Exception as exc:  # noqa: BLE001 - database gone: reconnect, catch up
                log.warning("stream listener lost its connection: %s", exc)
            finally:
                self.listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):  # already broken
                        conn.close()
            eventlet.sleep(1.0)

    # -- subscribers --

    def subscribe(
        self, core: DatabaseCore, tenant_id: str, subject_id: str, session_id: str = ""
    ) -> Subscription:
        self.ensure_running(core)
        sub = Subscription(tenant_id=tenant_id, subject_id=subject_id, session_id=session_id)
        if tenant_id not in self.subscribers:
            self.subscribers[tenant_id] = set()
            # Read from here on; a subscriber's own resume covers anything before.
            self.last[tenant_id] = head_seq(core, tenant_id)
        self.subscribers[tenant_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self.subscribers.get(sub.tenant_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.subscribers[sub.tenant_id]
            self.last.pop(sub.tenant_id, None)

    def recheck(self, payload: str) -> None:
        """An edge-cache invalidation (``session:<id>``, ``subject:<id>``,
        ``sessions:<tenant>``, ``*``; others concern no session): the streams it may
        concern check their session now."""
        kind, _, key = payload.partition(":")
        for tenant_id, subs in list(self.subscribers.items()):
            for sub in list(subs):
                if (
                    payload == "*"
                    or (kind == "session" and sub.session_id == key)
                    or (kind == "subject" and sub.subject_id == key)
                    or (kind == "sessions" and tenant_id == key)
                ):
                    sub.queue.put(RECHECK)

    def close_subject(self, tenant_id: str, subject_id: str, reason: str) -> None:
        for sub in list(self.subscribers.get(tenant_id, ())):
            if sub.subject_id == subject_id:
                sub.close(reason)

    # -- reading the log --

    def _wake(self, tenant_id: str) -> None:
        self.pending.add(tenant_id)
        if tenant_id not in self.fetching:
            self.fetching.add(tenant_id)
            eventlet.spawn(self._fetch, tenant_id)

    def _fetch(self, tenant_id: str) -> None:
        """Read the tenant's rows after the last one read, until none is new (one read
        per burst of notifications, shared by every subscriber of the tenant)."""
        assert self.core is not None
        try:
            while tenant_id in self.pending:
                self.pending.discard(tenant_id)
                while tenant_id in self.last:
                    rows = read_after(self.core, tenant_id, self.last[tenant_id], 500)
                    if not rows or tenant_id not in self.last:
                        break
                    self.last[tenant_id] = rows[-1].seq
                    self._dispatch(tenant_id, rows)
                    if len(rows) < 500:
                        break
        except Exception as exc:  # noqa: BLE001 - the next notification retries
            log.warning("stream read for tenant %s failed: %s", tenant_id, exc)
        finally:
            self.fetching.discard(tenant_id)

    def _dispatch(self, tenant_id: str, rows: list[Row]) -> None:
        limit = env_int("STREAM_CLIENT_BUFFER", 1000)
        for row in rows:
            ended = ends_subject(row)
            for sub in list(self.subscribers.get(tenant_id, ())):
                if sub.closed is not None:
                    continue
                if sub.queue.qsize() >= limit:
                    sub.close("too_slow")  # it resumes from the log with Last-Event-ID
                    continue
                sub.queue.put(row)
                if ended is not None and sub.subject_id == ended:
                    sub.close("account_disabled")

    # -- retention --

    def _prune_forever(self) -> None:
        while True:
            eventlet.sleep(env_float("STREAM_PRUNE_SECONDS", 300.0))
            try:
                assert self.core is not None
                prune(self.core)
            except Exception as exc:  # noqa: BLE001 - next round
                log.warning("stream pruning failed: %s", exc)


HUB = Hub()


def head_seq(core: DatabaseCore, tenant_id: str) -> int:
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        value = uow.session.execute(
            select(StreamHead.last_seq).where(StreamHead.tenant_id == tenant_id)
        ).scalar_one_or_none()
    return int(value or 0)


def read_after(core: DatabaseCore, tenant_id: str, after: int, limit: int) -> list[Row]:
    t = EVENTS
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        rows = uow.session.execute(
            select(t)
            .where(t.c.tenant_id == tenant_id, t.c.seq > after)
            .order_by(t.c.seq)
            .limit(limit)
        ).all()
    return [_row(r) for r in rows]


def resumable(core: DatabaseCore, tenant_id: str, seq: int) -> bool:
    """Whether the log still holds ``seq`` of this tenant (every id a client was given is
    one of its tenant's rows): then everything after it is still there too."""
    if seq == 0:
        return True
    t = EVENTS
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        found = uow.session.execute(
            select(t.c.seq).where(t.c.tenant_id == tenant_id, t.c.seq == seq)
        ).first()
    return found is not None


def prune(core: DatabaseCore, batch: int = 5000) -> int:
    """Delete rows older than the retention window and spent tickets, tenant by tenant
    (row-level security: each in its own tenant's unit of work), in batches over the
    ``(tenant_id, created_at)`` index; one replica at a time (an advisory lock)."""
    removed = 0
    with core.unit_of_work(system=True) as uow:
        got = uow.session.execute(text("select pg_try_advisory_lock(:k)"), {"k": PRUNE_LOCK})
        if not got.scalar():
            return 0
        try:
            tenants = [str(t) for t in uow.session.execute(select(Tenant.id)).scalars()]
            cutoff = utcnow() - retention()
            events, tickets = EVENTS, TICKETS
            for tenant_id in tenants:
                while True:
                    with core.unit_of_work(tenant_id=tenant_id) as tuow:
                        expired = (
                            select(events.c.seq)
                            .where(events.c.tenant_id == tenant_id, events.c.created_at < cutoff)
                            .limit(batch)
                            .scalar_subquery()
                        )
                        done = tuow.session.execute(
                            delete(events).where(
                                events.c.tenant_id == tenant_id, events.c.seq.in_(expired)
                            )
                        )
                        n = int(getattr(done, "rowcount", 0) or 0)
                        tuow.session.execute(
                            delete(tickets).where(
                                tickets.c.tenant_id == tenant_id,
                                tickets.c.expires_at < func.now() - timedelta(hours=1),
                            )
                        )
                    removed += n
                    if n < batch:
                        break
                    eventlet.sleep(0)
        finally:
            uow.session.execute(text("select pg_advisory_unlock(:k)"), {"k": PRUNE_LOCK})
    return removed


# --- one client's stream ------------------------------------------------------------------


@dataclass
class Opened:
    """Who a stream is for, and where it starts."""

    actor: Actor
    session_id: str
    last_event_id: int | None


def events(core: DatabaseCore, auth: Any, opened: Opened) -> Iterator[bytes]:
    """The body of one stream: a resume from the log if asked, then live events as they
    are read, with a heartbeat (and a session check) every ``STREAM_HEARTBEAT_SECONDS``."""
    actor, scope = opened.actor, Scope.of(opened.actor)
    tenant_id = actor.tenant_id
    # First: nothing committed from now on can be missed.
    sub = HUB.subscribe(core, tenant_id, actor.id, opened.session_id)
    try:
        yield b"retry: 2000\n\n"
        cursor = head_seq(core, tenant_id)
        after = opened.last_event_id
        if after is not None and after < cursor:
            if not resumable(core, tenant_id, after):
                # Older than the retention window (or never ours): say so, go on live.
                yield control("stream.reset", {"reason": "last_event_id_expired"})
            else:
                while True:
                    missed = read_after(core, tenant_id, after, 500)
                    for old in missed:
                        out = message(scope, old)
                        if out is not None:
                            yield out
                    if missed:
                        after = missed[-1].seq
                    if len(missed) < 500:
                        break
                cursor = max(cursor, after)
        beat = heartbeat_seconds()
        next_beat = time.monotonic() + beat
        while True:
            wait = next_beat - time.monotonic()
            row: Row | str | None = None
            if wait > 0:
                with contextlib.suppress(eventlet.queue.Empty):
                    row = sub.queue.get(timeout=wait)
                if row is None and sub.closed is not None:
                    yield control("stream.closed", {"reason": sub.closed})
                    return
            if row is None or row == RECHECK:  # a heartbeat, or auth's invalidation
                if not session_alive(auth, core, actor, opened.session_id):
                    yield control("stream.closed", {"reason": "session_ended"})
                    return
                if row is None:
                    yield KEEP_ALIVE
                    next_beat = time.monotonic() + beat
                continue
            assert isinstance(row, Row)
            if row.seq <= cursor:
                continue  # already sent by the resume
            cursor = row.seq
            out = message(scope, row)
            if out is not None:
                yield out
    finally:
        HUB.unsubscribe(sub)
