"""Pure notification rules: who hears about which event, over which channel.

Nothing here performs I/O; the notify service feeds it recipients loaded from the
directory and acts on the plan it returns. The plan is the one decision of who is told:
email and SMS become deliveries, ``in_app`` becomes an item of the in-app feed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import quote

Channel = Literal["email", "sms"]
Audience = Literal["contacts", "assignee", "staff_roles", "addressee"]

# contact: a customer contact (email/sms); staff: a staff member; portal: a portal
# account addressed by its own email (sign-in links); customer: the customer as a
# whole, whose in-app feed every portal account of that customer reads.
RECIPIENT_KINDS: Final = frozenset({"contact", "staff", "portal", "customer"})
NOTIFY_BY_VALUES: Final = frozenset({"email", "sms", "both", "none"})
CHANNELS: Final[tuple[Channel, ...]] = ("email", "sms")
"""Channels that become deliveries (messages handed to a provider)."""
IN_APP: Final = "in_app"
PLAN_CHANNELS: Final[tuple[str, ...]] = (*CHANNELS, IN_APP)

# Audiences made of the customer's people. Nothing about a record the customer may not
# see may reach them, by any channel: such audiences require the event data to say
# ``visible_to_customer: true`` (missing counts as hidden). Every service's events
# carry that flag for records a customer can be kept from seeing.
CUSTOMER_AUDIENCES: Final = frozenset({"contacts"})
VISIBILITY_FIELD: Final = "visible_to_customer"

DEFAULT_NEW_REQUEST_ROLES: Final[tuple[str, ...]] = ("manager", "advisor")
"""Staff roles told about a new customer request until the tenant's settings say otherwise."""

_CHANNELS_BY_PREFERENCE: Final[Mapping[str, tuple[Channel, ...]]] = {
    "email": ("email",),
    "sms": ("sms",),
    "both": ("email", "sms"),
    "none": (),
}

QUOTE_EVENT_TYPES: Final[tuple[str, ...]] = (
    "quote_request.created",
    "quote_request.approval_requested",
    "quote_request.approved",
    "quote_request.denied",
    "quote_request.cancelled",
    "quote_request.comment_added",
    "quote_request.assigned",
    "quote_request.status_changed",
    "quote_request.updated",
    "quote_request.attachment_added",
    "quote_request.comment_deleted",
)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Someone who can be notified: a customer contact or a staff member."""

    kind: str  # "contact" | "staff" | "portal" | "customer"
    id: str
    name: str
    email: str | None = None
    phone: str | None = None
    notify_by: str = "email"  # "email" | "sms" | "both" | "none"
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in RECIPIENT_KINDS:
            raise ValueError(f"unknown recipient kind {self.kind!r}")
        if self.notify_by not in NOTIFY_BY_VALUES:
            raise ValueError(f"unknown notify_by {self.notify_by!r}")
        if not self.id:
            raise ValueError("recipient id must not be empty")


def _has_address(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def channels_for(recipient: Recipient) -> list[str]:
    """Channels the recipient asked for *and* has an address for, email first."""
    addresses: dict[Channel, str | None] = {"email": recipient.email, "sms": recipient.phone}
    return [
        channel
        for channel in _CHANNELS_BY_PREFERENCE[recipient.notify_by]
        if _has_address(addresses[channel])
    ]


def visible_to_customer(data: Mapping[str, Any]) -> bool:
    """May the customer see the record this event is about? Missing means no."""
    return data.get(VISIBILITY_FIELD) is True


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the notification table.

    ``audience`` is ``"contacts"`` (every customer contact passed in, and the
    customer's in-app feed), ``"assignee"`` (the staff member whose id is
    ``data["assigned_to"]``), ``"staff_roles"`` (active staff holding one of the
    tenant's ``notify_new_request_roles``) or ``"addressee"`` (the one person whose
    ``email`` is in the event data, e.g. a sign-in link; never anyone else).
    ``when`` lists event-data fields that must equal the given values for the rule
    to apply; a missing field never matches. Customer audiences additionally need
    the record to be visible to the customer (see :data:`CUSTOMER_AUDIENCES`).
    """

    audience: Audience
    when: Mapping[str, object]

    def applies(self, data: Mapping[str, Any]) -> bool:
        if self.audience in CUSTOMER_AUDIENCES and not visible_to_customer(data):
            return False
        return all(key in data and data[key] == value for key, value in self.when.items())


_ALWAYS: Final[Mapping[str, object]] = {}

# The notification table. Event types absent from it notify nobody.
NOTIFICATION_RULES: Final[Mapping[str, tuple[Rule, ...]]] = {
    "quote_request.created": (
        # Staff created it on the customer's behalf (and let the customer see it).
        Rule("contacts", {"created_by_customer": False}),
        # The customer asked: the shop's chosen roles hear about it.
        Rule("staff_roles", {"created_by_customer": True}),
        Rule("assignee", _ALWAYS),
    ),
    "quote_request.approval_requested": (Rule("contacts", _ALWAYS),),
    "quote_request.approved": (Rule("contacts", _ALWAYS), Rule("assignee", _ALWAYS)),
    "quote_request.denied": (Rule("contacts", _ALWAYS), Rule("assignee", _ALWAYS)),
    "quote_request.cancelled": (Rule("contacts", _ALWAYS), Rule("assignee", _ALWAYS)),
    "quote_request.comment_added": (
        Rule("contacts", {"author_kind": "staff"}),
        Rule("assignee", {"author_kind": "portal"}),
    ),
    "quote_request.assigned": (Rule("assignee", _ALWAYS),),
    # A sign-in link goes to its addressee only, by email only (it carries a secret).
    "auth.link_issued": (Rule("addressee", _ALWAYS),),
}


def notifying_event_types() -> tuple[str, ...]:
    """Event types that can notify someone (each needs templates)."""
    return tuple(NOTIFICATION_RULES)


def _addressee(data: Mapping[str, Any]) -> list[Recipient]:
    email = data.get("email")
    subject_id = data.get("subject_id")
    if not _has_address(email) or not subject_id:
        return []
    kind = "staff" if data.get("subject_kind") == "staff" else "portal"
    return [Recipient(kind, str(subject_id), str(data.get("name") or ""), email=str(email))]


def _audience(
    rule: Rule,
    data: Mapping[str, Any],
    contacts: Sequence[Recipient],
    staff: Sequence[Recipient],
    new_request_roles: Sequence[str],
) -> list[Recipient]:
    if rule.audience == "contacts":
        customer_id = data.get("customer_id")
        feed = [Recipient("customer", str(customer_id), "")] if customer_id else []
        return [*contacts, *feed]
    if rule.audience == "staff_roles":
        wanted = set(new_request_roles)
        return [member for member in staff if wanted.intersection(member.roles)]
    if rule.audience == "addressee":
        return _addressee(data)
    assigned_to = data.get("assigned_to")
    if not assigned_to:
        return []
    return [member for member in staff if member.id == str(assigned_to)]


def _plan_channels(rule: Rule, recipient: Recipient) -> list[str]:
    """Channels for one recipient of one rule: messages per preference, plus the feed.

    Staff and the customer (as a whole) get an in-app item; a contact's in-app view
    is its customer's feed, and an addressee's link is never put in a feed.
    """
    channels = [] if recipient.kind == "customer" else channels_for(recipient)
    if rule.audience != "addressee" and recipient.kind in ("staff", "customer"):
        channels.append(IN_APP)
    return channels


def plan_deliveries(
    event_type: str,
    data: Mapping[str, Any],
    contacts: Sequence[Recipient],
    staff: Sequence[Recipient],
    *,
    actor_id: str | None = None,
    new_request_roles: Sequence[str] = DEFAULT_NEW_REQUEST_ROLES,
) -> list[tuple[Recipient, str]]:
    """Who is told about ``event_type`` and over which channel (email, sms, in_app).

    Each (recipient, channel) pair appears at most once, in table order. When
    ``actor_id`` is given, the person who caused the event is not notified of it
    (except the addressee of a link, who may have asked for it).
    """
    planned: list[tuple[Recipient, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for rule in NOTIFICATION_RULES.get(event_type, ()):
        if not rule.applies(data):
            continue
        for recipient in _audience(rule, data, contacts, staff, new_request_roles):
            if rule.audience != "addressee" and actor_id is not None and recipient.id == actor_id:
                continue
            for channel in _plan_channels(rule, recipient):
                key = (recipient.kind, recipient.id, channel)
                if key in seen:
                    continue
                seen.add(key)
                planned.append((recipient, channel))
    return planned


LINK_PATHS: Final[Mapping[str, str]] = {
    "invitation": "/invitations/accept",
    "password_reset": "/password-reset",
}


def record_link(portal_base: str, event_type: str, data: Mapping[str, Any]) -> str:
    """Where a message about this event points: the record, a sign-in link, or the portal."""
    base = portal_base.rstrip("/")
    if event_type == "auth.link_issued":
        path = LINK_PATHS.get(str(data.get("purpose")))
        token = data.get("token")
        return f"{base}{path}?token={quote(str(token), safe='')}" if path and token else base
    quote_id = data.get("quote_request_id")
    if not quote_id:
        return base
    return f"{base}/quote-requests/{quote(str(quote_id), safe='')}"


MAX_ATTEMPTS: Final = 6


def backoff_seconds(attempt: int, base: float = 2.0, cap: float = 300.0) -> float:
    """Delay before retrying after failed attempt number ``attempt`` (1-based).

    ``base * 2 ** (attempt - 1)``, never more than ``cap``.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    exponent = attempt - 1
    if exponent >= 64:  # 2**64 * base exceeds any sensible cap; avoid float overflow
        return float(cap)
    return float(min(cap, base * (2**exponent)))


def next_status(attempt: int, ok: bool, *, transient: bool = True) -> str:
    """Status after attempt number ``attempt`` (1-based) finished.

    A permanent failure (``transient=False``) is never retried.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if ok:
        return "sent"
    if not transient or attempt >= MAX_ATTEMPTS:
        return "failed"
    return "retry"


def delivery_key(event_id: str, recipient_id: str, channel: str) -> str:
    """Stable dedupe key for one delivery of one event to one recipient."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if not event_id or not recipient_id:
        raise ValueError("event_id and recipient_id must not be empty")
    material = "\x1f".join((str(event_id), str(recipient_id), channel))
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    return f"{channel}:{digest[:40]}"


# ------------------------------------------------------------------ delivery lifecycle

DELIVERY_STATUSES: Final[tuple[str, ...]] = ("pending", "sending", "sent", "failed")
LEASE_SECONDS: Final = 60
"""How long a claimed delivery belongs to its sender; after that the sweep may retry it."""

ERROR_MAX_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a delivery row becomes once attempt number ``attempt`` has finished."""

    status: str  # "sent" | "pending" (retry later) | "failed"
    retry_in: float | None = None  # seconds until the next attempt, only when pending
    error: str | None = None


def settle(attempt: int, error: str | None = None, *, transient: bool = True) -> Settlement:
    """The row's next state after an attempt: ``error is None`` means it was handed over.

    A transient failure is retried after :func:`backoff_seconds` until
    :data:`MAX_ATTEMPTS`; a permanent one fails at once.
    """
    outcome = next_status(attempt, error is None, transient=transient)
    if outcome == "sent":
        return Settlement("sent")
    detail = (error or "unknown error")[:ERROR_MAX_CHARS]
    if outcome == "retry":
        return Settlement("pending", backoff_seconds(attempt), detail)
    return Settlement("failed", None, detail)


def abandoned_lease_error(attempts: int) -> str:
    """``last_error`` of a row whose sender vanished on its last allowed attempt."""
    return f"sender lost the lease on attempt {attempts} of {MAX_ATTEMPTS}; giving up"


def address_for(recipient: Recipient, channel: str) -> str:
    """Where ``channel`` reaches ``recipient`` (email address or phone number)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    value = recipient.email if channel == "email" else recipient.phone
    if not _has_address(value):
        raise ValueError(f"{recipient.kind} {recipient.id} has no {channel} address")
    return str(value).strip()


# ------------------------------------------------------------------------ in-app feed


def record_of(event_type: str, data: Mapping[str, Any]) -> tuple[str, str | None]:
    """The record an event is about: ``("quote_request", <id>)`` from the event's type
    prefix and its ``<prefix>_id`` (or ``id``) field."""
    record_type = event_type.split(".", 1)[0]
    record_id = data.get(f"{record_type}_id") or data.get("id")
    return record_type, str(record_id) if record_id else None


@dataclass(frozen=True, slots=True)
class FeedOwner:
    """Whose feed a caller reads, and as which reader it marks items read."""

    recipient_kind: str  # "staff" | "customer"
    recipient_id: str
    unit_ids: tuple[str, ...] | None  # None: items of every unit
    reader_kind: str  # "staff" | "portal"
    reader_id: str


class NoFeed(ValueError):
    """The caller has no in-app feed (token holders, system)."""


def feed_owner(
    kind: str, actor_id: str, customer_id: str | None, unit_ids: Sequence[str] | None
) -> FeedOwner:
    """A staff member reads its own items; a portal user reads its customer's items of
    its allowed units and those about no unit."""
    if kind == "staff":
        return FeedOwner("staff", actor_id, None, "staff", actor_id)
    if kind == "portal" and customer_id:
        units = None if unit_ids is None else tuple(str(u) for u in unit_ids)
        return FeedOwner("customer", str(customer_id), units, "portal", actor_id)
    raise NoFeed(f"a {kind} caller has no in-app feed")


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
FEED_CURSOR_RE: Final = re.compile(r"^([01])-([0-9]{1,16})-([0-9a-f]{32})$")
"""``<1 if read>-<microseconds since 1970 UTC>-<item id as 32 hex digits>``: the
list cursor of the kit (kit.pagination) with the read flag in front."""


def encode_feed_cursor(read: bool, created_at: datetime, item_id: str) -> str:
    """Position in a feed ordered unread first, then newest first."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{int(read)}-{micros}-{uuid.UUID(str(item_id)).hex}"


def decode_feed_cursor(cursor: str) -> tuple[bool, datetime, str]:
    """The position a cursor names; ``ValueError`` for anything that is not one."""
    match = FEED_CURSOR_RE.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise ValueError("not a cursor")
    read, micros, item_hex = match.groups()
    created_at = _EPOCH + timedelta(microseconds=int(micros))
    return read == "1", created_at, str(uuid.UUID(hex=item_hex))
