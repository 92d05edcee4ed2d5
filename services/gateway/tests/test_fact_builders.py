"""The builders of the directory facts the gateway publishes (issue 7 item 11): each
one's data passes its contract, names only what other services need, and never
carries a secret the row holds."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from marshmallow import ValidationError

from contracts.events import EVENTS, PRIVATE_EVENTS, validate_data
from services.gateway import domain

FACTS = (
    "directory.portal_account.created",
    "directory.portal_account.updated",
    "directory.portal_account.deleted",
)


def account(**overrides):
    values = {
        "id": str(uuid.uuid4()),
        "customer_id": str(uuid.uuid4()),
        "contact_id": None,
        "email": "pat@example.com",
        "first_name": "Pat",
        "last_name": "Portal",
        "time_zone": "Europe/Paris",
        "permissions": ["quotes.request"],
        "unit_ids": None,
        "enabled": True,
        "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        "version": 3,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_portal_account_fact_names_only_what_services_need():
    unit = str(uuid.uuid4())
    contact = str(uuid.uuid4())
    row = account(unit_ids=[uuid.UUID(unit)], contact_id=contact, enabled=False)
    data = domain.portal_account_event(row)
    assert data == {
        "id": row.id,
        "customer_id": row.customer_id,
        "contact_id": contact,
        "name": "Pat Portal",
        "email": "pat@example.com",
        "permissions": ["quotes.request"],
        "unit_ids": [unit],
        "enabled": False,
    }
    assert "$argon2" not in repr(data)
    for event_type in FACTS:
        assert validate_data(event_type, data) == data


def test_portal_account_fact_keeps_null_units_as_every_unit():
    data = domain.portal_account_event(account())
    assert data["unit_ids"] is None
    assert validate_data("directory.portal_account.updated", data)["unit_ids"] is None


def test_portal_account_contract_refuses_a_fact_without_its_scope():
    data = domain.portal_account_event(account())
    for missing in ("permissions", "unit_ids", "enabled", "customer_id"):
        partial = {k: v for k, v in data.items() if k != missing}
        with pytest.raises(ValidationError):
            validate_data("directory.portal_account.created", partial)


def settings_row(**overrides):
    values = {
        "features": {"quotes": False, "unknown_flag": True},
        "notify_new_request_roles": ["manager"],
        "tax_rate_bp": 825,
        "currency": "CAD",
        "approval_terms": "Pay in 30 days",
        "reason_codes": ["phone", "email"],
        "work_order_token_hours": 24,
        "version": 4,
    }
    return SimpleNamespace(**{**values, **overrides})


def test_settings_fact_is_the_tenants_settings_in_full():
    data = domain.settings_event(settings_row())
    assert data == {
        "features": {"quotes": False, "bookings": True, "payments": True, "history": True},
        "notify_new_request_roles": ["manager"],
        "tax_rate_bp": 825,
        "currency": "CAD",
        "approval_terms": "Pay in 30 days",
        "reason_codes": ["phone", "email"],
        "work_order_token_hours": 24,
    }
    assert validate_data("directory.settings.updated", data) == data


def test_a_settings_fact_from_before_the_full_settings_still_loads_as_unknown():
    """Events published before the fields existed (in queues, dead letters) stay valid."""
    old = {"features": {"quotes": True}, "notify_new_request_roles": ["admin"]}
    loaded = validate_data("directory.settings.updated", old)
    assert loaded["notify_new_request_roles"] == ["admin"]
    assert loaded["tax_rate_bp"] is None and loaded["currency"] is None
    assert loaded["reason_codes"] is None and loaded["work_order_token_hours"] is None


def test_customer_fact_carries_its_settings():
    row = SimpleNamespace(
        id=str(uuid.uuid4()),
        name="Fleet Co",
        account_number="AC-1",
        require_invoice_authorization=True,
        portal_features={"quotes": False},
        version=2,
    )
    data = domain.customer_event(row)
    assert data == {
        "id": row.id,
        "name": "Fleet Co",
        "account_number": "AC-1",
        "require_invoice_authorization": True,
        "portal_features": {"quotes": False},
    }
    assert validate_data("directory.customer.updated", data) == data
    old = validate_data("directory.customer.created", {"id": row.id, "name": "Fleet Co"})
    assert old["require_invoice_authorization"] is None and old["portal_features"] is None


def test_no_public_contract_has_a_field_for_a_secret():
    """Only the private link event may carry a token; no contract names a password."""
    for event_type, (schema, _service, _meaning) in EVENTS.items():
        names = set(schema().fields)
        assert not names & {"password", "password_hash", "token_hash"}, event_type
        if event_type not in PRIVATE_EVENTS:
            assert "token" not in names, event_type
