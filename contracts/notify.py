"""RPC payloads of the notify service: the staff delivery log (``GET /deliveries``)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from kit.pagination import CURSOR_PATTERN

DELIVERY_STATUSES = ("pending", "sending", "sent", "failed")
CHANNELS = ("email", "sms")
Str = fields.String


class DeliveryListQuery(Schema):
    status = Str(validate=validate.OneOf(DELIVERY_STATUSES))
    channel = Str(validate=validate.OneOf(CHANNELS))
    event_type = Str(validate=validate.Length(min=1, max=120))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Str(validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor"))


class DeliverySchema(Schema):
    id = fields.UUID()
    event_id = fields.UUID()
    event_type = Str()
    recipient_kind = Str()
    recipient_id = fields.UUID()
    channel = Str()
    address = Str()
    subject = Str(allow_none=True)
    status = Str()
    attempts = fields.Integer()
    last_error = Str(allow_none=True)
    sent_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class DeliveryPage(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = Str(allow_none=True)
