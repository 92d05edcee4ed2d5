"""Reads of quote requests inside the quotes service. Clients read the gateway's views
(services.gateway.views); what is read here is the paged snapshot those views are
rebuilt from, every request of the tenant, oldest first."""

from __future__ import annotations

from sqlalchemy import select

from kit import pagination
from kit.db import UnitOfWork
from services.quotes.models import QuoteRequest

SNAPSHOT_PAGE_MAX = 1000


def snapshot_page(
    uow: UnitOfWork, limit: int | None, cursor: str | None
) -> tuple[list[QuoteRequest], str | None]:
    stmt, size = pagination.page(
        select(QuoteRequest),
        QuoteRequest,
        limit,
        cursor,
        oldest_first=True,
        max_limit=SNAPSHOT_PAGE_MAX,
    )
    return pagination.split(list(uow.session.scalars(stmt)), size)
