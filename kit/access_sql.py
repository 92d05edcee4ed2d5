"""The SQL twin of :meth:`kit.access.Scope.matches`: the same rule, clause for clause,
as a SQLAlchemy condition over a resource's columns (a property test in
kit/tests/test_access.py checks both agree on random records in PostgreSQL).

Not pure (it imports SQLAlchemy), so it lives beside :mod:`kit.access` rather than in
it: domains build scopes, services turn them into ``WHERE`` clauses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, false, or_

from kit.access import FIELD_NAMES, Fields, Scope


def columns_of(model: Any, fields: Fields) -> dict[str, Any]:
    """Scope field name -> ``model``'s column, for the fields the resource has."""
    return {name: getattr(model, attr) for name, attr in fields.mapping().items()}


def scope_filter(scope: Scope, columns: Mapping[str, Any]) -> Any:
    """``scope.matches`` as a SQL condition over ``columns`` (scope field name ->
    column; a field left out is one the resource does not have and reads as its neutral
    value, as in :class:`kit.access.Fields`). Change it together with ``Scope.matches``."""
    unknown = set(columns) - set(FIELD_NAMES)
    if unknown or "tenant_id" not in columns or "customer_id" not in columns:
        raise ValueError(f"scope columns need tenant_id and customer_id, not {sorted(unknown)}")
    if scope.nothing:
        return false()
    tenant = columns["tenant_id"] == scope.tenant_id
    if scope.everything:
        return tenant
    clauses = [tenant]
    if "visible_to_customer" in columns:
        clauses.append(columns["visible_to_customer"].is_(True))
    if scope.customer_id is not None:
        clauses.append(columns["customer_id"] == scope.customer_id)
    if scope.work_order_id is not None:
        work_order = columns.get("work_order_id")
        clauses.append(false() if work_order is None else work_order == scope.work_order_id)
    if scope.unit_ids is not None:
        unit = columns.get("unit_id")
        own_units = false() if unit is None else unit.in_(sorted(scope.unit_ids))
        creator = columns.get("created_by")
        if scope.creator_id is not None and creator is not None:
            own_units = or_(own_units, creator == scope.creator_id)
        clauses.append(own_units)
    return and_(*clauses)
