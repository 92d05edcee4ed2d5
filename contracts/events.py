"""The event envelope and every event's payload schema.

Events are facts, published on the topic exchange ``portico.events`` with the event
type as routing key. The envelope is versioned per type (``version``); a consumer
that sees a version it does not know should dead-letter the event, not guess.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from contracts.common import shared

EXCHANGE = "portico.events"
# The same events again, except PRIVATE_EVENTS, for external integrations, routed by
# ``<tenant_id>.<event type>``: the broker's topic permissions keep each integration
# account to its own tenant's routing keys.
INTEGRATION_EXCHANGE = "portico.integration"


def integration_routing_key(envelope: dict[str, Any]) -> str:
    return f"{envelope['tenant_id']}.{envelope['type']}"


class ActorSchema(Schema):
    kind = fields.String(
        required=True, validate=validate.OneOf(["staff", "portal", "token", "system"])
    )
    id = fields.String(required=True)
    name = fields.String(load_default="")


class EnvelopeSchema(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True)
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    occurred_at = fields.String(required=True)
    tenant_id = fields.UUID(required=True)
    correlation_id = fields.String(required=True, allow_none=True)
    causation_id = fields.String(required=True, allow_none=True)
    actor = fields.Nested(ActorSchema, required=True)
    data = fields.Dict(required=True)


class QuoteRequestEvent(Schema):
    """What every ``quote_request.*`` event carries: the request as it is after the change.

    Each event type has its own schema: this base plus what that event adds. A payload
    with a field its type does not declare is refused (marshmallow's default), except a
    ``null`` left over from the one schema all quote events shared before
    (``_drop_legacy_nulls``), so events published then still load."""

    quote_request_id = fields.UUID(required=True)
    number = fields.String(required=True, metadata={"description": "Q-000042"})
    customer_id = fields.UUID(required=True)
    unit_id = fields.UUID(allow_none=True, load_default=None)
    work_order_id = fields.UUID(allow_none=True, load_default=None)
    status = fields.String(required=True, metadata={"description": "Status after the change"})
    description = fields.String(required=True)
    assigned_to = fields.UUID(
        allow_none=True, load_default=None, metadata={"description": "Staff user id"}
    )
    created_by = fields.String(required=True)
    created_by_customer = fields.Boolean(required=True)
    visible_to_customer = fields.Boolean(required=True)
    po_number = fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": "The approval's PO number (null unless approved with one)"},
    )
    reason = fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": "The decision's reason (null unless denied with one)"},
    )
    version = fields.Integer(
        required=True, metadata={"description": "The request's version after the change"}
    )
    # The rest of the request's state (read views copy it whole). Absent from events
    # published before them: null, never guessed.
    created_by_name = fields.String(allow_none=True, load_default=None)
    decided_on_behalf = fields.Boolean(allow_none=True, load_default=None)
    decided_at = fields.DateTime(allow_none=True, load_default=None)
    created_at = fields.DateTime(allow_none=True, load_default=None)
    updated_at = fields.DateTime(allow_none=True, load_default=None)

    @pre_load
    def _drop_legacy_nulls(self, data: Any, **kwargs: Any) -> Any:
        """Drop ``null`` fields of the former shared schema that this type does not declare
        (they carried nothing); any other undeclared field is still refused."""
        if not isinstance(data, Mapping):
            return data
        stale = {
            k for k, v in data.items() if v is None and k in _SHARED_FIELDS and k not in self.fields
        }
        return {k: v for k, v in data.items() if k not in stale} if stale else data


# Every field the single quote event schema (before one schema per type) declared.
_SHARED_FIELDS: frozenset[str] = frozenset(
    {
        *QuoteRequestEvent._declared_fields,
        "previous_status",
        "comment_id",
        "comment_body",
        "author_kind",
        "author_name",
        "attachment_id",
        "filename",
        "attachment_kind",
    }
)


class _StatusBefore(Schema):
    previous_status = fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": "Status before the change (equal to status if unchanged)"},
    )


class _ByWhom(Schema):
    author_kind = fields.String(
        allow_none=True,
        load_default=None,
        validate=validate.OneOf(["staff", "portal", "token", "system"]),
        metadata={"description": "Kind of caller who did it"},
    )
    author_name = fields.String(
        allow_none=True, load_default=None, metadata={"description": "Name of who did it"}
    )
    author_id = fields.String(
        allow_none=True, load_default=None, metadata={"description": "Id of who did it"}
    )


class QuoteRequestCreated(_ByWhom, QuoteRequestEvent):
    """Data of ``quote_request.created``: the new request and who asked for it."""


class QuoteRequestUpdated(_StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.updated``: staff changed the description or whether the
    customer sees the request."""


class QuoteRequestAssigned(_StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.assigned``: ``assigned_to`` is the new assignee (null:
    nobody)."""


class QuoteRequestStatusChanged(_StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.status_changed``: staff moved the request from
    ``previous_status`` to another working status."""


class QuoteRequestApprovalRequested(_StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.approval_requested``: the request now awaits the
    customer's decision."""


class QuoteRequestApproved(_ByWhom, _StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.approved``: who approved it, and the PO number given."""

    po_number = fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": "The PO number given with the approval (null: none)"},
    )


class QuoteRequestDenied(_ByWhom, _StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.denied``: who denied it, and why."""

    reason = fields.String(
        allow_none=True,
        load_default=None,
        metadata={"description": "The reason given with the denial (null: none)"},
    )


class QuoteRequestCancelled(_ByWhom, _StatusBefore, QuoteRequestEvent):
    """Data of ``quote_request.cancelled``: who cancelled it, and from which status."""


class QuoteCommentAdded(_ByWhom, QuoteRequestEvent):
    """Data of ``quote_request.comment_added``: the request, the comment and its author."""

    comment_id = fields.UUID(allow_none=True, load_default=None)
    comment_body = fields.String(allow_none=True, load_default=None)
    comment_created_at = fields.DateTime(allow_none=True, load_default=None)


class QuoteCommentDeleted(_ByWhom, QuoteRequestEvent):
    """Data of ``quote_request.comment_deleted``: the request, which comment, and who
    deleted it (never the comment's text)."""

    comment_id = fields.UUID(allow_none=True, load_default=None)
    comment_deleted_at = fields.DateTime(allow_none=True, load_default=None)


class QuoteAttachmentAdded(_ByWhom, QuoteRequestEvent):
    """Data of ``quote_request.attachment_added``: the request, the file's id, name and
    kind (its bytes stay in the blob store), and who uploaded it."""

    attachment_id = fields.UUID(allow_none=True, load_default=None)
    filename = fields.String(allow_none=True, load_default=None)
    attachment_kind = fields.String(allow_none=True, load_default=None)
    content_type = fields.String(allow_none=True, load_default=None)
    size = fields.Integer(allow_none=True, load_default=None)
    sha256 = fields.String(allow_none=True, load_default=None)
    attachment_created_at = fields.DateTime(allow_none=True, load_default=None)


class TenantEvent(Schema):
    id = fields.UUID(required=True)
    slug = fields.String(required=True)
    name = fields.String(required=True)


class CustomerEvent(Schema):
    """Data of ``directory.customer.*``: the customer and the settings services act on.

    The settings fields came later: an event published before them loads with
    ``null`` (unknown), never with a guessed value."""

    id = fields.UUID(required=True)
    name = fields.String(required=True)
    account_number = fields.String(allow_none=True, load_default=None)
    require_invoice_authorization = fields.Boolean(allow_none=True, load_default=None)
    portal_features = fields.Dict(
        keys=fields.String(),
        values=fields.Boolean(),
        allow_none=True,
        load_default=None,
        metadata={"description": "The customer's own switches (absent: the tenant's apply)"},
    )


class ContactEvent(Schema):
    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(allow_none=True, load_default=None)
    phone = fields.String(allow_none=True, load_default=None)
    notify_by = fields.String(
        required=True, validate=validate.OneOf(["email", "sms", "both", "none"])
    )
    is_team_manager = fields.Boolean(required=True)


class StaffUserEvent(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    roles = fields.List(fields.String(), required=True)
    active = fields.Boolean(required=True)


class UnitEvent(Schema):
    """Data of ``directory.unit.*``: what other services keep about a customer's unit."""

    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    label = fields.String(load_default="", metadata={"description": "Fleet number, make, model"})


class SettingsEvent(Schema):
    """Data of ``directory.settings.updated``: the tenant's settings in full.

    The fields after ``notify_new_request_roles`` came later: an event published before
    them loads with ``null`` (unknown), never with a guessed value."""

    features = fields.Dict(keys=fields.String(), values=fields.Boolean(), required=True)
    notify_new_request_roles = fields.List(fields.String(), required=True)
    tax_rate_bp = fields.Integer(
        allow_none=True, load_default=None, metadata={"description": "Tax rate, basis points"}
    )
    currency = fields.String(
        allow_none=True, load_default=None, metadata={"description": "ISO 4217 code"}
    )
    approval_terms = fields.String(allow_none=True, load_default=None)
    reason_codes = fields.List(fields.String(), allow_none=True, load_default=None)
    work_order_token_hours = fields.Integer(allow_none=True, load_default=None)


class PortalAccountEvent(Schema):
    """Data of ``directory.portal_account.*``: a customer's portal login as it is after
    the change (``deleted``: as it was). Never its password hash or any token."""

    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    contact_id = fields.UUID(allow_none=True, load_default=None)
    name = fields.String(required=True)
    email = fields.String(required=True)
    permissions = fields.List(fields.String(), required=True)
    unit_ids = fields.List(
        fields.UUID(),
        required=True,
        allow_none=True,
        metadata={"description": "null: every unit of the customer"},
    )
    enabled = fields.Boolean(required=True)


class LinkIssuedEvent(Schema):
    """Data of ``auth.link_issued``: a single-use, expiring link to mail to one person
    (an invitation to set a password, or a password reset). Carries a secret: it is a
    private event (see ``PRIVATE_EVENTS``)."""

    purpose = fields.String(
        required=True, validate=validate.OneOf(["invitation", "password_reset"])
    )
    subject_kind = fields.String(required=True, validate=validate.OneOf(["staff", "portal"]))
    subject_id = fields.UUID(required=True)
    customer_id = fields.UUID(allow_none=True, load_default=None)
    email = fields.String(required=True)
    name = fields.String(load_default="")
    token = fields.String(required=True)
    expires_at = fields.String(required=True)


class NotificationCreated(Schema):
    """Data of ``notification.created``: one new item of one person's in-app feed (a
    staff member's, or a customer's, read by each of its portal accounts), whole.
    Items never change once stored; ``version`` is 1 (a later change would raise it).
    Per person: a private event (see ``PRIVATE_EVENTS``)."""

    notification_id = fields.UUID(required=True)
    recipient_kind = fields.String(required=True, validate=validate.OneOf(["staff", "customer"]))
    recipient_id = fields.UUID(required=True)
    unit_id = fields.UUID(
        allow_none=True,
        load_default=None,
        metadata={"description": "Its unit: an account restricted to units sees only theirs"},
    )
    event_id = fields.UUID(required=True, metadata={"description": "The event that caused it"})
    event_type = fields.String(required=True)
    record_type = fields.String(required=True)
    record_id = fields.UUID(allow_none=True, load_default=None)
    title = fields.String(required=True)
    body = fields.String(required=True)
    link = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    version = fields.Integer(required=True, validate=validate.Range(min=1))


class NotificationsRead(Schema):
    """Data of ``notification.read``: one reader marked these items of its feed read
    (each portal account of a customer reads for itself). A mark is never undone and
    keeps the first ``read_at``. Per person: a private event (see ``PRIVATE_EVENTS``)."""

    reader_kind = fields.String(required=True, validate=validate.OneOf(["staff", "portal"]))
    reader_id = fields.UUID(required=True)
    read_at = fields.DateTime(required=True)
    notification_ids = fields.List(
        fields.UUID(), required=True, validate=validate.Length(min=1, max=500)
    )


# type -> (payload schema, one-line meaning), published by the quotes service
QUOTE_EVENTS: dict[str, tuple[type[Schema], str]] = {
    "quote_request.created": (QuoteRequestCreated, "A quote request was created."),
    "quote_request.updated": (
        QuoteRequestUpdated,
        "Staff changed a quote request's description or customer visibility.",
    ),
    "quote_request.assigned": (QuoteRequestAssigned, "A quote request was (un)assigned."),
    "quote_request.status_changed": (
        QuoteRequestStatusChanged,
        "Staff moved a quote request to another working status.",
    ),
    "quote_request.approval_requested": (
        QuoteRequestApprovalRequested,
        "A quote request awaits the customer's approval.",
    ),
    "quote_request.approved": (QuoteRequestApproved, "A quote request was approved."),
    "quote_request.denied": (QuoteRequestDenied, "A quote request was denied."),
    "quote_request.cancelled": (QuoteRequestCancelled, "A quote request was cancelled."),
    "quote_request.comment_added": (QuoteCommentAdded, "A comment was added to a quote request."),
    "quote_request.comment_deleted": (
        QuoteCommentDeleted,
        "A comment on a quote request was deleted.",
    ),
    "quote_request.attachment_added": (
        QuoteAttachmentAdded,
        "A file was attached to a quote request.",
    ),
}

# type -> (payload schema, publishing service, one-line meaning)
EVENTS: dict[str, tuple[type[Schema], str, str]] = {
    **{t: (schema, "quotes", summary) for t, (schema, summary) in QUOTE_EVENTS.items()},
    "directory.tenant.created": (TenantEvent, "gateway", "A tenant (shop) was created."),
    "directory.tenant.updated": (TenantEvent, "gateway", "A tenant's name or settings changed."),
    "directory.customer.created": (CustomerEvent, "gateway", "A customer was created."),
    "directory.customer.updated": (CustomerEvent, "gateway", "A customer changed."),
    "directory.contact.created": (ContactEvent, "gateway", "A customer contact was added."),
    "directory.contact.updated": (ContactEvent, "gateway", "A contact or its preferences changed."),
    "directory.staff_user.created": (StaffUserEvent, "gateway", "A staff account was created."),
    "directory.staff_user.updated": (StaffUserEvent, "gateway", "A staff account changed."),
    "directory.unit.created": (UnitEvent, "gateway", "A customer's unit was added."),
    "directory.unit.updated": (UnitEvent, "gateway", "A customer's unit changed."),
    "directory.portal_account.created": (
        PortalAccountEvent,
        "gateway",
        "A customer's person was given a portal login.",
    ),
    "directory.portal_account.updated": (
        PortalAccountEvent,
        "gateway",
        "A portal login changed (name, permissions, units, enabled).",
    ),
    "directory.portal_account.deleted": (
        PortalAccountEvent,
        "gateway",
        "A portal login was deleted (data: the account as it was).",
    ),
    "directory.settings.updated": (SettingsEvent, "gateway", "A tenant's settings changed."),
    "auth.link_issued": (
        LinkIssuedEvent,
        "gateway",
        "An invitation or password-reset link was issued (private: carries a secret).",
    ),
    "notification.created": (
        NotificationCreated,
        "notify",
        "An item was added to one person's in-app feed (private: per person).",
    ),
    "notification.read": (
        NotificationsRead,
        "notify",
        "A reader marked items of its in-app feed read (private: per person).",
    ),
}

# Events that carry secrets, personal sign-in data or one person's in-app feed: consumed
# by Portico's own services only, never republished to integrations nor shown on the live
# stream, and their message bodies are never shown in the delivery log.
PRIVATE_EVENTS: frozenset[str] = frozenset(
    {"auth.link_issued", "notification.created", "notification.read"}
)


class UnknownEvent(ValueError):
    pass


def validate_data(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Check a payload against its contract; returns it JSON-ready (dump of the load)."""
    try:
        schema_cls = EVENTS[event_type][0]
    except KeyError as exc:
        raise UnknownEvent(event_type) from exc
    schema = shared(schema_cls)
    loaded = schema.load(data)
    return schema.dump(loaded)


def make_envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    tenant_id: str,
    actor: dict[str, Any],
    correlation_id: str | None,
    causation_id: str | None,
    version: int = 1,
) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "version": version,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "tenant_id": str(tenant_id),
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "actor": {
            "kind": actor.get("kind", "system"),
            "id": str(actor.get("id", "")),
            "name": actor.get("name", ""),
        },
        "data": validate_data(event_type, data),
    }


def parse_envelope(body: Any) -> dict[str, Any]:
    """Validate an incoming envelope (raises marshmallow.ValidationError)."""
    if not isinstance(body, dict):
        raise ValidationError("event body is not an object")
    shared(EnvelopeSchema).load(body)
    return body
