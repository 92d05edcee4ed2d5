"""RPC payloads of the notify service: the staff delivery log (``GET /deliveries``) and
the in-app feed (``GET /notifications``)."""

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
    template_error = Str(
        allow_none=True,
        metadata={
            "description": "A tenant template override that failed; the built-in one was used"
        },
    )
    sent_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class DeliveryPage(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    next_cursor = Str(allow_none=True)


# The list cursor (kit.pagination) with the read flag in front: the feed is ordered
# unread first. Every string that matches is a cursor the server accepts.
FEED_CURSOR_PATTERN = r"^[01]-[0-9]{1,16}-[0-9a-f]{32}$"


class NotificationListQuery(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Str(
        validate=validate.Regexp(FEED_CURSOR_PATTERN, error="not a cursor"),
        metadata={"description": "The next_cursor of the previous page"},
    )


class NotificationSchema(Schema):
    id = fields.UUID()
    event_id = fields.UUID()
    event_type = Str()
    record_type = Str(metadata={"description": "What the item is about, e.g. quote_request"})
    record_id = fields.UUID(allow_none=True)
    unit_id = fields.UUID(allow_none=True)
    title = Str()
    body = Str()
    link = Str(metadata={"description": "Where the record is in the portal"})
    read = fields.Boolean()
    read_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class NotificationPage(Schema):
    """The caller's feed: unread items first, then newest first."""

    items = fields.List(fields.Nested(NotificationSchema), required=True)
    next_cursor = Str(allow_none=True, required=True)
    unread_count = fields.Integer(required=True)
