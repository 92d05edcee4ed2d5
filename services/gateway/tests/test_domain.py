"""Unit tests of the gateway's pure rules: tokens <-> actors, rate limits, directory data."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.access import Scope
from kit.context import PORTAL_PERMISSIONS, STAFF_ROLES, Actor
from kit.errors import Forbidden, ValidationFailed, VersionConflict, status_for
from services.gateway import domain as d
from tests import factories

TENANT = str(uuid.UUID(int=1))
CUSTOMER = str(uuid.UUID(int=2))
OTHER_CUSTOMER = str(uuid.UUID(int=3))
USER = str(uuid.UUID(int=4))
SESSION = str(uuid.UUID(int=5))
UNIT_A = str(uuid.UUID(int=11))
UNIT_B = str(uuid.UUID(int=12))

uuids = st.uuids().map(str)


staff = partial(factories.staff, tenant=TENANT, id=USER, name="Ada Admin")


def portal(unit_ids: tuple[str, ...] | None = None, read_only: bool = False) -> Actor:
    return factories.portal(
        CUSTOMER,
        tenant=TENANT,
        permissions=("quotes.approve",),
        units=unit_ids,
        read_only=read_only,
        id=USER,
        name="Pat",
    )


# --- claims <-> actor --------------------------------------------------------------------------
@given(
    id=uuids,
    tenant=uuids,
    sid=uuids,
    name=st.text(max_size=50),
    roles=st.lists(st.sampled_from(STAFF_ROLES), min_size=1, unique=True),
)
def test_staff_claims_round_trip(
    id: str, tenant: str, sid: str, name: str, roles: list[str]
) -> None:
    actor = Actor(kind="staff", id=id, tenant_id=tenant, roles=tuple(roles), name=name)
    assert d.actor_from_claims(d.claims_for(actor, sid)) == actor


@given(
    id=uuids,
    tenant=uuids,
    sid=uuids,
    customer=uuids,
    read_only=st.booleans(),
    perms=st.lists(st.sampled_from(PORTAL_PERMISSIONS), unique=True),
    units=st.none() | st.lists(uuids, max_size=5).map(tuple),
)
def test_portal_claims_round_trip(
    id: str,
    tenant: str,
    sid: str,
    customer: str,
    read_only: bool,
    perms: list[str],
    units: tuple[str, ...] | None,
) -> None:
    actor = Actor(
        kind="portal",
        id=id,
        tenant_id=tenant,
        permissions=tuple(perms),
        customer_id=customer,
        unit_ids=units,
        read_only=read_only,
    )
    assert d.actor_from_claims(d.claims_for(actor, sid)) == actor


def test_claims_carry_session_and_no_foreign_fields() -> None:
    claims = d.claims_for(staff("admin"), SESSION)
    assert claims["sid"] == SESSION and claims["tid"] == TENANT and claims["roles"] == ["admin"]
    assert "perms" not in claims and "cid" not in claims
    assert d.claims_for(portal(read_only=True), SESSION)["ro"] is True
    assert "ro" not in d.claims_for(portal(), SESSION)


STAFF_CLAIMS = d.claims_for(staff("admin", "manager"), SESSION)
PORTAL_CLAIMS = d.claims_for(portal((UNIT_A,)), SESSION)


@pytest.mark.parametrize(
    "base, change",
    [
        (STAFF_CLAIMS, {"tid": None}),
        (STAFF_CLAIMS, {"tid": "acme"}),
        (STAFF_CLAIMS, {"sub": 42}),
        (STAFF_CLAIMS, {"sid": "not-a-uuid"}),
        (STAFF_CLAIMS, {"kind": "root"}),
        (STAFF_CLAIMS, {"kind": None}),
        (STAFF_CLAIMS, {"roles": []}),
        (STAFF_CLAIMS, {"roles": ["superuser"]}),
        (STAFF_CLAIMS, {"roles": "admin"}),
        (STAFF_CLAIMS, {"roles": 5}),
        (STAFF_CLAIMS, {"roles": [["admin"]]}),
        (PORTAL_CLAIMS, {"cid": None}),
        (PORTAL_CLAIMS, {"cid": "customer-1"}),
        (PORTAL_CLAIMS, {"perms": 7}),
        (PORTAL_CLAIMS, {"perms": None}),
        (PORTAL_CLAIMS, {"units": "all"}),
        (PORTAL_CLAIMS, {"units": [1, 2]}),
        (PORTAL_CLAIMS, {"units": ["unit-a"]}),
        (PORTAL_CLAIMS, {"kind": "token"}),
    ],
)
def test_tampered_claims_describe_nobody(base: dict, change: dict) -> None:
    assert d.actor_from_claims({**base, **change}) is None


@pytest.mark.parametrize("missing", ["tid", "sub", "sid", "kind"])
def test_claims_missing_a_key_describe_nobody(missing: str) -> None:
    claims = dict(STAFF_CLAIMS)
    del claims[missing]
    assert d.actor_from_claims(claims) is None


def test_unknown_roles_and_permissions_are_dropped() -> None:
    actor = d.actor_from_claims({**STAFF_CLAIMS, "roles": ["admin", "god"]})
    assert actor is not None and actor.roles == ("admin",)
    actor = d.actor_from_claims({**PORTAL_CLAIMS, "perms": ["quotes.approve", "root"]})
    assert actor is not None and actor.permissions == ("quotes.approve",)


def test_portal_claims_without_unit_list_mean_all_units() -> None:
    actor = d.actor_from_claims({**PORTAL_CLAIMS, "units": None})
    assert actor is not None and actor.unit_ids is None


# --- rate limits -------------------------------------------------------------------------------
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "count, elapsed, expected",
    [
        (0, 0, 0),
        (4, 10, 0),  # under the limit
        (5, 0, 300),  # at the limit: wait out the whole window
        (5, 10, 290),
        (5, 299.5, 1),  # never less than a second while blocked
        (5, 300, 0),  # window over
        (9, 1000, 0),
    ],
)
def test_retry_after(count: int, elapsed: float, expected: int) -> None:
    start = NOW - timedelta(seconds=elapsed)
    assert d.retry_after(start, count, NOW, limit=5, window_seconds=300) == expected


def test_rate_limits_from_env() -> None:
    limits = d.RateLimits.from_env({"LOGIN_LIMIT_PER_ACCOUNT": "3"})
    assert (limits.account, limits.address, limits.window_seconds) == (3, 30, 300)


# --- contacts, people, roles ---------------------------------------------------------------------
@pytest.mark.parametrize("notify_by", d.NOTIFY_BY)
@pytest.mark.parametrize("email", [None, "pat@example.com"])
@pytest.mark.parametrize("phone", [None, "+1 (555) 123-4567"])
def test_check_contact_matrix(notify_by: str, email: str | None, phone: str | None) -> None:
    errors = d.check_contact(email, phone, notify_by)
    needs_email = notify_by in ("email", "both")
    needs_phone = notify_by in ("sms", "both")
    assert ("email" in errors) == (needs_email and email is None)
    assert ("phone" in errors) == (needs_phone and phone is None)


@pytest.mark.parametrize(
    "email, phone, field",
    [
        ("not-an-email", None, "email"),
        ("a@b", None, "email"),
        (None, "call me", "phone"),
        (None, "12", "phone"),
    ],
)
def test_check_contact_refuses_malformed_values(
    email: str | None, phone: str | None, field: str
) -> None:
    assert field in d.check_contact(email, phone, "none")


def test_check_roles() -> None:
    assert d.check_roles(["manager", "advisor", "manager"]) == ["manager", "advisor"]
    for bad in ([], ["wizard"], ["admin", "wizard"]):
        with pytest.raises(ValidationFailed) as err:
            d.check_roles(bad)
        assert "roles" in (err.value.errors or {})


def test_check_permissions() -> None:
    assert d.check_permissions(["quotes.approve", "quotes.approve"]) == ["quotes.approve"]
    assert d.check_permissions([]) == []
    with pytest.raises(ValidationFailed):
        d.check_permissions(["quotes.approve", "admin"])


def test_time_zones() -> None:
    zones = d.time_zones()
    assert {"UTC", "America/Toronto", "Europe/Paris"} <= zones
    assert d.check_person("Ada", "Lovelace", "Europe/London") == {}
    assert "time_zone" in d.check_person("Ada", "Lovelace", "Mars/Olympus_Mons")
    assert "time_zone" in d.check_person("Ada", "Lovelace", "")
    assert d.check_person(None, None, None) == {}


def test_check_person_names() -> None:
    assert set(d.check_person("  ", "\t")) == {"first_name", "last_name"}


def test_emails() -> None:
    assert d.normalise_email("  Pat@Example.COM ") == "pat@example.com"
    assert d.check_email("pat@example.com") == {}
    assert "email" in d.check_email("pat@@example.com")
    assert "email" in d.check_email("x" * 65 + "@example.com")


# --- who may do what -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "actor, allowed",
    [
        (staff("admin"), True),
        (staff("manager"), True),
        (staff("advisor"), True),
        (staff("technician"), False),
        (portal(), False),
    ],
)
def test_require_directory_writer(actor: Actor, allowed: bool) -> None:
    if allowed:
        d.require_directory_writer(actor)
    else:
        with pytest.raises(Forbidden):
            d.require_directory_writer(actor)


def test_preview_is_read_only() -> None:
    d.require_writable(portal())
    with pytest.raises(Forbidden):
        d.require_writable(portal(read_only=True))


def directory_row(**kw: str) -> SimpleNamespace:
    return SimpleNamespace(tenant_id=TENANT, **kw)


def sees_customer(actor: Actor, customer_id: str) -> bool:
    """How the directory checks a customer: the caller's whole-customer scope."""
    scope = Scope.of(actor).whole_customer()
    return scope.matches(directory_row(id=customer_id), d.CUSTOMER_FIELDS)


def units_seen(actor: Actor, customer_id: str = CUSTOMER) -> set[str]:
    """Which of a customer's units A and B the directory lists to the caller."""
    scope = Scope.of(actor)
    return {
        unit
        for unit in (UNIT_A, UNIT_B)
        if scope.matches(directory_row(id=unit, customer_id=customer_id), d.UNIT_FIELDS)
    }


def test_customer_and_unit_scope() -> None:
    assert sees_customer(staff("technician"), OTHER_CUSTOMER)
    assert sees_customer(portal(), CUSTOMER)
    assert not sees_customer(portal(), OTHER_CUSTOMER)
    # a unit-restricted account still sees its own customer, even limited to no units
    assert sees_customer(portal((UNIT_A,)), CUSTOMER) and sees_customer(portal(()), CUSTOMER)
    assert not sees_customer(portal((UNIT_A,)), OTHER_CUSTOMER)
    token = factories.token(None, tenant=TENANT, customer=CUSTOMER, id=USER)
    assert not sees_customer(token, CUSTOMER)
    holder = replace(token, work_order_id=str(uuid.UUID(int=21)))
    assert not sees_customer(holder, CUSTOMER) and units_seen(holder) == set()
    customerless = factories.portal(None, tenant=TENANT, id=USER)
    assert not sees_customer(customerless, CUSTOMER) and units_seen(customerless) == set()
    assert units_seen(staff("admin")) == {UNIT_A, UNIT_B}
    assert units_seen(staff("admin"), OTHER_CUSTOMER) == {UNIT_A, UNIT_B}
    assert units_seen(portal()) == {UNIT_A, UNIT_B}
    assert units_seen(portal(), OTHER_CUSTOMER) == set()
    assert units_seen(portal((UNIT_A,))) == {UNIT_A}
    assert units_seen(portal(())) == set()
    other_tenant = replace(staff("admin"), tenant_id=str(uuid.UUID(int=99)))
    assert not sees_customer(other_tenant, CUSTOMER) and units_seen(other_tenant) == set()


def test_check_version() -> None:
    d.check_version(3, None)
    d.check_version(3, 3)
    with pytest.raises(VersionConflict) as err:
        d.check_version(3, 2)
    assert status_for(err.value.code) == 409


def test_admin_cannot_lock_themselves_out() -> None:
    admin = staff("admin")
    assert d.check_self_change(admin, USER, ["admin", "manager"], True) == {}
    assert d.check_self_change(admin, USER, None, None) == {}
    assert set(d.check_self_change(admin, USER, ["manager"], False)) == {"roles", "active"}
    other = str(uuid.UUID(int=99))
    assert d.check_self_change(admin, other, ["technician"], False) == {}


def test_narrowing_access() -> None:
    assert d.narrows(["admin", "manager"], ["admin"])
    assert not d.narrows(["admin"], ["admin", "manager"])
    assert not d.narrows([], [])
    assert d.narrows_units(None, [UNIT_A])
    assert d.narrows_units([UNIT_A, UNIT_B], [UNIT_A])
    assert d.narrows_units([UNIT_A], [])
    assert not d.narrows_units([UNIT_A], None)
    assert not d.narrows_units(None, None)
    assert not d.narrows_units([UNIT_A], [UNIT_A, UNIT_B])


@pytest.mark.parametrize(
    "disabled, narrowed, password, reason",
    [
        (False, False, False, None),
        (True, True, True, "subject_disabled"),
        (False, True, True, "access_changed"),
        (False, False, True, "password_changed"),
    ],
)
def test_revoke_reason(disabled: bool, narrowed: bool, password: bool, reason: str | None) -> None:
    assert d.revoke_reason(disabled=disabled, narrowed=narrowed, password=password) == reason


# --- directory data ------------------------------------------------------------------------------
def test_units() -> None:
    assert d.check_unit("", "", "", "T-12") == {}
    assert "_schema" in d.check_unit(" ", "", "", "")
    assert d.check_unit_ids([UNIT_A], [UNIT_A, UNIT_B]) == {}
    assert d.check_unit_ids([], []) == {}
    errors = d.check_unit_ids([UNIT_A, OTHER_CUSTOMER], [UNIT_A])
    assert OTHER_CUSTOMER in errors["unit_ids"][0]


def test_default_notify_by_always_passes_check_contact() -> None:
    for email in (None, "pat@example.com"):
        for phone in (None, "+15551234567"):
            choice = d.default_notify_by(email, phone)
            assert d.check_contact(email, phone, choice) == {}
    assert d.default_notify_by("pat@example.com", "+15551234567") == "email"


def test_full_name() -> None:
    assert d.full_name("Carl", "Contact") == "Carl Contact"
    assert d.full_name("Cher", "") == "Cher"


# --- settings ------------------------------------------------------------------------------------
def test_default_settings() -> None:
    s = d.default_settings()
    assert s["work_order_token_hours"] == 48 and s["currency"] == "USD"
    assert s["features"] == {f: True for f in d.TENANT_FEATURES}
    s["features"]["quotes"] = False  # a fresh copy each time
    assert d.default_settings()["features"]["quotes"] is True


def test_effective_features() -> None:
    assert d.effective_features(None) == dict(d.DEFAULT_FEATURES)
    merged = d.effective_features({"payments": False, "legacy": True}, {"history": False})
    assert merged == {"quotes": True, "bookings": True, "payments": False, "history": False}


def test_clean_reason_codes() -> None:
    assert d.clean_reason_codes([" Warranty ", "Warranty", "Customer called"]) == [
        "Warranty",
        "Customer called",
    ]
    assert d.clean_reason_codes([]) == []
    for bad in (["   "], ["x" * 65], [f"code {i}" for i in range(51)]):
        with pytest.raises(ValidationFailed):
            d.clean_reason_codes(bad)
    assert len(d.clean_reason_codes([f"code {i}" for i in range(50)])) == 50


def test_settings_take_only_currencies_money_knows() -> None:
    from services.gateway.api_staff import SettingsPatch

    assert SettingsPatch().load({"currency": "CAD"}) == {"currency": "CAD"}
    for bad in ("usd", "US", "USDX", "U$D", "XYZ"):
        assert "currency" in SettingsPatch().validate({"currency": bad})
