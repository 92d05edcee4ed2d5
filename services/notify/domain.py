"""Pure notification rules: who hears about which quote event, over which channel.

Nothing here performs I/O; the notify service feeds it recipients loaded from the
directory and acts on the plan it returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

Channel = Literal["email", "sms"]
Audience = Literal["contacts", "assignee"]

RECIPIENT_KINDS: Final = frozenset({"contact", "staff"})
NOTIFY_BY_VALUES: Final = frozenset({"email", "sms", "both", "none"})
CHANNELS: Final[tuple[Channel, ...]] = ("email", "sms")

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

    kind: str  # "contact" | "staff"
    id: str
    name: str
    email: str | None = None
    phone: str | None = None
    notify_by: str = "email"  # "email" | "sms" | "both" | "none"

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


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the notification table.

    ``audience`` is ``"contacts"`` (every customer contact passed in) or
    ``"assignee"`` (the staff member whose id is ``data["assigned_to"]``).
    ``when`` lists event-data fields that must equal the given values for the rule
    to apply; a missing field never matches.
    """

    audience: Audience
    when: Mapping[str, object]

    def applies(self, data: Mapping[str, Any]) -> bool:
        return all(key in data and data[key] == value for key, value in self.when.items())


_ALWAYS: Final[Mapping[str, object]] = {}

# The notification table. Event types absent from it notify nobody.
NOTIFICATION_RULES: Final[Mapping[str, tuple[Rule, ...]]] = {
    "quote_request.created": (
        # Staff created it on the customer's behalf and let the customer see it.
        Rule("contacts", {"created_by_customer": False, "visible_to_customer": True}),
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
}


def notifying_event_types() -> tuple[str, ...]:
    """Event types that can notify someone (each needs templates)."""
    return tuple(NOTIFICATION_RULES)


def _audience(
    rule: Rule,
    data: Mapping[str, Any],
    contacts: list[Recipient],
    staff: list[Recipient],
) -> list[Recipient]:
    if rule.audience == "contacts":
        return list(contacts)
    assigned_to = data.get("assigned_to")
    if not assigned_to:
        return []
    return [member for member in staff if member.id == str(assigned_to)]


def plan_deliveries(
    event_type: str,
    data: Mapping[str, Any],
    contacts: list[Recipient],
    staff: list[Recipient],
    *,
    actor_id: str | None = None,
) -> list[tuple[Recipient, str]]:
    """Who is told about ``event_type`` and over which channel.

    Each (recipient, channel) pair appears at most once, in table order. When
    ``actor_id`` is given, the person who caused the event is not notified of it.
    """
    planned: list[tuple[Recipient, str]] = []
    seen: set[tuple[str, str, str]] = set()
    for rule in NOTIFICATION_RULES.get(event_type, ()):
        if not rule.applies(data):
            continue
        for recipient in _audience(rule, data, contacts, staff):
            if actor_id is not None and recipient.id == actor_id:
                continue
            for channel in channels_for(recipient):
                key = (recipient.kind, recipient.id, channel)
                if key in seen:
                    continue
                seen.add(key)
                planned.append((recipient, channel))
    return planned


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


def parse_occurred_at(value: str) -> datetime:
    """An envelope's ``occurred_at`` as an aware datetime (naive values are UTC)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"occurred_at is not an ISO 8601 timestamp: {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
