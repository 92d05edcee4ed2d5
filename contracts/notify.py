"""RPC payloads of the notify service: the staff delivery log (``GET /deliveries``) and
the in-app feed (``GET /notifications``, read by the gateway from its feed view; the
marks go to notify, whose reply is :class:`ReadMarks`)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from contracts.common import CURSOR_PATTERN

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


class ReadMarks(Schema):
    """What ``mark_read`` and ``mark_all_read`` answer (and ``notification.read``
    carries): the items now read by this reader and when. The gateway applies it to its
    feed view before answering, so the caller reads its own write at once. A mark keeps
    the first ``read_at``; ``notification_ids`` may be empty (nothing was unread)."""

    reader_kind = Str(required=True, validate=validate.OneOf(["staff", "portal"]))
    reader_id = fields.UUID(required=True)
    read_at = fields.DateTime(required=True)
    notification_ids = fields.List(fields.UUID(), required=True)


# ------------------------------------------------------------------ email attachments
# How an event asks notify to attach files to its email: an optional ``attachments``
# list in the event's data, each naming a file already in the blob store. An event
# contract that may carry files includes ``attachments = attachments_field()``; notify
# passes the list to that event's email deliveries (never SMS or in-app) and reads the
# bytes from the blob store when it sends. A file missing from the store fails that
# delivery for good with the file named in ``last_error``; so do files above 15 MB
# together (services.notify.attachments holds the limits).
ATTACHMENT_SHA256_PATTERN = r"^[0-9a-f]{64}$"
CONTENT_TYPE_PATTERN = r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$"
MAX_ATTACHMENTS = 10


class Attachment(Schema):
    sha256 = Str(
        required=True,
        validate=validate.Regexp(ATTACHMENT_SHA256_PATTERN, error="not a SHA-256 hex digest"),
        metadata={"description": "The file's id in the blob store (kit.blobs)"},
    )
    filename = Str(
        required=True,
        validate=[
            validate.Length(min=1, max=200),
            validate.Regexp(r"^[^\x00-\x1f\x7f/\\]+$", error="no path or control characters"),
        ],
    )
    content_type = Str(
        required=True,
        validate=validate.Regexp(CONTENT_TYPE_PATTERN, error="not a content type"),
        metadata={"example": "application/pdf"},
    )


def attachments_field() -> fields.List:
    """The optional ``attachments`` field of an event that sends files by email."""
    return fields.List(
        fields.Nested(Attachment),
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=MAX_ATTACHMENTS),
        metadata={"description": "Files notify attaches to this event's email"},
    )
