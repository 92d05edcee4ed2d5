"""The event catalogue agrees with who publishes and who is told: every event the quotes
domain names has a contract (and no contracted quote event is one the domain never
publishes), every contracted event names a publisher that is a registered service,
every notify rule names a contracted event, every notifying event has the templates its
channels render, and those templates read only fields its contract declares."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from marshmallow import ValidationError

from contracts.events import EVENTS, validate_data
from services.notify.channels import PART_SUFFIXES, PARTS_BY_CHANNEL, TEMPLATE_DIR
from services.notify.domain import CHANNELS, IN_APP, NOTIFICATION_RULES
from services.quotes import domain as quotes
from services.registry import SERVICES

QUOTE_PREFIX = "quote_request."
# What notify adds to an event's data before rendering (services/notify/service.py).
ADDED_BY_NOTIFY = frozenset({"customer_name"})
_READ = re.compile(r"\bdata\.([a-z_]+)")
_TOLERATED = re.compile(r"\bdata\.([a-z_]+) is defined")
_PULLED_IN = re.compile(r"{%-?\s*(?:extends|include)\s+\"([^\"]+)\"")


def test_every_quote_domain_event_has_a_contract_published_by_quotes():
    for event_type in quotes.EVENTS:
        assert event_type in EVENTS, event_type
        assert EVENTS[event_type][1] == "quotes", event_type


def test_every_contracted_quote_event_is_one_the_domain_publishes():
    contracted = {t for t in EVENTS if t.startswith(QUOTE_PREFIX)}
    assert contracted == set(quotes.EVENTS)


def test_each_quote_event_has_a_schema_of_its_own():
    schemas = [EVENTS[event_type][0] for event_type in quotes.EVENTS]
    assert len(set(schemas)) == len(schemas)


def test_every_contracted_event_names_a_registered_publisher():
    services = {service.name for service in SERVICES}
    for event_type, (_schema, publisher, summary) in EVENTS.items():
        assert publisher in services, (event_type, publisher)
        assert summary.strip(), event_type


def test_every_notify_rule_names_a_contracted_event():
    for event_type in NOTIFICATION_RULES:
        assert event_type in EVENTS, event_type


def _channels(event_type: str) -> set[str]:
    """Channels a delivery of ``event_type`` can take: messages by preference, plus the
    feed for every audience but a link's addressee (services/notify/domain.py)."""
    rules = NOTIFICATION_RULES[event_type]
    feed = {IN_APP} if any(rule.audience != "addressee" for rule in rules) else set()
    return {*CHANNELS, *feed}


def _files(event_type: str) -> list[Path]:
    parts = {part for channel in _channels(event_type) for part in PARTS_BY_CHANNEL[channel]}
    return [TEMPLATE_DIR / f"{event_type}.{PART_SUFFIXES[part]}" for part in sorted(parts)]


@pytest.mark.parametrize("event_type", sorted(NOTIFICATION_RULES))
def test_every_notifying_event_has_the_templates_of_its_channels(event_type):
    for path in _files(event_type):
        assert path.is_file(), path


def _source(path: Path, seen: set[Path]) -> str:
    """A template's text with the text of what it extends or includes."""
    if path in seen:
        return ""
    seen.add(path)
    text = path.read_text()
    pulled = [_source(TEMPLATE_DIR / name, seen) for name in _PULLED_IN.findall(text)]
    return "\n".join([text, *pulled])


@pytest.mark.parametrize("event_type", sorted(NOTIFICATION_RULES))
def test_notifying_templates_read_only_what_the_contract_declares(event_type):
    schema = EVENTS[event_type][0]
    declared = set(schema._declared_fields) | ADDED_BY_NOTIFY
    for path in _files(event_type):
        text = _source(path, set())
        read = set(_READ.findall(text)) - set(_TOLERATED.findall(text))
        assert read <= declared, (path.name, sorted(read - declared))


def _state() -> dict[str, object]:
    return {
        "quote_request_id": str(uuid.uuid4()),
        "number": "Q-000042",
        "customer_id": str(uuid.uuid4()),
        "unit_id": None,
        "work_order_id": None,
        "status": "in_process",
        "description": "Brakes squeal",
        "assigned_to": None,
        "created_by": str(uuid.uuid4()),
        "created_by_customer": False,
        "visible_to_customer": True,
        "po_number": None,
        "reason": None,
        "version": 2,
        "created_by_name": "Pat",
        "decided_on_behalf": False,
        "decided_at": None,
        "created_at": "2025-03-01T10:00:00+00:00",
        "updated_at": "2025-03-02T11:30:00.123456+00:00",
    }


# What services/quotes/service.py passes to event_data beyond the request's state.
EMITTED_EXTRAS: dict[str, dict[str, object]] = {
    quotes.EVENT_CREATED: {
        "author_kind": "portal",
        "author_name": "Pat",
        "author_id": str(uuid.uuid4()),
    },
    quotes.EVENT_UPDATED: {"previous_status": "in_process"},
    quotes.EVENT_ASSIGNED: {"previous_status": "in_process"},
    quotes.EVENT_STATUS_CHANGED: {"previous_status": "pending"},
    quotes.EVENT_APPROVAL_REQUESTED: {"previous_status": "in_process"},
    **{
        decided: {
            "previous_status": "customer_approval_needed",
            "author_kind": "staff",
            "author_name": "Sam",
            "author_id": str(uuid.uuid4()),
        }
        for decided in (quotes.EVENT_APPROVED, quotes.EVENT_DENIED, quotes.EVENT_CANCELLED)
    },
    quotes.EVENT_COMMENT_ADDED: {
        "comment_id": str(uuid.uuid4()),
        "comment_body": "Tuesday?",
        "comment_created_at": "2025-03-02T11:30:00+00:00",
        "author_kind": "staff",
        "author_name": "Sam",
        "author_id": str(uuid.uuid4()),
    },
    quotes.EVENT_COMMENT_DELETED: {
        "comment_id": str(uuid.uuid4()),
        "comment_deleted_at": "2025-03-02T11:31:00+00:00",
        "author_kind": "staff",
        "author_name": "Sam",
        "author_id": str(uuid.uuid4()),
    },
    quotes.EVENT_ATTACHMENT_ADDED: {
        "attachment_id": str(uuid.uuid4()),
        "filename": "quote.pdf",
        "attachment_kind": "quote_document",
        "content_type": "application/pdf",
        "size": 1234,
        "sha256": "ab" * 32,
        "attachment_created_at": "2025-03-02T11:32:00+00:00",
        "author_kind": "staff",
        "author_name": "Sam",
        "author_id": str(uuid.uuid4()),
    },
}


def test_every_quote_event_has_its_extras_listed():
    assert set(EMITTED_EXTRAS) == set(quotes.EVENTS)


@pytest.mark.parametrize("event_type", sorted(EMITTED_EXTRAS))
def test_each_quote_event_declares_exactly_what_it_carries(event_type):
    data = {**_state(), **EMITTED_EXTRAS[event_type]}
    assert validate_data(event_type, data) == data


@pytest.mark.parametrize("event_type", sorted(EMITTED_EXTRAS))
def test_a_quote_event_refuses_another_events_field(event_type):
    foreign = {"comment_body": "x", "filename": "x.pdf", "previous_status": "pending"}
    field, value = next((k, v) for k, v in foreign.items() if k not in EMITTED_EXTRAS[event_type])
    with pytest.raises(ValidationError) as refused:
        validate_data(event_type, {**_state(), field: value})
    assert field in refused.value.messages


@pytest.mark.parametrize("event_type", sorted(EMITTED_EXTRAS))
def test_a_quote_event_in_the_former_shared_shape_still_loads(event_type):
    """Events published before one schema per type carried every quote field, null
    where it did not apply: they still load (from an outbox, retry or dead queue)."""
    shared = dict.fromkeys(
        (
            "previous_status",
            "comment_id",
            "comment_body",
            "author_kind",
            "author_name",
            "attachment_id",
            "filename",
            "attachment_kind",
        )
    )
    state, own = _state(), EMITTED_EXTRAS[event_type]
    loaded = validate_data(event_type, {**state, **shared, **own})
    assert loaded == {**state, **own}
