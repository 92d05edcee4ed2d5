"""The event envelope and every event's payload schema.

Events are facts, published on the topic exchange ``portico.events`` with the event
type as routing key. The envelope is versioned per type (``version``); a consumer
that sees a version it does not know should dead-letter the event, not guess.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

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
    """Data of every ``quote_request.*`` event: the request as it is after the change."""

    quote_request_id = fields.UUID(required=True)
    number = fields.String(required=True)
    customer_id = fields.UUID(required=True)
    unit_id = fields.UUID(allow_none=True, load_default=None)
    work_order_id = fields.UUID(allow_none=True, load_default=None)
    status = fields.String(required=True)
    previous_status = fields.String(allow_none=True, load_default=None)
    description = fields.String(required=True)
    assigned_to = fields.UUID(allow_none=True, load_default=None)
    created_by = fields.String(required=True)
    created_by_customer = fields.Boolean(required=True)
    visible_to_customer = fields.Boolean(required=True)
    po_number = fields.String(allow_none=True, load_default=None)
    reason = fields.String(allow_none=True, load_default=None)
    comment_id = fields.UUID(allow_none=True, load_default=None)
    comment_body = fields.String(allow_none=True, load_default=None)
    author_kind = fields.String(allow_none=True, load_default=None)
    author_name = fields.String(allow_none=True, load_default=None)
    attachment_id = fields.UUID(allow_none=True, load_default=None)
    filename = fields.String(allow_none=True, load_default=None)
    attachment_kind = fields.String(allow_none=True, load_default=None)
    version = fields.Integer(required=True)


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


QUOTE_EVENTS = (
    "quote_request.created",
    "quote_request.updated",
    "quote_request.assigned",
    "quote_request.status_changed",
    "quote_request.approval_requested",
    "quote_request.approved",
    "quote_request.denied",
    "quote_request.cancelled",
    "quote_request.comment_added",
    "quote_request.comment_deleted",
    "quote_request.attachment_added",
)

# type -> (payload schema, publishing service, one-line meaning)
EVENTS: dict[str, tuple[type[Schema], str, str]] = {
    **{
        t: (
            QuoteRequestEvent,
            "quotes",
            f"A quote request was {t.split('.')[1].replace('_', ' ')}.",
        )
        for t in QUOTE_EVENTS
    },
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
}

# Events that carry secrets or personal sign-in data: consumed by Portico's own services
# only, never republished to integrations, and their message bodies are never shown in
# the delivery log.
PRIVATE_EVENTS: frozenset[str] = frozenset({"auth.link_issued"})


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
