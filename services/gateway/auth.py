"""Authentication at the edge: login, rotating refresh tokens with reuse detection,
logout, rate limiting, and turning a bearer token into an :class:`Actor`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nameko.extensions import DependencyProvider
from sqlalchemy import select, text, update
from werkzeug.wrappers import Request

from kit.config import ConfigError, Settings, read_settings
from kit.context import Actor
from kit.db import utcnow
from services.gateway import domain, edgecache
from services.gateway.models import (
    AuthSession,
    PortalAccount,
    RefreshToken,
    StaffUser,
    Tenant,
)
from services.gateway.tokens import (
    KeyRing,
    TokenError,
    TokenService,
    hash_password,
    hash_refresh_token,
    needs_rehash,
    new_refresh_token,
    verify_password,
)
from services.gateway.web import ApiError

SESSION_DAYS = 30
PREVIEW_MINUTES = 15


def _unauthenticated(detail: str = "Sign in again.", code: str = "unauthenticated") -> ApiError:
    return ApiError(code, detail)


class AuthCore:
    """Everything about tokens and sessions, independent of nameko."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        keyring = KeyRing.from_env(settings.raw, production=settings.production)
        self.tokens = TokenService(
            keyring,
            settings.jwt_issuer,
            settings.jwt_audience,
            access_ttl=int(settings.raw.get("ACCESS_TOKEN_TTL", "900")),
        )
        self.limits = domain.RateLimits.from_env(settings.raw)
        try:
            self.trusted_proxy_hops = domain.trusted_proxy_hops(settings.raw)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    # --- bearer tokens -> actor -------------------------------------------------------
    def authenticate(self, request: Request, core: Any) -> tuple[Actor, dict[str, Any]]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("Send a bearer token in the Authorization header.")
        try:
            claims = self.tokens.verify(token.strip())
        except TokenError as exc:
            raise _unauthenticated(exc.detail, exc.code) from exc
        actor = domain.actor_from_claims(claims)
        if actor is None:
            raise _unauthenticated("The token does not describe a caller.")
        # Revocation: logout, refresh-token reuse or a disabled account end the session now
        # (on every replica: the cache is invalidated with the change, services.gateway.edgecache).
        session_id = str(claims["sid"])

        def load() -> tuple[str, Any] | None:
            rows = core.read(
                actor.tenant_id,
                AuthSession,
                select(AuthSession.subject_id, AuthSession.expires_at).where(
                    AuthSession.id == session_id,
                    AuthSession.revoked_at.is_(None),
                    AuthSession.expires_at > utcnow(),
                ),
            )
            return (str(rows[0][0]), rows[0][1]) if rows else None

        cache = edgecache.cache_for(core)
        alive = (
            cache.session_alive(actor.tenant_id, session_id, load)
            if cache is not None
            else load() is not None
        )
        if not alive:
            raise _unauthenticated("This session has ended.")
        return actor, claims

    def access_token(
        self, actor: Actor, session_id: str, extra: dict[str, Any] | None = None
    ) -> tuple[str, int]:
        return self.tokens.issue_access({**domain.claims_for(actor, session_id), **(extra or {})})

    # --- login ------------------------------------------------------------------------
    def login(
        self, core: Any, tenant_slug: str, email: str, password: str, client: str
    ) -> dict[str, Any]:
        email = domain.normalise_email(email)
        account_key = f"acct:{_digest(tenant_slug.lower() + '/' + email)}"
        address_key = f"addr:{_digest(client)}"
        # Each attempt is counted before the password is looked at, in one statement per
        # key: parallel guesses cannot all pass a check that none has counted yet.
        for key, limit in ((address_key, self.limits.address), (account_key, self.limits.account)):
            self.take_attempt(core, key, limit, "Too many sign-in attempts; wait and retry.")
        tenant_id, candidate = self._candidate(core, tenant_slug, email)
        # Exactly one argon2 verification on every path (unknown tenant or email, disabled
        # account, no password yet, wrong password): the answer time tells nothing.
        stored = candidate.password_hash if candidate is not None else None
        matched = verify_password(stored, password)
        if candidate is None or not matched or not candidate.may_sign_in:
            raise _unauthenticated("Wrong tenant, email or password.")
        assert tenant_id is not None  # noqa: S101 - a candidate has a tenant
        if needs_rehash(candidate.password_hash or ""):  # matched: never empty here
            self._rehash(core, tenant_id, candidate, password)
        # A signed-in person is not an attacker on this address or account: give the
        # address its attempt back and start the account's count afresh.
        self._refund(core, address_key)
        self._reset(core, account_key)
        return self.start_session(core, candidate.actor, "staff" if candidate.staff else "portal")

    def _candidate(
        self, core: Any, tenant_slug: str, email: str
    ) -> tuple[str | None, _Candidate | None]:
        """The tenant and the account the credentials name, read in short transactions
        (no connection is held while the password is verified)."""
        with core.unit_of_work(system=True) as uow:
            tenant_id = uow.session.execute(
                select(Tenant.id).where(Tenant.slug == tenant_slug.lower())
            ).scalar_one_or_none()
        if tenant_id is None:
            return None, None
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            subject = self._find_subject(uow.session, email)
            if subject is None:
                return tenant_id, None
            return tenant_id, _Candidate(
                model=type(subject),
                id=subject.id,
                password_hash=subject.password_hash,
                may_sign_in=domain.may_sign_in(subject),
                actor=domain.actor_for(subject, tenant_id),
                staff=isinstance(subject, StaffUser),
            )

    @staticmethod
    def _rehash(core: Any, tenant_id: str, candidate: _Candidate, password: str) -> None:
        new_hash = hash_password(password)  # outside the transaction: it takes a while
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            uow.session.execute(
                update(candidate.model)
                .where(
                    candidate.model.id == candidate.id,
                    candidate.model.password_hash == candidate.password_hash,
                )
                .values(password_hash=new_hash)
            )

    @staticmethod
    def _find_subject(session: Any, email: str) -> Any:
        staff = session.execute(
            select(StaffUser).where(StaffUser.email == email)
        ).scalar_one_or_none()
        if staff is not None:
            return staff
        return session.execute(
            select(PortalAccount).where(PortalAccount.email == email)
        ).scalar_one_or_none()

    def start_session(
        self,
        core: Any,
        actor: Actor,
        kind: str,
        lifetime: timedelta = timedelta(days=SESSION_DAYS),
        with_refresh: bool = True,
    ) -> dict[str, Any]:
        with core.unit_of_work(tenant_id=actor.tenant_id) as uow:
            session = AuthSession(
                subject_kind=kind, subject_id=actor.id, expires_at=utcnow() + lifetime
            )
            uow.session.add(session)
            uow.session.flush()
            refresh = (
                self._new_refresh(uow.session, session.id, actor.tenant_id)
                if with_refresh
                else None
            )
        token, expires_in = self.access_token(actor, session.id)
        out = {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        if refresh:
            out["refresh_token"] = refresh
        return out

    @staticmethod
    def _new_refresh(session: Any, session_id: str, tenant_id: str) -> str:
        secret, digest = new_refresh_token()
        session.add(RefreshToken(session_id=session_id, token_hash=digest))
        # The tenant travels in the opaque token so the lookup stays tenant-scoped (RLS).
        return f"{tenant_id}.{secret}"

    # --- refresh & logout ---------------------------------------------------------------
    def refresh(self, core: Any, presented: str) -> dict[str, Any]:
        tenant_id, _, secret = presented.partition(".")
        if not domain.is_uuid(tenant_id) or not secret:
            raise _unauthenticated("Unknown refresh token.")
        reused = False
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            row = uow.session.execute(
                select(RefreshToken)
                .where(RefreshToken.token_hash == hash_refresh_token(secret))
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise _unauthenticated("Unknown refresh token.")
            session = uow.session.get(AuthSession, row.session_id, with_for_update=True)
            if session is None or session.revoked_at is not None or session.expires_at <= utcnow():
                raise _unauthenticated("This session has ended.")
            if row.used_at is not None:
                # A refresh token is good once. Seeing it again means it was stolen:
                # end the whole family, the thief's and the owner's tokens alike.
                session.revoked_at = utcnow()
                session.revoked_reason = "refresh_reuse"
                reused = True
            else:
                row.used_at = utcnow()
                subject = _load_subject(uow.session, session.subject_kind, session.subject_id)
                if subject is None or not domain.may_sign_in(subject):
                    session.revoked_at = utcnow()
                    session.revoked_reason = "subject_disabled"
                    reused = True
                else:
                    actor = domain.actor_for(subject, tenant_id)
                    new_refresh = self._new_refresh(uow.session, session.id, tenant_id)
                    session_id = session.id
        if reused:
            raise _unauthenticated("This refresh token was already used; sign in again.")
        token, expires_in = self.access_token(actor, session_id)
        return {
            "access_token": token,
            "refresh_token": new_refresh,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }

    @staticmethod
    def end_refresh_session(core: Any, presented: str) -> None:
        """Log out with a refresh token alone (the access token may have expired): end
        the session it belongs to, its refresh family and its access tokens with it.

        Unknown, malformed, already used or ended: the same 401, nothing more revealed.
        A used token is treated as at /auth/refresh: it was stolen, end the family."""
        refused = _unauthenticated("Unknown refresh token.")
        tenant_id, _, secret = presented.partition(".")
        if not domain.is_uuid(tenant_id) or not secret:
            raise refused
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            row = uow.session.execute(
                select(RefreshToken)
                .where(RefreshToken.token_hash == hash_refresh_token(secret))
                .with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise refused
            session = uow.session.get(AuthSession, row.session_id, with_for_update=True)
            if session is None or session.revoked_at is not None or session.expires_at <= utcnow():
                raise refused
            reused = row.used_at is not None
            row.used_at = row.used_at or utcnow()
            session.revoked_at = utcnow()
            session.revoked_reason = "refresh_reuse" if reused else "logout"
        if reused:
            raise refused

    @staticmethod
    def revoke_session(core: Any, tenant_id: str, session_id: str, reason: str) -> None:
        with core.unit_of_work(tenant_id=tenant_id) as uow:
            uow.session.execute(
                update(AuthSession)
                .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoked_reason=reason)
            )

    @staticmethod
    def revoke_subject(
        session: Any, subject_id: str, reason: str, keep_session: str | None = None
    ) -> None:
        """Inside the caller's unit of work: end every session of a staff user or account
        (but ``keep_session``, the caller's own when they change their own access)."""
        stmt = update(AuthSession).where(
            AuthSession.subject_id == subject_id, AuthSession.revoked_at.is_(None)
        )
        if keep_session is not None:
            stmt = stmt.where(AuthSession.id != keep_session)
        session.execute(stmt.values(revoked_at=utcnow(), revoked_reason=reason))

    # --- rate limiting ------------------------------------------------------------------
    def take_attempt(
        self,
        core: Any,
        key: str,
        limit: int,
        detail: str = "Too many attempts; wait and retry.",
        window_seconds: int | None = None,
    ) -> None:
        """Count one attempt under ``key`` and refuse it (429 with ``Retry-After``) when it
        is over ``limit`` in the current window (``window_seconds``, by default the
        sign-in window ``LOGIN_LIMIT_WINDOW_SECONDS``). Give each use its own key prefix.

        Counting and checking are one statement (the row lock of ``on conflict do
        update`` orders parallel attempts), so N parallel attempts are counted 1..N and
        only the first ``limit`` go through. Call it before doing the guarded work.
        """
        window = window_seconds or self.limits.window_seconds
        with core.unit_of_work(system=True) as uow:
            row = uow.session.execute(
                text(
                    "insert into gateway.rate_limits as r (key, window_start, count)"
                    " values (:k, now(), 1) on conflict (key) do update set"
                    " count = case when r.window_start <= now() - make_interval(secs => :w)"
                    "   then 1 else r.count + 1 end,"
                    " window_start = case when r.window_start <= now() - make_interval(secs => :w)"
                    "   then now() else r.window_start end"
                    " returning count, window_start, now() as now"
                ),
                {"k": key, "w": window},
            ).one()
        # ``count`` includes this attempt: it may go ahead if the ones before it leave room.
        wait = domain.retry_after(row.window_start, row.count - 1, row.now, limit, window)
        if wait:
            raise ApiError("rate_limited", detail, headers={"Retry-After": str(wait)})

    @staticmethod
    def _refund(core: Any, key: str) -> None:
        with core.unit_of_work(system=True) as uow:
            uow.session.execute(
                text(
                    "update gateway.rate_limits set count = count - 1 where key = :k and count > 0"
                ),
                {"k": key},
            )

    @staticmethod
    def _reset(core: Any, key: str) -> None:
        with core.unit_of_work(system=True) as uow:
            uow.session.execute(text("delete from gateway.rate_limits where key = :k"), {"k": key})


@dataclass(frozen=True)
class _Candidate:
    """What login needs of the account the credentials name, read before verifying."""

    model: Any
    id: str
    password_hash: str | None
    may_sign_in: bool
    actor: Actor
    staff: bool


def _load_subject(session: Any, kind: str, subject_id: str) -> Any:
    model = StaffUser if kind == "staff" else PortalAccount
    return session.get(model, subject_id)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


class Authenticator(DependencyProvider):
    """Injects the process-wide :class:`AuthCore` (keys are loaded once), and runs the
    edge cache of the service's database (session liveness, feature switches) with its
    listener for invalidations (services.gateway.edgecache)."""

    def setup(self) -> None:
        settings = read_settings()
        self.core = AuthCore(settings)
        self.cache = edgecache.EdgeCache(ttl=float(settings.raw.get("EDGE_CACHE_SECONDS", "60")))
        self._db: Any = None
        edgecache.install_hooks()

    def start(self) -> None:
        from kit.providers import Database

        db = next((d for d in self.container.dependencies if isinstance(d, Database)), None)
        if db is None or db.core is None or self.cache.ttl <= 0:
            return
        self._db = db.core
        edgecache.register(db.core, self.cache)
        engine = db.core.engine

        def connect() -> Any:
            raw = engine.raw_connection()
            raw.detach()  # ours for good, never returned to the pool
            return raw.dbapi_connection

        self.container.spawn_managed_thread(lambda: self.cache.listen_forever(connect))

    def stop(self) -> None:
        self.cache.stop()
        if self._db is not None:
            edgecache.unregister(self._db)

    def get_dependency(self, worker_ctx: Any) -> _BoundAuth:
        return _BoundAuth(self.core)


class _BoundAuth:
    def __init__(self, core: AuthCore) -> None:
        self.core = core

    def authenticate(self, request: Request, db: Any) -> tuple[Actor, dict[str, Any]]:
        return self.core.authenticate(request, db.core)
