"""Persistence of quote requests: loading one in the caller's scope, numbering new
ones, stamping changes, and the request's comments and files (the kit's discussion)."""

from __future__ import annotations

from sqlalchemy import select, update

from kit.context import Actor
from kit.db import UnitOfWork, utcnow
from kit.discussion_store import DiscussionStore
from kit.errors import NotFound
from kit.ids import is_uuid
from services.quotes import domain
from services.quotes.models import QuoteCounter, QuoteRequest, discussion_models

discussion = DiscussionStore(discussion_models)


def visible_quote(uow: UnitOfWork, actor: Actor, quote_id: str, lock: bool = False) -> QuoteRequest:
    """The request if ``actor`` may see it (else ``not_found``, never revealing it
    exists); ``lock`` takes the row lock a change needs."""
    if not is_uuid(quote_id):
        raise NotFound("No such quote request.")
    stmt = select(QuoteRequest).where(QuoteRequest.id == quote_id)
    if lock:
        stmt = stmt.with_for_update()
    q = uow.session.scalars(stmt).first()
    if q is None:
        raise NotFound("No such quote request.")
    domain.ensure_visible(actor, q)
    return q


def next_number(uow: UnitOfWork) -> int:
    """The tenant's next human number. One row per tenant, bumped atomically: numbers
    are gap-free per commit order."""
    bumped = uow.session.execute(
        update(QuoteCounter)
        .values(last_number=QuoteCounter.last_number + 1)
        .returning(QuoteCounter.last_number)
    ).scalar()
    if bumped is None:
        uow.session.add(QuoteCounter(last_number=1))
        uow.session.flush()
        return 1
    return int(bumped)


def touch(q: QuoteRequest) -> None:
    """Every change bumps the version (``ETag`` / ``If-Match``) and the update time."""
    q.version += 1
    q.updated_at = utcnow()
