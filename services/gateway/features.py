"""Feature switches as a caller sees them: the tenant's ``features`` and the customer's
``portal_features``, read in one small query. Staff are never feature-gated; the rule
itself is :func:`kit.access.require_feature` (and, for the whole list a caller sees,
:func:`services.gateway.domain.caller_features`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kit import access
from kit.context import Actor
from services.gateway import domain, edgecache
from services.gateway.models import Customer, TenantSettings


def caller_features(core: Any, actor: Actor) -> dict[str, bool]:
    """Every feature with its effective on/off for ``actor`` (all on for staff).

    One SELECT on a plain connection (the per-request hot path, as the session check):
    the customer by primary key, its tenant's settings row by its unique tenant id.
    """
    if actor.kind == "staff":
        return domain.effective_features(None)
    tenant_features, customer_features = _switches(core, actor)
    return domain.caller_features(tenant_features, customer_features)


def require_feature(core: Any, actor: Actor, feature: str) -> None:
    """``403 feature_disabled`` when ``feature`` is switched off for ``actor``: the one
    place the gateway enforces switches (portal users and token holders, previews
    included). Staff are never gated, so their switches are not even read."""
    if access.is_tenant_wide(actor.kind):
        return
    tenant_features, customer_features = _switches(core, actor)
    access.require_feature(feature, tenant_features, customer_features, actor)


def _switches(core: Any, actor: Actor) -> tuple[Any, Any]:
    """Cached per process and invalidated with every change on every replica
    (services.gateway.edgecache)."""
    cache = edgecache.cache_for(core)
    if cache is None:
        return _read_switches(core, actor)
    return cache.switches(actor.tenant_id, actor.customer_id, lambda: _read_switches(core, actor))


def _read_switches(core: Any, actor: Actor) -> tuple[Any, Any]:
    if actor.customer_id is None:
        rows = core.read(actor.tenant_id, TenantSettings, select(TenantSettings.features))
        return (rows[0][0] if rows else None), None
    stmt = (
        select(TenantSettings.features, Customer.portal_features)
        .select_from(Customer)
        .outerjoin(TenantSettings, TenantSettings.tenant_id == Customer.tenant_id)
        .where(Customer.id == actor.customer_id)
    )
    rows = core.read(actor.tenant_id, Customer, stmt)
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def approval_terms(uow: Any) -> str:
    """The tenant's approval terms ("" until an admin writes some)."""
    terms = uow.session.scalar(select(TenantSettings.approval_terms).limit(1))
    return terms or ""
