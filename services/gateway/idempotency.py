"""Idempotency keys at the edge (API.md): a write with an outside effect sent again with
the same ``Idempotency-Key`` gets the first answer back instead of running again.

A key belongs to (tenant, caller, route, key) and remembers a fingerprint of the request
it was first used with (method, path, query, canonical body, uploaded file bytes):

- first use: the key is claimed (``insert .. on conflict do nothing``) before the
  handler runs, and its answer is stored when it ends;
- same key, same request, done: the stored answer is replayed, marked
  ``Idempotent-Replayed: true``;
- same key, another request: ``409 idempotency_key_reused``;
- same key while the first is still running: wait (bounded) for its answer; after
  the wait, ``409 conflict`` with ``Retry-After``.

Answers below 500 are kept and replayed, refusals (4xx) included: the same request
would be refused the same way, and a client that fixes its request sends a new key.
5xx answers and ``429 rate_limited`` are transient: the claim is released so that a
retry runs. A gateway that dies mid-request leaves a claim that lapses after a lease.
Requests refused before the handler (authentication, the body's schema, the key's
format) claim nothing: they had no effect to repeat.
Answers are kept ``IDEMPOTENCY_TTL_HOURS`` (24 h by default).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from werkzeug.wrappers import Request, Response

from kit.db import DatabaseCore, utcnow
from services.gateway.discussion import upload_form
from services.gateway.domain import client_address
from services.gateway.models import IdempotencyKey
from services.gateway.web import ApiError, Call, Route, error_response

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# 1-255 visible ASCII characters (RFC 8941 strings are printable ASCII; no spaces).
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# Public routes have no tenant yet: their keys live under this one.
PUBLIC_TENANT = "00000000-0000-0000-0000-000000000000"
# What a replay needs of the first answer besides its status and body.
KEPT_HEADERS = ("Content-Type", "Location", "ETag", "Content-Disposition")
POLL_SECONDS = (0.02, 0.05, 0.1, 0.2)  # then 0.2 s until the wait ends


# --- pure rules -------------------------------------------------------------------------


def parse_key(value: str | None) -> str | None:
    """The header's key, ``None`` when it is absent; 422 when it is not a key."""
    if value is None:
        return None
    if not KEY_PATTERN.fullmatch(value):
        raise ApiError(
            "validation_failed",
            f"{HEADER} must be 1 to 255 visible ASCII characters.",
            {HEADER: ["1 to 255 visible ASCII characters (no spaces)"]},
        )
    return value


def canonical_body(raw: bytes) -> bytes:
    """A JSON body written one way: key order and whitespace do not change the
    fingerprint. Bodies that are not JSON are taken byte for byte."""
    if not raw:
        return b""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    body: bytes,
    parts: Iterable[tuple[str, str, bytes]] = (),
) -> str:
    """sha256 of what makes two requests the same request: method, path, query pairs
    in order of name, the canonical body and each form part (name, file name, bytes)."""
    digest = hashlib.sha256()

    def add(value: bytes) -> None:  # length-prefixed: no two inputs read alike
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)

    add(method.upper().encode())
    add(path.encode())
    for name, value in sorted(query):
        add(name.encode())
        add(value.encode())
    add(canonical_body(body))
    for name, filename, data in sorted(parts):
        add(name.encode())
        add(filename.encode())
        add(hashlib.sha256(data).digest())
    return digest.hexdigest()


def kept(status: int) -> bool:
    """Whether an answer is stored for replay (else the claim is released)."""
    return status < 500 and status != 429


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    caller: str
    route: str
    key: str


def scope_of(call: Call, route: Route, key: str) -> Scope:
    actor = call.actor
    if actor is not None:
        return Scope(actor.tenant_id, f"{actor.kind}:{actor.id}", route.endpoint, key)
    # Nobody signed in (a password-reset request): callers are told apart by address
    # (the client's, behind trusted proxies, as the rate limits see it).
    forwarded = call.request.headers.getlist("X-Forwarded-For")
    peer = client_address(call.request.remote_addr, forwarded, call.gw.auth.core.trusted_proxy_hops)
    address = hashlib.sha256(peer.encode()).hexdigest()[:32]
    return Scope(PUBLIC_TENANT, f"anonymous:{address}", route.endpoint, key)


# --- the store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    request_hash: str
    state: str
    status: int | None
    headers: dict[str, str] | None
    body: bytes | None


class Store:
    """The ``idempotency_keys`` table of one tenant's scope."""

    def __init__(self, core: DatabaseCore, ttl: timedelta, lease: timedelta) -> None:
        self.core = core
        self.ttl = ttl
        self.lease = lease

    def _this(self, scope: Scope) -> Any:
        return and_(
            IdempotencyKey.tenant_id == scope.tenant_id,
            IdempotencyKey.caller == scope.caller,
            IdempotencyKey.route == scope.route,
            IdempotencyKey.key == scope.key,
        )

    def claim(self, scope: Scope, request_hash: str) -> datetime | Stored | None:
        """The claim's time when this request may run; else the row that holds the key
        (``None``: it went away meanwhile, try again)."""
        now = utcnow()
        claimed = {
            "request_hash": request_hash,
            "state": "in_progress",
            "status": None,
            "headers": None,
            "body": None,
            "created_at": now,
            "lease_until": now + self.lease,
            "expires_at": now + self.ttl,
        }
        lapsed = or_(
            and_(IdempotencyKey.state == "done", IdempotencyKey.expires_at < now),
            and_(IdempotencyKey.state == "in_progress", IdempotencyKey.lease_until < now),
        )
        with self.core.unit_of_work(tenant_id=scope.tenant_id) as uow:
            row = {
                "tenant_id": scope.tenant_id,
                "caller": scope.caller,
                "route": scope.route,
                "key": scope.key,
                **claimed,
            }
            inserted = uow.session.execute(
                insert(IdempotencyKey)
                .values(**row)
                .on_conflict_do_nothing()
                .returning(IdempotencyKey.key)
            ).scalar()
            if inserted is not None:
                # Keys are dropped as new ones arrive: a tenant keeps only live answers.
                uow.session.execute(
                    delete(IdempotencyKey)
                    .where(lapsed)
                    .execution_options(synchronize_session=False)
                )
                return now
            # An expired answer or an abandoned claim is taken over.
            taken = uow.session.execute(
                update(IdempotencyKey)
                .where(self._this(scope), lapsed)
                .values(**claimed)
                .returning(IdempotencyKey.key)
                .execution_options(synchronize_session=False)
            ).scalar()
            if taken is not None:
                return now
            found = uow.session.execute(
                select(
                    IdempotencyKey.request_hash,
                    IdempotencyKey.state,
                    IdempotencyKey.status,
                    IdempotencyKey.headers,
                    IdempotencyKey.body,
                ).where(self._this(scope))
            ).first()
        return Stored(*found) if found is not None else None

    def finish(self, scope: Scope, claimed_at: datetime, response: Response) -> None:
        headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        with self.core.unit_of_work(tenant_id=scope.tenant_id) as uow:
            uow.session.execute(
                update(IdempotencyKey)
                .where(self._this(scope), IdempotencyKey.created_at == claimed_at)
                .values(
                    state="done",
                    status=response.status_code,
                    headers=headers,
                    body=response.get_data(),
                    expires_at=utcnow() + self.ttl,
                )
            )

    def release(self, scope: Scope, claimed_at: datetime) -> None:
        with self.core.unit_of_work(tenant_id=scope.tenant_id) as uow:
            uow.session.execute(
                delete(IdempotencyKey).where(
                    self._this(scope), IdempotencyKey.created_at == claimed_at
                )
            )


def replay(stored: Stored) -> Response:
    response = Response(stored.body or b"", status=stored.status or 200)
    for name, value in (stored.headers or {}).items():
        response.headers[name] = value
    response.headers[REPLAYED_HEADER] = "true"
    return response


def request_fingerprint(request: Request, route: Route) -> str:
    parts: list[tuple[str, str, bytes]] = []
    body = b""
    if route.multipart:
        files, form = upload_form(request)
        for name, storage in files.items(multi=True):
            data = storage.stream.read()
            storage.stream.seek(0)  # the handler reads the same bytes
            parts.append((name, storage.filename or "", data))
        parts.extend((name, "", value.encode()) for name, value in form.items(multi=True))
    else:
        body = request.get_data(cache=True)  # read (and size-checked) by the dispatcher
    query = list(request.args.items(multi=True))
    return fingerprint(request.method, request.path, query, body, parts)


def run(gw: Any, route: Route, call: Call, respond: Callable[[], Response]) -> Response:
    """Answer ``call`` through its key: run ``respond`` once, replay it after."""
    request = call.request
    key = parse_key(request.headers.get(HEADER))
    if key is None:
        if route.idempotency == "required":
            raise ApiError(
                "validation_failed",
                f"This operation needs an {HEADER} header.",
                {HEADER: ["required"]},
            )
        return respond()
    scope = scope_of(call, route, key)
    request_hash = request_fingerprint(request, route)
    settings = gw.auth.core.settings
    store = Store(
        gw.db.core,
        ttl=timedelta(hours=settings.idempotency_ttl_hours),
        # A claim outlives any answer a live gateway can still give (a few RPCs).
        lease=timedelta(seconds=3 * settings.rpc_timeout),
    )
    deadline = time.monotonic() + settings.rpc_timeout + 2
    polls = 0
    while True:
        held = store.claim(scope, request_hash)
        if isinstance(held, datetime):
            break
        if held is not None:
            if held.request_hash != request_hash:
                raise ApiError(
                    "idempotency_key_reused",
                    f"This {HEADER} was used with another request.",
                )
            if held.state == "done":
                return replay(held)
            if time.monotonic() >= deadline:
                raise ApiError(
                    "conflict",
                    f"A request with this {HEADER} is still running; retry shortly.",
                    headers={"Retry-After": "1"},
                )
            time.sleep(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)])
            polls += 1
    claimed_at = held
    try:
        response = respond()
    except Exception as exc:  # noqa: BLE001 - the same one error table, answer kept below
        response = error_response(exc)
    if kept(response.status_code):
        store.finish(scope, claimed_at, response)
    else:
        store.release(scope, claimed_at)
    return response
