"""Quote requests as the contracts show them: the RPC record and the events' data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts import quotes as c
from contracts.quotes import number_text
from kit.schemas import shared
from services.quotes.models import QuoteRequest


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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
    """The request's state after the change (every ``quote_request.*`` event carries it)
    and what the event adds (``extra``: the previous status, the author, a comment)."""
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
        "created_by_name": q.created_by_name,
        "decided_on_behalf": q.decided_on_behalf,
        "decided_at": _when(q.decided_at),
        "created_at": _when(q.created_at),
        "updated_at": _when(q.updated_at),
    }
    data.update(extra)
    return data
