"""RPC payloads of the quotes service. The gateway validates HTTP input with the same
schemas and documents them in OpenAPI, so edge, RPC and docs agree."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

STATUSES = ("pending", "in_process", "customer_approval_needed", "approved", "denied", "cancelled")
Str = fields.String


class QuoteFilters(Schema):
    status = Str(validate=validate.OneOf(STATUSES))
    created_by_customer = fields.Boolean()
    created_by = fields.UUID()
    assigned_to = fields.UUID()
    customer_id = fields.UUID()
    unit_id = fields.UUID()
    q = Str(validate=validate.Length(min=1, max=200))


class QuoteListQuery(QuoteFilters):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Str(validate=validate.Length(max=200))


class CreateQuoteRequest(Schema):
    description = Str(
        required=True, validate=validate.Length(min=1, max=5000), metadata={"multiline": True}
    )
    customer_id = fields.UUID(metadata={"description": "Staff only: the customer it is for."})
    unit_id = fields.UUID(allow_none=True)
    work_order_id = fields.UUID(allow_none=True)
    visible_to_customer = fields.Boolean(metadata={"description": "Staff only; default true."})


class PatchQuoteRequest(Schema):
    description = Str(validate=validate.Length(min=1, max=5000), metadata={"multiline": True})
    assigned_to = fields.UUID(allow_none=True)
    status = Str(validate=validate.OneOf(STATUSES))
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


class CommentRequest(Schema):
    body = Str(
        required=True, validate=validate.Length(min=1, max=5000), metadata={"multiline": True}
    )


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


class CommentSchema(Schema):
    id = fields.UUID(required=True)
    quote_request_id = fields.UUID(required=True)
    author_kind = Str(required=True)
    author_id = fields.UUID(required=True)
    author_name = Str()
    body = Str(required=True)
    created_at = fields.DateTime(required=True)


class AttachmentSchema(Schema):
    id = fields.UUID(required=True)
    quote_request_id = fields.UUID(required=True)
    kind = Str(required=True, validate=validate.OneOf(["attachment", "quote_document"]))
    filename = Str(required=True)
    content_type = Str(required=True)
    size = fields.Integer(required=True)
    sha256 = Str(required=True)
    uploaded_by_name = Str()
    created_at = fields.DateTime(required=True)


class SummarySchema(Schema):
    counts = fields.Dict(keys=Str(), values=fields.Integer(), required=True)
    total = fields.Integer(required=True)
