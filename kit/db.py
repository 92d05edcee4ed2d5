"""PostgreSQL access: engine, tenant scoping and the unit of work.

One mechanism scopes every query to a tenant: the session carries the tenant id,
``do_orm_execute`` adds ``tenant_id = :tenant`` to every ORM SELECT/UPDATE/DELETE on a
:class:`TenantScoped` entity, ``before_flush`` stamps new rows, and each transaction
sets ``portico.tenant_id`` so PostgreSQL row-level security refuses anything the ORM
scoping missed. Services connect as a role that owns nothing and cannot bypass RLS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    declared_attr,
    mapped_column,
    sessionmaker,
    with_loader_criteria,
)

from kit.context import Actor
from kit.ids import new_id  # noqa: F401 - re-exported for models

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_metadata(schema: str) -> MetaData:
    return MetaData(schema=schema, naming_convention=NAMING)


class TenantScoped:
    """Mixin for every business table: a non-null tenant id, scoped automatically."""

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:  # noqa: N805 - SQLAlchemy declared_attr
        return mapped_column(Uuid(as_uuid=False), nullable=False, index=True)


def infra_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and the processed-events ledger, in a service's own schema."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", Uuid(as_uuid=False), primary_key=True),
        Column("tenant_id", Uuid(as_uuid=False), nullable=False),
        Column("type", String(120), nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("published_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
    )
    # The relay only ever looks for unpublished rows: keep that lookup small.
    Index(
        "ix_outbox_unpublished",
        outbox.c.created_at,
        postgresql_where=outbox.c.published_at.is_(None),
    )
    processed = Table(
        "processed_events",
        metadata,
        Column("handler", String(120), primary_key=True),
        Column("event_id", Uuid(as_uuid=False), primary_key=True),
        Column("tenant_id", Uuid(as_uuid=False), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, default=utcnow),
    )
    return outbox, processed


class TenantScopeError(RuntimeError):
    """A query ran without a tenant: a bug, never a user error."""


def _scope_queries(state: ORMExecuteState) -> None:
    info = state.session.info
    if info.get("system") or not (state.is_select or state.is_update or state.is_delete):
        return
    tenant_id = info.get("tenant_id")
    if tenant_id is None:
        raise TenantScopeError("ORM statement outside a tenant unit of work")
    state.statement = state.statement.options(
        with_loader_criteria(
            TenantScoped,
            lambda cls: cls.tenant_id == tenant_id,
            include_aliases=True,
        )
    )


def _stamp_tenant(session: Session, _ctx: Any, _instances: Any) -> None:
    tenant_id = session.info.get("tenant_id")
    for obj in session.new:
        if not isinstance(obj, TenantScoped):
            continue
        if obj.tenant_id is None:
            if tenant_id is None:
                raise TenantScopeError("new row without a tenant")
            obj.tenant_id = tenant_id
        elif tenant_id is not None and str(obj.tenant_id) != str(tenant_id):
            raise TenantScopeError("row written into another tenant")


def sa_url(url: str) -> str:
    """Users write plain ``postgresql://`` URLs; the driver is psycopg2 (eventlet-green)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 10) -> Engine:
    try:  # under eventlet, let greenthreads run while PostgreSQL answers
        import eventlet.patcher

        if eventlet.patcher.is_monkey_patched("socket"):
            from eventlet.support.psycopg2_patcher import make_psycopg_green

            make_psycopg_green()
    except ImportError:  # pragma: no cover - eventlet is a dependency
        pass
    return create_engine(
        sa_url(url),
        pool_size=pool_size,
        max_overflow=max(2, pool_size // 4),
        # No pre-ping: it costs a round trip per unit of work. A connection that died
        # (database restart) fails one call, which becomes 503 (see ``unavailable``),
        # and SQLAlchemy invalidates the pool so the next call reconnects.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "portico"},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
    event.listen(factory, "do_orm_execute", _scope_queries)
    event.listen(factory, "before_flush", _stamp_tenant)
    return factory


class UnitOfWork:
    """One transaction: the state change and the events it causes commit together."""

    def __init__(
        self,
        session: Session,
        outbox: Table | None,
        processed: Table | None,
        actor: Actor | None,
        tenant_id: str | None,
        request_id: str | None,
        causation_id: str | None,
    ) -> None:
        self.session = session
        self.actor = actor
        self.tenant_id = tenant_id
        self.request_id = request_id
        self.causation_id = causation_id
        self._outbox = outbox
        self._processed = processed
        self.emitted: list[dict[str, Any]] = []

    def emit(self, event_type: str, data: dict[str, Any], version: int = 1) -> dict[str, Any]:
        """Record an event in the outbox, inside this transaction."""
        from contracts.events import make_envelope  # contracts validates the payload

        if self._outbox is None or self.tenant_id is None:
            raise TenantScopeError("emit needs a tenant unit of work on a service with an outbox")
        envelope = make_envelope(
            event_type,
            data,
            tenant_id=self.tenant_id,
            actor=self.actor.summary() if self.actor else {"kind": "system", "id": "system"},
            correlation_id=self.request_id,
            causation_id=self.causation_id or self.request_id,
            version=version,
        )
        self.session.execute(
            insert(self._outbox).values(
                id=envelope["id"],
                tenant_id=self.tenant_id,
                type=event_type,
                envelope=envelope,
                created_at=utcnow(),
                attempts=0,
            )
        )
        self.emitted.append(envelope)
        return envelope

    def claim_event(self, handler: str, event_id: str) -> bool:
        """Record that ``handler`` processed ``event_id``; False if it already had.

        Runs in the handler's own transaction, so the record and the effect commit
        (or roll back) together and a redelivered event changes nothing.
        """
        if self._processed is None or self.tenant_id is None:
            raise TenantScopeError("claim_event needs a tenant unit of work")
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        result = self.session.execute(
            pg_insert(self._processed)
            .values(handler=handler, event_id=event_id, tenant_id=self.tenant_id)
            .on_conflict_do_nothing()
            .returning(self._processed.c.event_id)
        )
        return result.first() is not None


# SQLSTATE classes and codes that mean "not now" rather than "not this": connection
# exceptions (08...), the server shutting down or starting (57P01 admin shutdown,
# 57P02 crash shutdown, 57P03 "the database system is starting up", 57P04 database
# dropped, 57P05 idle session timeout) and insufficient resources (53...: too many
# connections, out of memory, disk full).
_UNAVAILABLE_SQLSTATES = ("08", "57P0", "53")


def unavailable(exc: BaseException) -> bool:
    """True for errors that mean "the database is unreachable right now" (retry later):
    the one classifier behind every ``503 service_unavailable`` for the database, in
    the gateway and in the services, at connect as at execute.

    SQLAlchemy flags a dropped connection (``connection_invalidated``) only while
    executing; a failed *connect* arrives as a plain ``OperationalError``: refused,
    timed out, or refused by a server that is restarting. libpq's own failures carry
    no SQLSTATE; the server's do, and only the ones above mean "unavailable".
    """
    import psycopg2
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    original: BaseException | None = exc
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        original = exc.orig
    if not isinstance(original, psycopg2.Error):
        return False
    if original.pgcode:
        return original.pgcode.startswith(_UNAVAILABLE_SQLSTATES)
    # No SQLSTATE: the client library's own failure (could not connect, server closed
    # the connection, connection already closed), never a statement the server refused.
    return isinstance(original, psycopg2.OperationalError | psycopg2.InterfaceError)


def worker_url_for(url: str) -> str:
    """The URL of a service role's worker role (``portico_quotes`` -> ``portico_quotes_worker``),
    same host and password; ``<SERVICE>_WORKER_DATABASE_URL`` overrides it (kit.config)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(sa_url(url))
    return parsed.set(username=f"{parsed.username}_worker").render_as_string(hide_password=False)


class DatabaseCore:
    """Engine + session factory + outbox tables of one service (no nameko here).

    Cross-tenant work (the outbox relay, notify's sweeper) runs on a second, small pool
    connected as the service's worker role, opened on first use: see ``worker=True``.
    """

    def __init__(
        self, url: str, metadata: MetaData, pool_size: int = 10, worker_url: str | None = None
    ) -> None:
        self.engine = make_engine(url, pool_size=pool_size)
        self.sessions = make_sessionmaker(self.engine)
        self._worker_url = worker_url or worker_url_for(url)
        self._worker_engine: Engine | None = None
        self._worker_sessions: sessionmaker[Session] | None = None
        self.outbox = metadata.tables.get(f"{metadata.schema}.outbox")
        self.processed = metadata.tables.get(f"{metadata.schema}.processed_events")
        self.after_commit: list[Any] = []  # callables(list[envelope])

    @contextmanager
    def unit_of_work(
        self,
        actor: Actor | None = None,
        *,
        tenant_id: str | None = None,
        request_id: str | None = None,
        causation_id: str | None = None,
        system: bool = False,
        worker: bool = False,
    ) -> Iterator[UnitOfWork]:
        """One transaction scoped to a tenant.

        ``system=True``: no tenant (tables without tenant rows, such as the tenant list or
        the login rate limits); row-level security then shows no tenant's rows at all.
        ``worker=True``: the worker role, which sees every tenant's rows of the
        infrastructure tables granted to it (outbox, deliveries) and nothing else.
        """
        tenant = tenant_id or (actor.tenant_id if actor else None)
        if tenant is None and not (system or worker):
            raise TenantScopeError("a unit of work needs a tenant (or system=True)")
        session = self._worker_factory()() if worker else self.sessions()
        session.info["tenant_id"] = tenant
        session.info["system"] = system or worker
        uow = UnitOfWork(
            session, self.outbox, self.processed, actor, tenant, request_id, causation_id
        )
        try:
            with session.begin():
                # RLS backstop: policies compare rows with these settings.
                session.execute(
                    text("select set_config('portico.tenant_id', :t, true)"), {"t": tenant or ""}
                )
                yield uow
        finally:
            session.close()
        if uow.emitted:
            for hook in self.after_commit:
                hook(uow.emitted)

    def read(self, tenant_id: str, model: type[TenantScoped], stmt: Any) -> list[Any]:
        """One SELECT on a plain connection, for per-request hot paths.

        Skips the ORM session, which cost about half of the gateway's CPU per request.
        The tenant filter is added here, as the ORM scoping does, and RLS checks it again.
        """
        stmt = stmt.where(model.tenant_id == tenant_id)  # type: ignore[attr-defined]
        with self.engine.connect() as conn:
            conn.execute(text("select set_config('portico.tenant_id', :t, true)"), {"t": tenant_id})
            rows = list(conn.execute(stmt).all())
            conn.commit()
        return rows

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("select 1"))
            return True
        except Exception:  # noqa: BLE001 - readiness reports, never raises
            return False

    def _worker_factory(self) -> sessionmaker[Session]:
        if self._worker_sessions is None:
            self._worker_engine = make_engine(self._worker_url, pool_size=2)
            self._worker_sessions = make_sessionmaker(self._worker_engine)
        return self._worker_sessions

    def dispose(self) -> None:
        self.engine.dispose()
        if self._worker_engine is not None:
            self._worker_engine.dispose()
