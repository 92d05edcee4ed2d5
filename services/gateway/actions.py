"""``/action-required``: everything waiting for the caller, as one query over the read
views, newest first, paginated.

Each kind of item is declared once (:data:`SOURCES`): which view rows wait for someone
(a SQL condition), the feature it belongs to, the portal permission needed to act on it
and how it is titled and linked. Only items the caller may act on are listed: rows in
its scope (the kit's one access rule), of a feature switched on for it, needing a
permission it holds, never for a read-only session. A later service adds its items by
adding a source here (estimate lines awaiting a decision, proposed booking times,
invoices awaiting authorization, open balances).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, func, literal, select, union_all

from kit import pagination
from kit.access import Scope
from kit.access_sql import scope_filter
from kit.context import Actor
from kit.db import UnitOfWork
from services.gateway.models import QuoteRequestView
from services.gateway.views import QUOTE_SCOPE


@dataclass(frozen=True)
class Source:
    kind: str
    feature: str
    permission: str
    # (kind, id, title, created_at) rows waiting, before the caller's scope
    rows: Callable[[Scope], Any]
    link: Callable[[str], str]
    token_may_act: bool = False  # a work-order link's holder acts on it too


def _quotes_awaiting_approval(scope: Scope) -> Any:
    v = QuoteRequestView
    title = literal("Quote Q-") + func.lpad(cast(v.number, String), 6, "0")
    return select(
        literal("quote_approval").label("kind"),
        v.id.label("id"),
        title.label("title"),
        v.created_at.label("created_at"),
    ).where(v.status == "customer_approval_needed", scope_filter(scope, QUOTE_SCOPE))


SOURCES: tuple[Source, ...] = (
    Source(
        kind="quote_approval",
        feature="quotes",
        permission="quotes.approve",
        rows=_quotes_awaiting_approval,
        link=lambda item_id: f"/quote-requests/{item_id}",
    ),
)
KINDS = tuple(s.kind for s in SOURCES)


def may_act(actor: Actor, source: Source, features: Mapping[str, bool]) -> bool:
    if actor.read_only or not features.get(source.feature, False):
        return False
    if actor.kind == "token":
        return source.token_may_act
    return source.permission in actor.permissions


def page(
    uow: UnitOfWork,
    actor: Actor,
    features: Mapping[str, bool],
    limit: int | None,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of the caller's action items, newest first."""
    scope = Scope.of(actor)
    sources = [s for s in SOURCES if may_act(actor, s, features)]
    if not sources:
        return {"items": [], "next_cursor": None}
    waiting = union_all(*(s.rows(scope) for s in sources)).subquery("waiting")
    stmt, size = pagination.page(select(waiting), waiting.c, limit, cursor)
    rows, next_cursor = pagination.split(list(uow.session.execute(stmt)), size)
    links = {s.kind: s.link for s in SOURCES}
    items = [
        {
            "kind": row.kind,
            "id": str(row.id),
            "title": row.title,
            "created_at": row.created_at,
            "link": links[row.kind](str(row.id)),
        }
        for row in rows
    ]
    return {"items": items, "next_cursor": next_cursor}
