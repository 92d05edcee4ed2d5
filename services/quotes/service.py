"""Quote requests over RPC. Each entrypoint: parse with a contract schema, apply the
domain's decision inside one unit of work (state + outbox event), return a dump.

``directory.*`` events keep the local copies every reference is checked against
(see :mod:`services.quotes.directory`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update

from contracts import quotes as c
from kit import pagination
from kit.access_sql import columns_of, scope_filter
from kit.context import Actor
from kit.db import UnitOfWork, utcnow
from kit.errors import NotFound
from kit.health import HealthEndpoints
from kit.ids import is_uuid
from kit.observability import Metrics
from kit.providers import Database, RequestContext, rpc
from kit.schemas import parse, shared
from services.quotes import directory, domain
from services.quotes.models import Attachment, Comment, QuoteCounter, QuoteRequest, metadata


def _str(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            str(v)
            if v is not None
            and k.endswith("_id")
            or k in ("created_by", "assigned_to")
            and v is not None
            else v
        )
        for k, v in d.items()
    }


def number_text(n: int) -> str:
    return f"Q-{n:06d}"


def to_dict(q: QuoteRequest, attachment_count: int | None = None) -> dict[str, Any]:
    out = {
        "id": q.id,
        "number": number_text(q.number),
        "customer_id": q.customer_id,
        "unit_id": q.unit_id,
        "work_order_id": q.work_order_id,
        "description": q.description,
        "status": q.status,
        "created_by": q.created_by,
        "created_by_name": q.created_by_name,
        "created_by_customer": q.created_by_customer,
        "visible_to_customer": q.visible_to_customer,
        "assigned_to": q.assigned_to,
        "po_number": q.po_number,
        "decision_reason": q.decision_reason,
        "decided_on_behalf": q.decided_on_behalf,
        "decided_at": q.decided_at,
        "version": q.version,
        "created_at": q.created_at,
        "updated_at": q.updated_at,
    }
    if attachment_count is not None:
        out["attachment_count"] = attachment_count
    return shared(c.QuoteRequestSchema).dump(out)


def event_data(q: QuoteRequest, **extra: Any) -> dict[str, Any]:
    data = {
        "quote_request_id": q.id,
        "number": number_text(q.number),
        "customer_id": q.customer_id,
        "unit_id": q.unit_id,
        "work_order_id": q.work_order_id,
        "status": q.status,
        "description": q.description,
        "assigned_to": q.assigned_to,
        "created_by": q.created_by,
        "created_by_customer": q.created_by_customer,
        "visible_to_customer": q.visible_to_customer,
        "po_number": q.po_number,
        "reason": q.decision_reason,
        "version": q.version,
    }
    data.update(extra)
    return data


# The scope's SQL twin reads these columns (kit.access_sql.scope_filter, proven to agree
# with kit.access.Scope.matches by kit/tests/test_access.py).
SCOPE_COLUMNS = columns_of(QuoteRequest, domain.QUOTE_FIELDS)


def scope_condition(scope: domain.Scope) -> Any:
    """``Scope.matches`` as a SQL condition over quote requests (the kit's one rule).
    The tenant clause is the unit of work's."""
    return scope_filter(scope, SCOPE_COLUMNS)


def _scoped(stmt: Any, actor: Actor) -> Any:
    """The caller's scope on a query of quote requests (lists, summary, export)."""
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


class QuotesService(HealthEndpoints):
    name = "quotes"

    db = Database("quotes", metadata)
    ctx = RequestContext()
    metrics = Metrics()

    # --- reads ------------------------------------------------------------------------
    @rpc
    def list_quote_requests(self, query: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        f = parse(c.QuoteListQuery, query)
        with self.db.unit_of_work() as uow:
            stmt = _filtered(_scoped(select(QuoteRequest), actor), f)
            stmt, limit = pagination.page(stmt, QuoteRequest, f.get("limit"), f.get("cursor"))
            rows, next_cursor = pagination.split(list(uow.session.scalars(stmt)), limit)
        return {"items": [to_dict(q) for q in rows], "next_cursor": next_cursor}

    @rpc
    def export_quote_requests(self, query: dict[str, Any]) -> dict[str, Any]:
        """One page of the export (up to ``EXPORT_PAGE_MAX`` rows, newest first); the
        gateway follows ``next_cursor`` to the end and streams the CSV as it goes."""
        actor = self.ctx.require_actor()
        f = parse(c.QuoteExportQuery, query)
        with self.db.unit_of_work() as uow:
            stmt = _filtered(_scoped(select(QuoteRequest), actor), f)
            stmt, limit = pagination.page(
                stmt, QuoteRequest, f.get("limit"), f.get("cursor"), max_limit=c.EXPORT_PAGE_MAX
            )
            rows, next_cursor = pagination.split(list(uow.session.scalars(stmt)), limit)
        return {"items": [to_dict(q) for q in rows], "next_cursor": next_cursor}

    @rpc
    def summarize_quote_requests(self, query: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        f = parse(c.QuoteFilters, query)
        f.pop("status", None)  # tabs count every status under the other filters
        with self.db.unit_of_work() as uow:
            stmt = select(QuoteRequest.status, func.count()).group_by(QuoteRequest.status)
            stmt = _filtered(_scoped(stmt, actor), f)
            counts = domain.summarize(uow.session.execute(stmt).all())
        return {"counts": counts, "total": sum(counts.values())}

    @rpc
    def get_quote_request(self, quote_id: str) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            return to_dict(q, self._attachment_count(uow, q.id))

    # --- writes -----------------------------------------------------------------------
    @rpc
    def create_quote_request(self, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.CreateQuoteRequest, payload)
        customer_id = str(body["customer_id"]) if body.get("customer_id") else None
        unit_id = str(body["unit_id"]) if body.get("unit_id") else None
        with self.db.unit_of_work() as uow:
            new = domain.prepare_create(
                actor,
                description=body.get("description"),
                customer_id=customer_id,
                unit_id=unit_id,
                work_order_id=str(body["work_order_id"]) if body.get("work_order_id") else None,
                visible_to_customer=body.get("visible_to_customer"),
                known=directory.known(uow, customers=[customer_id], units=[unit_id]),
            )
            q = QuoteRequest(
                number=self._next_number(uow),
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
                created_at=utcnow(),
                updated_at=utcnow(),
            )
            uow.session.add(q)
            uow.session.flush()
            uow.emit(new.event, event_data(q, author_kind=actor.kind, author_name=actor.name))
            return to_dict(q, 0)

    @rpc
    def update_quote_request(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.PatchQuoteRequest, payload)
        version = body.pop("version", None)
        changes = {
            k: (str(v) if k == "assigned_to" and v is not None else v) for k, v in body.items()
        }
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id, lock=True)
            plan = domain.plan_patch(
                actor,
                q,
                changes,
                attachment_kinds=self._kinds(uow, q.id),
                known=directory.known(uow, staff=[changes.get("assigned_to")]),
            )
            domain.check_version(q.version, version)
            if plan.changes:
                previous = q.status
                for key, value in plan.changes.items():
                    setattr(q, key, value)
                self._touch(q)
                for event in plan.events:
                    uow.emit(event, event_data(q, previous_status=previous))
            return to_dict(q, self._attachment_count(uow, q.id))

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
            q = self._load(uow, actor, quote_id, lock=True)
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
            self._touch(q)
            uow.emit(
                decision.event,
                event_data(
                    q, previous_status=previous, author_kind=actor.kind, author_name=actor.name
                ),
            )
            return to_dict(q, self._attachment_count(uow, q.id))

    # --- comments ---------------------------------------------------------------------
    @rpc
    def list_comments(self, quote_id: str, query: dict[str, Any] | None = None) -> dict[str, Any]:
        """A page of the request's comments, oldest first (a thread reads top down)."""
        actor = self.ctx.require_actor()
        f = parse(c.OldestFirstPage, query or {})
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            stmt = select(Comment).where(
                Comment.quote_request_id == q.id, Comment.deleted_at.is_(None)
            )
            rows, next_cursor = self._oldest_first(uow, stmt, Comment, f)
            return {"items": [self._comment(x) for x in rows], "next_cursor": next_cursor}

    @rpc
    def add_comment(self, quote_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        body = parse(c.CommentRequest, payload)
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            text = domain.validate_comment(actor, q, body["body"])
            comment = Comment(
                quote_request_id=q.id,
                author_kind=actor.kind,
                author_id=actor.id,
                author_name=actor.name,
                body=text,
                created_at=utcnow(),
            )
            uow.session.add(comment)
            uow.session.flush()
            uow.emit(
                domain.EVENT_COMMENT_ADDED,
                event_data(
                    q,
                    comment_id=comment.id,
                    comment_body=text,
                    author_kind=actor.kind,
                    author_name=actor.name,
                ),
            )
            return self._comment(comment)

    @rpc
    def delete_comment(self, quote_id: str, comment_id: str) -> None:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            domain.authorize_comment_delete(actor, q)
            comment = self._get(uow, Comment, comment_id)
            if comment is None or comment.quote_request_id != q.id or comment.deleted_at:
                raise NotFound("No such comment.")
            comment.deleted_at = utcnow()
            comment.deleted_by = actor.id
            uow.emit(
                domain.EVENT_COMMENT_DELETED,
                event_data(
                    q, comment_id=comment.id, author_kind=actor.kind, author_name=actor.name
                ),
            )

    # --- attachments ------------------------------------------------------------------
    @rpc
    def authorize_upload(self, quote_id: str, kind: str) -> str:
        """Checked before the gateway stores any bytes, so refused uploads leave none."""
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            return domain.authorize_attachment(actor, self._load(uow, actor, quote_id), kind)

    @rpc
    def add_attachment(self, quote_id: str, meta: dict[str, Any]) -> dict[str, Any]:
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            kind = domain.authorize_attachment(actor, q, meta.get("kind"))
            att = Attachment(
                quote_request_id=q.id,
                kind=kind,
                filename=meta["filename"],
                content_type=meta["content_type"],
                size=int(meta["size"]),
                sha256=meta["sha256"],
                uploaded_by=actor.id,
                uploaded_by_kind=actor.kind,
                uploaded_by_name=actor.name,
                created_at=utcnow(),
            )
            uow.session.add(att)
            uow.session.flush()
            uow.emit(
                domain.EVENT_ATTACHMENT_ADDED,
                event_data(
                    q,
                    attachment_id=att.id,
                    filename=att.filename,
                    attachment_kind=kind,
                    author_kind=actor.kind,
                    author_name=actor.name,
                ),
            )
            return self._attachment(att)

    @rpc
    def list_attachments(
        self, quote_id: str, query: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A page of the request's files, oldest first."""
        actor = self.ctx.require_actor()
        f = parse(c.OldestFirstPage, query or {})
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            stmt = select(Attachment).where(Attachment.quote_request_id == q.id)
            rows, next_cursor = self._oldest_first(uow, stmt, Attachment, f)
            return {"items": [self._attachment(a) for a in rows], "next_cursor": next_cursor}

    # --- directory facts --------------------------------------------------------------
    on_directory_event = directory.handlers.consumer()  # local copies, exactly once

    @rpc
    def get_attachment(self, quote_id: str, attachment_id: str) -> dict[str, Any]:
        """Metadata of one file, authorised exactly like the quote request itself."""
        actor = self.ctx.require_actor()
        with self.db.unit_of_work() as uow:
            q = self._load(uow, actor, quote_id)
            att = self._get(uow, Attachment, attachment_id)
            if att is None or att.quote_request_id != q.id:
                raise NotFound("No such attachment.")
            return self._attachment(att)

    # --- helpers ----------------------------------------------------------------------
    @staticmethod
    def _oldest_first(
        uow: UnitOfWork, stmt: Any, model: Any, f: dict[str, Any]
    ) -> tuple[list[Any], str | None]:
        stmt, limit = pagination.page(
            stmt, model, f.get("limit"), f.get("cursor"), oldest_first=True
        )
        return pagination.split(list(uow.session.scalars(stmt)), limit)

    @staticmethod
    def _get(uow: UnitOfWork, model: Any, row_id: str) -> Any:
        if not is_uuid(row_id):
            return None
        return uow.session.scalars(select(model).where(model.id == row_id)).first()

    def _load(
        self, uow: UnitOfWork, actor: Actor, quote_id: str, lock: bool = False
    ) -> QuoteRequest:
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

    @staticmethod
    def _kinds(uow: UnitOfWork, quote_id: str) -> list[str]:
        return list(
            uow.session.scalars(
                select(Attachment.kind).where(Attachment.quote_request_id == quote_id).distinct()
            )
        )

    @staticmethod
    def _attachment_count(uow: UnitOfWork, quote_id: str) -> int:
        return (
            uow.session.scalar(
                select(func.count())
                .select_from(Attachment)
                .where(Attachment.quote_request_id == quote_id)
            )
            or 0
        )

    @staticmethod
    def _next_number(uow: UnitOfWork) -> int:
        # One row per tenant, bumped atomically: numbers are gap-free per commit order.
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

    @staticmethod
    def _touch(q: QuoteRequest) -> None:
        q.version += 1
        q.updated_at = utcnow()

    @staticmethod
    def _comment(x: Comment) -> dict[str, Any]:
        return shared(c.CommentSchema).dump(
            {
                "id": x.id,
                "quote_request_id": x.quote_request_id,
                "author_kind": x.author_kind,
                "author_id": x.author_id,
                "author_name": x.author_name,
                "body": x.body,
                "created_at": x.created_at,
            }
        )

    @staticmethod
    def _attachment(a: Attachment) -> dict[str, Any]:
        return shared(c.AttachmentSchema).dump(
            {
                "id": a.id,
                "quote_request_id": a.quote_request_id,
                "kind": a.kind,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "uploaded_by_name": a.uploaded_by_name,
                "created_at": a.created_at,
            }
        )
