"""RPC payloads of the quotes service. The gateway validates HTTP input with the same
schemas and documents them in OpenAPI, so edge, RPC and docs agree."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.common import CURSOR_PATTERN, PageQuery
from contracts.discussion import TRIMMED, attachment_schema, comment_schema
from contracts.discussion import CommentRequest as CommentRequest
from contracts.discussion import OldestFirstPage as OldestFirstPage

STATUSES = ("pending", "in_process", "customer_approval_needed", "approved", "denied", "cancelled")
# What PATCH may set; decisions go through /approve, /deny and /cancel.
WORKING_STATUSES = ("pending", "in_process", "customer_approval_needed")
EXPORT_PAGE_MAX = 1000  # rows per export page between the gateway and the service
Str = fields.String


def number_text(n: int) -> str:
    """A quote request's human number, e.g. Q-000042 (stored as the integer 42)."""
    return f"Q-{n:06d}"


def number_value(number: str | int) -> int:
    return number if isinstance(number, int) else int(str(number).removeprefix("Q-"))


class QuoteFilters(Schema):
    status = Str(validate=validate.OneOf(STATUSES))
    created_by_customer = fields.Boolean()
    created_by = fields.UUID()
    assigned_to = fields.UUID()
    customer_id = fields.UUID()
    unit_id = fields.UUID()
    q = Str(validate=validate.Length(min=1, max=200))


class QuoteListQuery(QuoteFilters, PageQuery):
    pass


class QuoteExportQuery(QuoteFilters):
    """One page of the CSV export (gateway to service; not an HTTP query): newest
    first, keyset-paged so the gateway streams every row."""

    limit = fields.Integer(
        load_default=EXPORT_PAGE_MAX, validate=validate.Range(min=1, max=EXPORT_PAGE_MAX)
    )
    cursor = Str(validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor"))


# Text the quotes service trims of surrounding whitespace (``strips``): where it is
# required, it must hold something else (the OpenAPI document says so).


class CreateQuoteRequest(Schema):
    description = Str(required=True, validate=validate.Length(min=1, max=5000), metadata=TRIMMED)
    customer_id = fields.UUID(
        metadata={
            "description": "Staff: required, the customer it is for (422 under customer_id "
            "without it). Portal users: ignored, it is their own. A customer this tenant's "
            "directory does not have is 404 not_found with an error under customer_id, the "
            "same whether it exists in another shop or nowhere (a customer created a moment "
            "ago may take a few milliseconds to be known: retry)."
        }
    )
    unit_id = fields.UUID(
        allow_none=True,
        metadata={
            "description": "A unit of that customer (for a portal user restricted to some "
            "units, one of them); any other id is 404 not_found with an error under unit_id."
        },
    )
    work_order_id = fields.UUID(
        allow_none=True,
        metadata={"description": "A work order of that customer; any other is 404 not_found."},
    )
    visible_to_customer = fields.Boolean(metadata={"description": "Staff only; default true."})


class PatchQuoteRequest(Schema):
    description = Str(validate=validate.Length(min=1, max=5000), metadata=TRIMMED)
    assigned_to = fields.UUID(
        allow_none=True,
        metadata={
            "description": "An active staff member of this tenant (null to unassign); "
            "anyone else is 404 not_found with an error under assigned_to."
        },
    )
    status = Str(
        validate=validate.OneOf(
            WORKING_STATUSES,
            error="PATCH moves a request only between pending, in_process and "
            "customer_approval_needed; approve, deny and cancel with "
            "POST /quote-requests/{{id}}/approve, /deny or /cancel",
        ),
        metadata={
            "description": "Only the staff working states. Decisions (approved, denied, "
            "cancelled) are 422 validation_failed here, with an error under status naming "
            "the call that records them (who, on whose behalf, when)."
        },
    )
    visible_to_customer = fields.Boolean()
    version = fields.Integer(validate=validate.Range(min=1))


class ApproveRequest(Schema):
    po_number = Str(allow_none=True, validate=validate.Length(max=64))
    version = fields.Integer(validate=validate.Range(min=1))


class DenyRequest(Schema):
    reason = Str(allow_none=True, validate=validate.Length(max=2000), metadata={"multiline": True})
    version = fields.Integer(validate=validate.Range(min=1))


class VersionOnly(Schema):
    version = fields.Integer(validate=validate.Range(min=1))


class QuoteRequestSchema(Schema):
    id = fields.UUID(required=True)
    number = Str(required=True, metadata={"description": "Human number, e.g. Q-000042"})
    customer_id = fields.UUID(required=True)
    customer_name = Str(allow_none=True)
    unit_id = fields.UUID(allow_none=True)
    work_order_id = fields.UUID(allow_none=True)
    description = Str(required=True)
    status = Str(required=True, validate=validate.OneOf(STATUSES))
    created_by = fields.UUID(required=True)
    created_by_name = Str()
    created_by_customer = fields.Boolean(required=True, metadata={"description": "The star."})
    visible_to_customer = fields.Boolean(required=True)
    assigned_to = fields.UUID(allow_none=True)
    po_number = Str(allow_none=True)
    decision_reason = Str(allow_none=True)
    decided_on_behalf = fields.Boolean()
    decided_at = fields.DateTime(allow_none=True)
    attachment_count = fields.Integer()
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


ATTACHMENT_KINDS = ("attachment", "quote_document")
CommentSchema = comment_schema("quote_request_id")
AttachmentSchema = attachment_schema("quote_request_id", ATTACHMENT_KINDS)


class SummarySchema(Schema):
    counts = fields.Dict(keys=Str(), values=fields.Integer(), required=True)
    total = fields.Integer(required=True)
