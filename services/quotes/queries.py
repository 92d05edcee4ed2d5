"""Reads of quote requests: the caller's scope (the kit's one rule, as SQL) and the
list filters, shared by the list, the export and the summary."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_, select

from kit import pagination
from kit.access_sql import columns_of, scope_filter
from kit.context import Actor
from kit.db import UnitOfWork
from services.quotes import domain
from services.quotes.models import QuoteRequest

# The scope's SQL twin reads these columns (kit.access_sql.scope_filter, proven to agree
# with kit.access.Scope.matches by kit/tests/test_access.py).
SCOPE_COLUMNS = columns_of(QuoteRequest, domain.QUOTE_FIELDS)


def scope_condition(scope: domain.Scope) -> Any:
    """``Scope.matches`` as a SQL condition over quote requests (the kit's one rule).
    The tenant clause is the unit of work's."""
    return scope_filter(scope, SCOPE_COLUMNS)


def _scoped(stmt: Any, actor: Actor) -> Any:
    return stmt.where(scope_condition(domain.list_scope(actor)))


def _filtered(stmt: Any, f: dict[str, Any]) -> Any:
    if "status" in f:
        stmt = stmt.where(QuoteRequest.status == f["status"])
    if "created_by_customer" in f:
        stmt = stmt.where(QuoteRequest.created_by_customer.is_(f["created_by_customer"]))
    for key in ("created_by", "assigned_to", "customer_id", "unit_id"):
        if f.get(key) is not None:
            stmt = stmt.where(getattr(QuoteRequest, key) == str(f[key]))
    if f.get("q"):
        term = f["q"].strip()
        like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions: list[ColumnElement[bool]] = [
            QuoteRequest.description.ilike(like, escape="\\"),
            QuoteRequest.po_number.ilike(like, escape="\\"),
        ]
        digits = term.upper().removeprefix("Q-").lstrip("0")
        # ASCII digits only: "³".isdigit() is true, and int() refuses it
        if digits.isascii() and digits.isdigit() and len(digits) < 15:
            conditions.append(QuoteRequest.number == int(digits))
        stmt = stmt.where(or_(*conditions))
    return stmt


def page_of(
    uow: UnitOfWork, actor: Actor, f: dict[str, Any], max_limit: int = pagination.MAX_LIMIT
) -> tuple[list[QuoteRequest], str | None]:
    """One page, newest first, of the requests the caller sees under the filters ``f``."""
    stmt = _filtered(_scoped(select(QuoteRequest), actor), f)
    stmt, limit = pagination.page(
        stmt, QuoteRequest, f.get("limit"), f.get("cursor"), max_limit=max_limit
    )
    return pagination.split(list(uow.session.scalars(stmt)), limit)


def status_counts(uow: UnitOfWork, actor: Actor, f: dict[str, Any]) -> dict[str, int]:
    """Requests per status under the filters other than ``status`` (the tabs)."""
    f = {k: v for k, v in f.items() if k != "status"}
    stmt = select(QuoteRequest.status, func.count()).group_by(QuoteRequest.status)
    return domain.summarize(uow.session.execute(_filtered(_scoped(stmt, actor), f)).all())
