"""The delivery log (every email and SMS sent, with status and retries), from notify."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from services.gateway.web import STAFF, Call, route


class DeliveryQuery(Schema):
    status = fields.String(validate=validate.OneOf(["pending", "sending", "sent", "failed"]))
    channel = fields.String(validate=validate.OneOf(["email", "sms"]))
    event_type = fields.String(validate=validate.Length(max=120))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class DeliverySchema(Schema):
    id = fields.String(required=True)
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    recipient_kind = fields.String(required=True)
    recipient_id = fields.String(required=True)
    channel = fields.String(required=True)
    address = fields.String(allow_none=True)
    subject = fields.String(allow_none=True)
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    last_error = fields.String(allow_none=True)
    sent_at = fields.String(allow_none=True)
    created_at = fields.String(required=True)


@route(
    "GET",
    "/deliveries",
    callers=STAFF,
    summary="Every email and SMS sent, with status",
    tag="notifications",
    query=DeliveryQuery,
    response=DeliverySchema,
    many=True,
)
def list_deliveries(call: Call) -> Any:
    return call.gw.notify.list_deliveries(call.query)
