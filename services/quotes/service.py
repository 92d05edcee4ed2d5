"""Quote requests over RPC. Each entrypoint: parse with a contract schema, apply the
domain's decision inside one unit of work (state + outbox event), return a dump.

Clients read quote requests from the gateway's views, fed by this service's events
(each carries the request's whole state); this service answers commands, and pages its
records out for a rebuild of those views (``snapshot_*``, the system only).

Where the rest lives: the rules in :mod:`~services.quotes.domain`, loading and numbering
in :mod:`~services.quotes.store`,
the contract's shapes in :mod:`~services.quotes.serialise`; comments and files are the
kit's discussion (:mod:`kit.discussion_rpc`); ``directory.*`` events keep the local
copies every reference is checked against (:mod:`services.quotes.directory`).
"""

from __future__ import annotations

from typing import Any

from contracts import quotes as c
from contracts.discussion import SnapshotPage
from kit import pagination
from kit.access import require_system
from kit.db import utcnow
from kit.discussion_rpc import discussion_entrypoints
from kit.health import HealthEndpoints
from kit.observability import Metrics
from kit.providers import Database, RequestContext, rpc
from kit.schemas import parse
from services.quotes import directory, domain, store
from services.quotes.models import QuoteRequest, metadata
from services.quotes.serialise import event_data, to_dict

QuoteDiscussion = discussion_entrypoints(
    store.discussion,
    load_record=store.visible_quote,
    event_data=event_data,
    comment_schema=c.CommentSchema,
    attachment_schema=c.AttachmentSchema,
)


def _id(value: Any) -> str | None:
    return str(value) if value else None


def _by(actor: Any) -> dict[str, Any]:
    """Who did it, as every ``quote_request.*`` event that names an author says."""
    return {"author_kind": actor.kind, "author_name": actor.name, "author_id": actor.id}


class QuotesService(QuoteDiscussion, HealthEndpoints):  # type: ignore[misc, valid-type]
    name = "quotes"

    db = Database("quotes", metadata)
    ctx = RequestContext()
    metrics = Metrics()

    on_directory_event = directory.handlers.consumer()  # local copies, exactly once

    # --- the snapshot the gateway's read views are rebuilt from -----------------------
    @rpc
    def snapshot_quote_requests(self, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every request of the tenant, oldest first, page by page (the system only).
        Clients read the gateway's views, kept from this service's events."""
        actor = self.ctx.require_actor()
        require_system(actor)
        f = parse(SnapshotPage, query or {})
        with self.db.unit_of_work() as uow:
            rows, next_cursor = pagination.snapshot(
                uow.session, QuoteRequest, f.get("limit"), f.get("cursor")
            )
            return {"items": [to_dict(q) for q in rows], "next_cursor": next_cursor}

    # --- writes -----------------------------------------------------------------------
    @rpc
    def create_quote_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.CreateQuoteRequest, payload)
        customer_id, unit_id = _id(body.get("customer_id")), _id(body.get("unit_id"))
        with self.db.unit_of_work() as uow:
            new = domain.prepare_create(
                actor,
                description=body.get("description"),
                customer_id=customer_id,
                unit_id=unit_id,
                work_order_id=_id(body.get("work_order_id")),
                visible_to_customer=body.get("visible_to_customer"),
                known=directory.known(uow, customers=[customer_id], units=[unit_id]),
            )
            now = utcnow()
            q = QuoteRequest(
                number=store.next_number(uow),
                customer_id=new.customer_id,
                unit_id=new.unit_id,
                work_order_id=new.work_order_id,
                description=new.description,
                status=new.status,
                created_by=actor.id,
                created_by_kind=actor.kind,
                created_by_name=actor.name,
                created_by_customer=new.created_by_customer,
                visible_to_customer=new.visible_to_customer,
                version=1,
                created_at=now,
                updated_at=now,
            )
            uow.session.add(q)
            uow.session.flush()
            uow.emit(new.event, event_data(q, **_by(actor)))
            return to_dict(q, 0)

    @rpc
    def update_quote_request(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.PatchQuoteRequest, payload)
        version = body.pop("version", None)
        changes = {k: (_id(v) if k == "assigned_to" else v) for k, v in body.items()}
        with self.db.unit_of_work() as uow:
            q = store.visible_quote(uow, actor, quote_id, lock=True)
            plan = domain.plan_patch(
                actor,
                q,
                changes,
                attachment_kinds=store.discussion.attachment_kinds(uow, q.id),
                known=directory.known(uow, staff=[changes.get("assigned_to")]),
            )
            domain.check_version(q.version, version)
            if plan.changes:
                previous = q.status
                for key, value in plan.changes.items():
                    setattr(q, key, value)
                store.touch(q)
                for event in plan.events:
                    uow.emit(event, event_data(q, previous_status=previous))
            return to_dict(q, store.discussion.attachment_count(uow, q.id))

    @rpc
    def approve_quote_request(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = parse(c.ApproveRequest, payload)
        return self._decide(
            quote_id,
            body.get("version"),
            lambda actor, q: domain.approve(actor, q, body.get("po_number")),
        )

    @rpc
    def deny_quote_request(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = parse(c.DenyRequest, payload)
        return self._decide(
            quote_id,
            body.get("version"),
            lambda actor, q: domain.deny(actor, q, body.get("reason")),
        )

    @rpc
    def cancel_quote_request(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = parse(c.VersionOnly, payload)
        return self._decide(quote_id, body.get("version"), domain.cancel)

    def _decide(self, quote_id: str, version: int | None, decide: Any) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            q = store.visible_quote(uow, actor, quote_id, lock=True)
            decision = decide(actor, q)
            domain.check_version(q.version, version)
            previous = q.status
            q.status = decision.status
            if decision.status in (domain.APPROVED, domain.DENIED):
                q.po_number = decision.po_number
                q.decision_reason = decision.reason
                q.decided_by = actor.id
                q.decided_on_behalf = decision.on_behalf
                q.decided_at = utcnow()
            store.touch(q)
            uow.emit(
                decision.event,
                event_data(q, previous_status=previous, **_by(actor)),
            )
            return to_dict(q, store.discussion.attachment_count(uow, q.id))
