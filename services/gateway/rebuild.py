"""Rebuilding the read views from their owners' snapshots.

``portico views rebuild [VIEW] [--tenant SLUG]`` re-reads views on demand (after a
restore, or to prove a view equal to its owner); a gateway also catches up by itself,
at start, every (tenant, view) never built: a new gateway database beside services
that already hold data, or a view added by a later release. A tenant created by
``portico tenant create`` starts empty, so its views are marked built at once.

The owners are asked as the tenant's ``system`` actor over RPC (nameko's standalone
proxy with the services' broker account); pages are applied under the views' version
rule while events keep flowing (:func:`services.gateway.views.rebuild`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

import kit.rpcerrors  # noqa: F401 - DomainError crosses RPC as itself
from kit.config import Settings, read_settings
from kit.context import ACTOR_KEY, system_actor
from kit.db import DatabaseCore
from services.gateway import views
from services.gateway.models import Tenant, ViewBuild, metadata

log = logging.getLogger(__name__)


def fetcher(settings: Settings, tenant_id: str) -> views.SnapshotCall:
    """Calls an owner's snapshot method as ``tenant_id``'s system actor."""
    context = {ACTOR_KEY: system_actor(tenant_id).to_json()}
    config = {"AMQP_URI": settings.amqp_uri, "serializer": "json"}

    def fetch(service: str, method: str, query: dict[str, Any]) -> Any:
        with ClusterRpcProxy(config, timeout=settings.rpc_timeout, context_data=context) as rpc:
            return getattr(getattr(rpc, service), method)(query)

    return fetch


def tenant_ids(core: DatabaseCore, slug: str | None = None) -> list[str]:
    with core.unit_of_work(system=True) as uow:
        stmt = select(Tenant.id).order_by(Tenant.slug)
        if slug is not None:
            stmt = stmt.where(Tenant.slug == slug)
        return [str(t) for t in uow.session.scalars(stmt)]


def rebuild_views(
    settings: Settings, names: Iterable[str] | None = None, slug: str | None = None
) -> dict[str, int]:
    """Rebuild ``names`` (every view when None) of one tenant or all; rows per view."""
    names = list(names) if names else list(views.SNAPSHOTS)
    unknown = sorted(set(names) - set(views.SNAPSHOTS))
    if unknown:
        raise SystemExit(f"portico: no such view: {', '.join(unknown)} (see views.SNAPSHOTS)")
    core = DatabaseCore(settings.service_database_url("gateway"), metadata, pool_size=1)
    counts = dict.fromkeys(names, 0)
    try:
        tenants = tenant_ids(core, slug)
        if slug is not None and not tenants:
            raise SystemExit(f"portico: no tenant {slug!r}")
        for tenant_id in tenants:
            fetch = fetcher(settings, tenant_id)
            for name in names:
                counts[name] += views.rebuild(core, tenant_id, name, fetch)
    finally:
        core.dispose()
    return counts


def mark_built(core: DatabaseCore, tenant_id: str) -> None:
    """A new tenant has nothing to rebuild: every view of it is built (empty)."""
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        for name in views.SNAPSHOTS:
            stmt = pg_insert(ViewBuild).values(
                view=name, tenant_id=tenant_id, built_at=datetime.now(UTC), rows=0
            )
            uow.session.execute(stmt.on_conflict_do_nothing())


class ViewCatchUp(DependencyProvider):
    """At gateway start, rebuild in the background every (tenant, view) never built,
    retrying (with back-off) until the owners answer. Competing gateways may both do
    it: the version rule makes a second rebuild harmless."""

    def setup(self) -> None:
        self.settings = read_settings()

    def start(self) -> None:
        self.container.spawn_managed_thread(self._run)

    def _run(self) -> None:
        (db,) = [d for d in self.container.dependencies if d.attr_name == "db"]
        delay = 1.0
        while True:
            core = db.core
            try:
                pending = views.unbuilt(core, tenant_ids(core))
                for tenant_id, name in pending:
                    rows = views.rebuild(core, tenant_id, name, fetcher(self.settings, tenant_id))
                    log.info("caught up view %s of tenant %s (%d rows)", name, tenant_id, rows)
                return
            except Exception as exc:  # noqa: BLE001 - retried: owners may not be up yet
                log.warning("views catch-up will retry in %.0f s: %s", delay, exc)
                eventlet.sleep(delay)
                delay = min(delay * 2, 60.0)
