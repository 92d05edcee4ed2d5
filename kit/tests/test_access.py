"""The caller scope (kit.access) and its SQL twin (kit.access_sql): the rule written out
by case, feature switches, and a property test that the predicate and the SQL filter
select the same records in real PostgreSQL for random callers, over every combination of
record values, for a resource with every scope field and for one with only a tenant, a
customer and an author under its own names."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, select
from sqlalchemy.engine import Engine

from kit.access import (
    ALL_FIELDS,
    Fields,
    Scope,
    feature_enabled,
    has_role,
    is_tenant_wide,
    require_feature,
)
from kit.access_sql import columns_of, scope_filter
from kit.context import Actor
from kit.errors import Forbidden
from tests.support import owner_engine, scratch_database

TENANT, OTHER_TENANT = "t-1", "t-2"
CUSTOMER, OTHER_CUSTOMER = "c-1", "c-2"
UNIT_A, UNIT_B = "u-a", "u-b"
WORK_ORDER, OTHER_WORK_ORDER = "w-1", "w-2"
ME, SOMEONE = "me", "someone"


def record(**kw: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "tenant_id": TENANT,
        "customer_id": CUSTOMER,
        "unit_id": None,
        "visible_to_customer": True,
        "created_by": SOMEONE,
        "work_order_id": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def actor(kind: str, **kw: Any) -> Actor:
    return Actor(kind=kind, id=ME, tenant_id=TENANT, **kw)


# --- the scope, case by case -------------------------------------------------------------


def test_staff_and_system_see_their_whole_tenant() -> None:
    for kind in ("staff", "system"):
        scope = Scope.of(actor(kind, roles=("advisor",)))
        assert scope == Scope(tenant_id=TENANT, everything=True)
        assert scope.is_staff
        assert scope.matches(record(visible_to_customer=False, customer_id=OTHER_CUSTOMER))
        assert not scope.matches(record(tenant_id=OTHER_TENANT))


def test_portal_users_see_their_customers_visible_records() -> None:
    scope = Scope.of(actor("portal", customer_id=CUSTOMER))
    assert scope == Scope(tenant_id=TENANT, customer_id=CUSTOMER)
    assert scope.matches(record())
    assert not scope.matches(record(visible_to_customer=False))
    assert not scope.matches(record(customer_id=OTHER_CUSTOMER))
    assert not Scope.of(actor("portal")).matches(record())


def test_unit_restricted_accounts_see_their_units_and_what_they_made() -> None:
    scope = Scope.of(actor("portal", customer_id=CUSTOMER, unit_ids=(UNIT_A,)))
    assert scope == Scope(
        tenant_id=TENANT, customer_id=CUSTOMER, unit_ids=frozenset({UNIT_A}), creator_id=ME
    )
    assert scope.matches(record(unit_id=UNIT_A))
    assert not scope.matches(record(unit_id=UNIT_B))
    assert not scope.matches(record(unit_id=None))
    assert scope.matches(record(unit_id=UNIT_B, created_by=ME))


def test_whole_customer_records_ignore_the_unit_restriction_only() -> None:
    """The customer itself (and what belongs to it as a whole) is seen by an account
    limited to some units, or to none; nothing else widens."""
    customer_row = Fields(
        customer_id="id",
        unit_id=None,
        visible_to_customer=None,
        created_by=None,
        work_order_id=None,
    )
    own, other = (
        SimpleNamespace(tenant_id=TENANT, id=CUSTOMER),
        SimpleNamespace(tenant_id=TENANT, id=OTHER_CUSTOMER),
    )
    for units in ((UNIT_A,), ()):
        restricted = Scope.of(actor("portal", customer_id=CUSTOMER, unit_ids=units))
        assert not restricted.matches(own, customer_row)
        whole = restricted.whole_customer()
        assert whole == Scope(tenant_id=TENANT, customer_id=CUSTOMER)
        assert (whole.kind, whole.caller_id) == ("portal", ME)
        assert whole.matches(own, customer_row) and not whole.matches(other, customer_row)
        assert whole.matches(record(unit_id=UNIT_B))
        assert not whole.matches(record(visible_to_customer=False))
    staff = Scope.of(actor("staff", roles=("technician",)))
    assert staff.whole_customer() == staff and staff.matches(other, customer_row)
    token = Scope.of(actor("token", customer_id=CUSTOMER, work_order_id=WORK_ORDER))
    assert token.whole_customer() == token and not token.whole_customer().matches(own, customer_row)
    for nobody in (actor("portal"), actor("token", customer_id=CUSTOMER), actor("robot")):
        assert not Scope.of(nobody).whole_customer().matches(own, customer_row)


def test_token_holders_see_their_work_order() -> None:
    scope = Scope.of(actor("token", customer_id=CUSTOMER, work_order_id=WORK_ORDER))
    assert scope == Scope(tenant_id=TENANT, customer_id=CUSTOMER, work_order_id=WORK_ORDER)
    assert scope.matches(record(work_order_id=WORK_ORDER))
    assert not scope.matches(record(work_order_id=OTHER_WORK_ORDER))
    assert not scope.matches(record(work_order_id=WORK_ORDER, visible_to_customer=False))
    assert not Scope.of(actor("token", customer_id=CUSTOMER)).matches(record())


def test_unknown_callers_see_nothing() -> None:
    assert Scope.of(actor("robot")).nothing
    assert not Scope.of(actor("robot")).matches(record())


def test_the_scope_carries_who_the_caller_is() -> None:
    scope = Scope.of(actor("staff", roles=("advisor",), read_only=True))
    assert (scope.kind, scope.caller_id, scope.read_only) == ("staff", ME, True)
    assert scope.has_role("advisor", "admin") and not scope.has_role("admin")
    assert Scope.of(actor("system")).has_role("admin")
    portal = Scope.of(actor("portal", customer_id=CUSTOMER, permissions=("quotes.request",)))
    assert portal.has_permission("quotes.request") and not portal.has_permission("payments.make")
    assert not portal.has_role("admin")


def test_roles_are_staffs_and_system_has_them_all() -> None:
    assert is_tenant_wide("staff") and is_tenant_wide("system")
    assert not any(is_tenant_wide(k) for k in ("portal", "token", "robot"))
    assert has_role("staff", ("advisor",), {"advisor", "admin"})
    assert not has_role("staff", ("technician",), {"advisor", "admin"})
    assert has_role("system", (), {"admin"})
    # roles a non-staff caller somehow carries count for nothing
    assert not has_role("portal", ("admin",), {"admin"})


def test_fields_a_resource_lacks_never_widen_the_scope() -> None:
    bare = Fields(unit_id=None, visible_to_customer=None, created_by=None, work_order_id=None)
    assert bare.mapping() == {"tenant_id": "tenant_id", "customer_id": "customer_id"}
    hidden = record(visible_to_customer=False, unit_id=UNIT_A, work_order_id=WORK_ORDER)
    # no visibility field: always visible
    assert Scope.of(actor("portal", customer_id=CUSTOMER)).matches(hidden, bare)
    # no unit field: a unit-restricted account sees only what it made
    restricted = Scope.of(actor("portal", customer_id=CUSTOMER, unit_ids=(UNIT_A,)))
    assert restricted.matches(record(unit_id=UNIT_A))
    assert not restricted.matches(record(unit_id=UNIT_A), bare)
    assert not restricted.matches(record(unit_id=UNIT_A), Fields(unit_id=None))
    assert restricted.matches(record(unit_id=UNIT_A, created_by=ME), Fields(unit_id=None))
    # no work-order field: a token holder sees nothing
    token = Scope.of(actor("token", work_order_id=WORK_ORDER))
    assert not token.matches(hidden, bare)


def test_scope_filter_needs_tenant_and_customer_columns() -> None:
    table = Table("t", MetaData(), Column("tenant_id", String), Column("customer_id", String))
    with pytest.raises(ValueError):
        scope_filter(Scope(tenant_id=TENANT), {"tenant_id": table.c.tenant_id})
    with pytest.raises(ValueError):
        scope_filter(Scope(tenant_id=TENANT), {**table.c, "colour": table.c.tenant_id})


# --- feature switches ----------------------------------------------------------------------


def test_features_are_on_unless_the_tenant_or_the_customer_switches_them_off() -> None:
    assert feature_enabled("quotes", None, None)
    assert not feature_enabled("quotes", {"quotes": False}, None)
    assert not feature_enabled("quotes", None, {"quotes": False})
    # a customer cannot switch on what the tenant switched off
    assert not feature_enabled("quotes", {"quotes": False}, {"quotes": True})
    assert feature_enabled("quotes", {"bookings": False}, {"history": False})


def test_require_feature_gates_portal_users_and_token_holders_never_staff() -> None:
    off = {"quotes": False}
    for kind in ("portal", "token"):
        require_feature("quotes", {"quotes": True}, None, actor(kind))
        with pytest.raises(Forbidden) as caught:
            require_feature("quotes", off, None, actor(kind))
        assert caught.value.code == "feature_disabled"
        with pytest.raises(Forbidden):
            require_feature("quotes", None, off, actor(kind))
    for kind in ("staff", "system"):
        require_feature("quotes", off, off, actor(kind))


# --- predicate and SQL agree, in PostgreSQL --------------------------------------------------

metadata = MetaData()
FULL = Table(
    "access_full",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", String, nullable=False),
    Column("customer_id", String, nullable=False),
    Column("unit_id", String),
    Column("visible_to_customer", Boolean, nullable=False),
    Column("created_by", String, nullable=False),
    Column("work_order_id", String),
)
# A resource with no units, no visibility switch and no work orders, under its own names.
BARE = Table(
    "access_bare",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String, nullable=False),
    Column("customer", String, nullable=False),
    Column("author", String, nullable=False),
)
BARE_FIELDS = Fields(
    tenant_id="tenant",
    customer_id="customer",
    unit_id=None,
    visible_to_customer=None,
    created_by="author",
    work_order_id=None,
)
RESOURCES = {FULL.name: (FULL, ALL_FIELDS), BARE.name: (BARE, BARE_FIELDS)}


TENANTS = (TENANT, OTHER_TENANT)
CUSTOMERS = (CUSTOMER, OTHER_CUSTOMER)
PEOPLE = (ME, SOMEONE)
UNITS = (UNIT_A, UNIT_B)
WORK_ORDERS = (WORK_ORDER, OTHER_WORK_ORDER)
# Every combination of the values the rule reads: each resource's records, once.
WORLD: dict[str, list[dict[str, Any]]] = {
    FULL.name: [
        dict(zip(FULL.c.keys()[1:], values, strict=True))
        for values in itertools.product(
            TENANTS, CUSTOMERS, (None, *UNITS), (True, False), PEOPLE, (None, *WORK_ORDERS)
        )
    ],
    BARE.name: [
        dict(zip(BARE.c.keys()[1:], values, strict=True))
        for values in itertools.product(TENANTS, CUSTOMERS, PEOPLE)
    ],
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with scratch_database() as (admin, _urls), owner_engine(admin) as eng:
        metadata.create_all(eng)
        with eng.begin() as conn:
            for name, rows in WORLD.items():
                table = RESOURCES[name][0]
                conn.execute(table.insert(), [{"id": n, **r} for n, r in enumerate(rows)])
        yield eng


actors = st.builds(
    Actor,
    kind=st.sampled_from(["staff", "portal", "token", "system", "robot"]),
    id=st.sampled_from(PEOPLE),
    tenant_id=st.sampled_from(TENANTS),
    roles=st.sampled_from([(), ("advisor",)]),
    customer_id=st.one_of(st.none(), st.sampled_from(CUSTOMERS)),
    unit_ids=st.one_of(st.none(), st.lists(st.sampled_from(UNITS), unique=True).map(tuple)),
    work_order_id=st.one_of(st.none(), st.sampled_from(WORK_ORDERS)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actor=actors, name=st.sampled_from(sorted(RESOURCES)), whole=st.booleans())
def test_the_predicate_and_the_sql_filter_agree(
    engine: Engine, actor: Actor, name: str, whole: bool
) -> None:
    """Random callers (their scope, or its whole-customer form) over every combination of
    record values, for both resources."""
    table, fields = RESOURCES[name]
    scope = Scope.of(actor).whole_customer() if whole else Scope.of(actor)
    with engine.connect() as conn:
        condition = scope_filter(scope, columns_of(table.c, fields))
        in_sql = set(conn.scalars(select(table.c.id).where(condition)))
    rows = WORLD[name]
    in_python = {n for n, row in enumerate(rows) if scope.matches(SimpleNamespace(**row), fields)}
    assert in_sql == in_python
