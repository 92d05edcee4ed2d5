"""Unit tests of the quote-request rules: state machine, permissions, scope, input."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, replace
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit.context import Actor
from kit.errors import (
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    VersionConflict,
    status_for,
)
from services.quotes import domain as d
from tests import factories

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
CUSTOMER = str(uuid.UUID(int=1))
OTHER_CUSTOMER = str(uuid.UUID(int=2))
UNIT_A = str(uuid.UUID(int=11))
UNIT_B = str(uuid.UUID(int=12))
WORK_ORDER = str(uuid.UUID(int=21))
OTHER_WORK_ORDER = str(uuid.UUID(int=22))
USER = str(uuid.UUID(int=31))


@dataclass(frozen=True)
class Quote:
    tenant_id: str = TENANT
    customer_id: str = CUSTOMER
    unit_id: str | None = None
    work_order_id: str | None = WORK_ORDER
    visible_to_customer: bool = True
    status: str = d.PENDING
    description: str = "Replace the hydraulic hose"
    assigned_to: str | None = None
    created_by: str = "staff-1"


staff = partial(factories.staff, tenant=TENANT, id="staff-1")


def portal(
    *permissions: str,
    customer: str | None = CUSTOMER,
    units: tuple[str, ...] | None = None,
    read_only: bool = False,
) -> Actor:
    return factories.portal(
        customer,
        tenant=TENANT,
        permissions=permissions,
        units=units,
        read_only=read_only,
        id="portal-1",
    )


def token(work_order: str | None = WORK_ORDER, customer: str | None = CUSTOMER) -> Actor:
    return factories.token(
        work_order, tenant=TENANT, customer=customer, views=("estimate",), id="token-1"
    )


SYSTEM = factories.system(TENANT)
INACTIVE_USER = str(uuid.UUID(int=32))
# What the service knows of the directory in most tests: both units are the customer's,
# USER is active (INACTIVE_USER is not in active_staff), OTHER_CUSTOMER is unknown.
KNOWN = d.Known(
    customers=frozenset({CUSTOMER}),
    unit_customers={UNIT_A: CUSTOMER, UNIT_B: CUSTOMER},
    active_staff=frozenset({USER}),
)
BOTH = (d.PERM_REQUEST, d.PERM_APPROVE)

ACTORS: dict[str, Actor] = {
    "admin": staff("admin"),
    "manager": staff("manager"),
    "advisor": staff("advisor"),
    "technician": staff("technician"),
    "roleless_staff": staff(),
    "portal_full": portal(*BOTH),
    "portal_request": portal(d.PERM_REQUEST),
    "portal_approve": portal(d.PERM_APPROVE),
    "portal_none": portal(),
    "preview": portal(*BOTH, read_only=True),
    "token": token(),
    "system": SYSTEM,
}

# ------------------------------------------------------------------------------------
# state machine

EXPECTED_MOVES = {
    ("pending", "in_process"),
    ("pending", "cancelled"),
    ("in_process", "customer_approval_needed"),
    ("in_process", "cancelled"),
    ("customer_approval_needed", "approved"),
    ("customer_approval_needed", "denied"),
    ("customer_approval_needed", "in_process"),
    ("customer_approval_needed", "cancelled"),
}
ALL_STATUSES = [
    "pending",
    "in_process",
    "customer_approval_needed",
    "approved",
    "denied",
    "cancelled",
]


def test_statuses_are_the_contract_ones():
    assert list(d.STATUSES) == ALL_STATUSES
    assert set(d.TRANSITIONS) == set(ALL_STATUSES)
    assert sorted(d.FINAL_STATUSES) == ["approved", "cancelled", "denied"]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(ALL_STATUSES, repeat=2)))
def test_every_pair_of_states(current, target):
    if (current, target) in EXPECTED_MOVES:
        d.check_transition(current, target)
        assert target in d.TRANSITIONS[current]
    else:
        with pytest.raises(InvalidTransition) as err:
            d.check_transition(current, target)
        assert err.value.code == "invalid_transition"
        assert target not in d.TRANSITIONS[current]


@pytest.mark.parametrize(
    ("current", "target"),
    [("pending", "bogus"), ("bogus", "pending"), ("", "cancelled"), ("approved", "")],
)
def test_unknown_states_are_invalid_transitions(current, target):
    with pytest.raises(InvalidTransition):
        d.check_transition(current, target)


def test_cancel_from_every_non_final_state_and_nothing_leaves_a_final_one():
    for status in ALL_STATUSES:
        if status in d.FINAL_STATUSES:
            assert d.TRANSITIONS[status] == frozenset()
        else:
            assert "cancelled" in d.TRANSITIONS[status]


def test_transitions_cannot_be_mutated():
    with pytest.raises(TypeError):
        d.TRANSITIONS["approved"] = frozenset({"pending"})  # type: ignore[index]


@pytest.mark.parametrize(
    ("target", "event"),
    [
        ("in_process", "quote_request.status_changed"),
        ("pending", "quote_request.status_changed"),
        ("customer_approval_needed", "quote_request.approval_requested"),
        ("approved", "quote_request.approved"),
        ("denied", "quote_request.denied"),
        ("cancelled", "quote_request.cancelled"),
    ],
)
def test_event_for_transition(target, event):
    assert d.event_for_transition(target) == event


def test_event_for_unknown_status_is_a_bug():
    with pytest.raises(ValueError):
        d.event_for_transition("archived")


def test_event_names():
    assert d.EVENT_CREATED == "quote_request.created"
    assert d.EVENT_UPDATED == "quote_request.updated"
    assert d.EVENT_ASSIGNED == "quote_request.assigned"
    assert d.EVENT_COMMENT_ADDED == "quote_request.comment_added"
    assert d.EVENT_COMMENT_DELETED == "quote_request.comment_deleted"
    assert d.EVENT_ATTACHMENT_ADDED == "quote_request.attachment_added"
    assert len(set(d.EVENTS)) == 11
    assert all(name.startswith("quote_request.") for name in d.EVENTS)


def test_check_version():
    d.check_version(3, 3)
    d.check_version(3, None)
    with pytest.raises(VersionConflict) as err:
        d.check_version(3, 2)
    assert err.value.code == "version_conflict"


# ------------------------------------------------------------------------------------
# scope


@pytest.mark.parametrize("name", ["admin", "manager", "advisor", "technician", "system"])
def test_staff_see_every_quote_of_their_tenant(name):
    actor = ACTORS[name]
    hidden = Quote(customer_id=OTHER_CUSTOMER, visible_to_customer=False, unit_id=UNIT_B)
    assert d.can_see(actor, hidden)
    d.ensure_visible(actor, hidden)


@pytest.mark.parametrize("name", sorted(ACTORS))
def test_nobody_sees_another_tenant(name):
    quote = Quote(tenant_id=OTHER_TENANT)
    assert not d.can_see(ACTORS[name], quote)
    with pytest.raises(NotFound) as err:
        d.ensure_visible(ACTORS[name], quote)
    assert err.value.code == "not_found"


@pytest.mark.parametrize(
    ("actor", "quote", "visible"),
    [
        (portal(), Quote(), True),
        (portal(), Quote(customer_id=OTHER_CUSTOMER), False),
        (portal(), Quote(visible_to_customer=False), False),
        (portal(units=(UNIT_A,)), Quote(unit_id=UNIT_A), True),
        (portal(units=(UNIT_A,)), Quote(unit_id=UNIT_B), False),
        # a restricted account: its units, and whatever it created itself; nothing else
        (portal(units=(UNIT_A,)), Quote(unit_id=None), False),
        (portal(units=(UNIT_A,)), Quote(unit_id=None, created_by="portal-1"), True),
        (portal(units=(UNIT_A,)), Quote(unit_id=UNIT_B, created_by="portal-1"), True),
        (portal(units=(UNIT_A,)), Quote(unit_id=None, created_by="portal-2"), False),
        (portal(units=()), Quote(unit_id=UNIT_A), False),
        (portal(units=()), Quote(unit_id=None), False),
        (portal(units=()), Quote(unit_id=None, created_by="portal-1"), True),
        (portal(units=None), Quote(unit_id=None), True),
        (portal(units=None), Quote(unit_id=UNIT_B), True),
        (portal(customer=None), Quote(), False),
        (portal(*BOTH, read_only=True), Quote(), True),
        (token(), Quote(), True),
        (token(), Quote(work_order_id=OTHER_WORK_ORDER), False),
        (token(), Quote(work_order_id=None), False),
        (token(), Quote(visible_to_customer=False), False),
        (token(), Quote(customer_id=OTHER_CUSTOMER), False),
        (token(customer=None), Quote(customer_id=OTHER_CUSTOMER), True),
        (token(work_order=None), Quote(work_order_id=None), False),
        (Actor(kind="robot", id="x", tenant_id=TENANT, roles=("admin",)), Quote(), False),
    ],
)
def test_customer_side_scope(actor, quote, visible):
    assert d.can_see(actor, quote) is visible
    if visible:
        d.ensure_visible(actor, quote)
    else:
        with pytest.raises(NotFound):
            d.ensure_visible(actor, quote)


def test_list_scope_describes_the_filter():
    assert d.list_scope(staff("advisor")) == d.Scope(tenant_id=TENANT, everything=True)
    assert d.list_scope(portal(units=(UNIT_A,))) == d.Scope(
        tenant_id=TENANT, customer_id=CUSTOMER, unit_ids=frozenset({UNIT_A}), creator_id="portal-1"
    )
    assert d.list_scope(portal()) == d.Scope(tenant_id=TENANT, customer_id=CUSTOMER)
    assert d.list_scope(token()) == d.Scope(
        tenant_id=TENANT, customer_id=CUSTOMER, work_order_id=WORK_ORDER
    )
    assert d.list_scope(portal(customer=None)).nothing


ids = st.sampled_from([CUSTOMER, OTHER_CUSTOMER])
units = st.one_of(st.none(), st.sampled_from([UNIT_A, UNIT_B]))
work_orders = st.one_of(st.none(), st.sampled_from([WORK_ORDER, OTHER_WORK_ORDER]))
quotes = st.builds(
    Quote,
    tenant_id=st.sampled_from([TENANT, OTHER_TENANT]),
    customer_id=ids,
    unit_id=units,
    work_order_id=work_orders,
    visible_to_customer=st.booleans(),
    status=st.sampled_from(ALL_STATUSES),
    created_by=st.sampled_from(["someone", "someone-else"]),
)
actors = st.builds(
    Actor,
    kind=st.sampled_from(["staff", "portal", "token", "system", "other"]),
    id=st.just("someone"),
    tenant_id=st.sampled_from([TENANT, OTHER_TENANT]),
    roles=st.lists(st.sampled_from(["admin", "technician"]), max_size=2).map(tuple),
    customer_id=st.one_of(st.none(), ids),
    unit_ids=st.one_of(st.none(), st.lists(st.sampled_from([UNIT_A, UNIT_B])).map(tuple)),
    work_order_id=work_orders,
    read_only=st.booleans(),
)


def oracle(actor: Actor, quote: Quote) -> bool:
    """The scope rules of API.md, written out independently of the domain."""
    if actor.tenant_id != quote.tenant_id:
        return False
    if actor.kind in ("staff", "system"):
        return True
    if not quote.visible_to_customer:
        return False
    if actor.kind == "portal":
        if actor.customer_id is None or quote.customer_id != actor.customer_id:
            return False
        if actor.unit_ids is None:
            return True
        # restricted to some units: those units' records and its own, nothing else
        return quote.unit_id in actor.unit_ids or quote.created_by == actor.id
    if actor.kind == "token":
        if actor.work_order_id is None or quote.work_order_id != actor.work_order_id:
            return False
        return actor.customer_id is None or actor.customer_id == quote.customer_id
    return False


@given(actors, quotes)
def test_scope_matches_the_written_rules(actor, quote):
    assert d.can_see(actor, quote) is oracle(actor, quote)
    assert d.list_scope(actor).matches(quote) is oracle(actor, quote)


@given(actors, quotes)
def test_out_of_scope_is_always_not_found_whatever_the_operation(actor, quote):
    if oracle(actor, quote):
        return
    operations = [
        lambda: d.approve(actor, quote),
        lambda: d.deny(actor, quote),
        lambda: d.cancel(actor, quote),
        lambda: d.authorize_transition(actor, quote, "in_process"),
        lambda: d.plan_patch(actor, quote, {"description": "x"}),
        lambda: comment(actor, quote, "hello"),
        lambda: delete_comment(actor, quote),
        lambda: attach(actor, quote, "quote_document"),
    ]
    for operation in operations:
        with pytest.raises(NotFound):
            operation()


# ------------------------------------------------------------------------------------
# create


def test_portal_create_is_forced_to_its_customer_and_visible():
    new = d.prepare_create(
        portal(d.PERM_REQUEST),
        description="  Quote a new windshield \n",
        customer_id=OTHER_CUSTOMER,
        visible_to_customer=False,
        unit_id=UNIT_A.upper(),
        work_order_id=WORK_ORDER,
        known=KNOWN,
    )
    assert new == d.NewQuote(
        customer_id=CUSTOMER,
        description="Quote a new windshield",
        unit_id=UNIT_A,
        work_order_id=WORK_ORDER,
        visible_to_customer=True,
        created_by_customer=True,
        created_by="portal-1",
        status="pending",
        event="quote_request.created",
    )


@pytest.mark.parametrize("permissions", [(), (d.PERM_APPROVE,), ("bookings.request",)])
def test_portal_create_needs_quotes_request(permissions):
    with pytest.raises(Forbidden) as err:
        d.prepare_create(portal(*permissions), description="x")
    assert err.value.code == "permission_required"


def test_portal_without_customer_cannot_create():
    with pytest.raises(Forbidden) as err:
        d.prepare_create(portal(d.PERM_REQUEST, customer=None), description="x")
    assert err.value.code == "forbidden"


def test_portal_unit_restriction_on_create():
    actor = portal(d.PERM_REQUEST, units=(UNIT_A,))
    assert d.prepare_create(actor, description="x", unit_id=UNIT_A, known=KNOWN).unit_id == UNIT_A
    assert d.prepare_create(actor, description="x").unit_id is None
    with pytest.raises(NotFound) as err:
        d.prepare_create(actor, description="x", unit_id=UNIT_B, known=KNOWN)
    assert err.value.errors == {"unit_id": ["unknown unit"]}


def test_known_units_and_work_orders_are_enforced():
    actor = portal(d.PERM_REQUEST)
    with pytest.raises(NotFound) as err:
        d.prepare_create(
            actor,
            description="x",
            unit_id=UNIT_B,
            work_order_id=OTHER_WORK_ORDER,
            known=d.Known(unit_customers={UNIT_A: CUSTOMER}),
            known_work_order_ids={WORK_ORDER},
        )
    assert err.value.errors == {
        "unit_id": ["unknown unit"],
        "work_order_id": ["unknown work order"],
    }


def test_malformed_input_is_a_422_before_any_unknown_reference():
    with pytest.raises(ValidationFailed) as err:
        d.prepare_create(staff("admin"), description=" ", customer_id=OTHER_CUSTOMER, known=KNOWN)
    assert set(err.value.errors or {}) == {"description"}


def test_staff_create_refuses_a_customer_the_service_does_not_know():
    """Another tenant's customer, or one never heard of, is simply not known here: 404,
    the same answer either way (never revealing that it exists elsewhere)."""
    with pytest.raises(NotFound) as err:
        d.prepare_create(staff("admin"), description="x", customer_id=OTHER_CUSTOMER, known=KNOWN)
    assert err.value.errors == {"customer_id": ["unknown customer"]}
    with pytest.raises(NotFound) as err:  # nothing known: nothing accepted
        d.prepare_create(staff("admin"), description="x", customer_id=CUSTOMER)
    assert err.value.errors == {"customer_id": ["unknown customer"]}


@pytest.mark.parametrize(
    "unit_customers",
    [{}, {UNIT_A: OTHER_CUSTOMER}],
    ids=["unknown_unit", "unit_of_another_customer"],
)
@pytest.mark.parametrize("who", ["staff", "portal", "portal_restricted"])
def test_a_unit_must_be_a_known_unit_of_the_quotes_customer(unit_customers, who):
    actor = {
        "staff": staff("advisor"),
        "portal": portal(d.PERM_REQUEST),
        "portal_restricted": portal(d.PERM_REQUEST, units=(UNIT_A,)),
    }[who]
    known = d.Known(customers=frozenset({CUSTOMER}), unit_customers=unit_customers)
    with pytest.raises(NotFound) as err:
        d.prepare_create(actor, description="x", customer_id=CUSTOMER, unit_id=UNIT_A, known=known)
    assert err.value.errors == {"unit_id": ["unknown unit"]}


def test_a_portal_users_customer_comes_from_its_identity_not_the_directory_copy():
    """A portal user's customer is the one its signed identity names: no reference to
    check, so a brand-new customer's portal user is never refused for lag."""
    new = d.prepare_create(portal(d.PERM_REQUEST), description="x", known=d.Known())
    assert new.customer_id == CUSTOMER


@pytest.mark.parametrize(
    "assignee", [OTHER_CUSTOMER, INACTIVE_USER], ids=["unknown_or_other_tenant", "inactive"]
)
def test_patch_refuses_an_assignee_who_is_not_an_active_staff_member(assignee):
    with pytest.raises(NotFound) as err:
        d.plan_patch(staff("manager"), Quote(), {"assigned_to": assignee}, known=KNOWN)
    assert err.value.errors == {"assigned_to": ["unknown or inactive staff member"]}


def test_patch_keeps_or_clears_an_assignee_without_asking_the_directory():
    quote = Quote(assigned_to=INACTIVE_USER)
    same = d.plan_patch(staff("manager"), quote, {"assigned_to": INACTIVE_USER})
    assert dict(same.changes) == {}
    cleared = d.plan_patch(staff("manager"), quote, {"assigned_to": None})
    assert dict(cleared.changes) == {"assigned_to": None}


@pytest.mark.parametrize("role", ["admin", "manager", "advisor", "technician"])
def test_staff_of_every_role_create_for_a_customer(role):
    new = d.prepare_create(
        staff(role), description="Quote tyres", customer_id=CUSTOMER, known=KNOWN
    )
    assert new.customer_id == CUSTOMER
    assert new.visible_to_customer is True
    assert new.created_by_customer is False
    assert new.created_by == "staff-1"
    hidden = d.prepare_create(
        staff(role),
        description="Quote tyres",
        customer_id=CUSTOMER,
        visible_to_customer=False,
        known=KNOWN,
    )
    assert hidden.visible_to_customer is False


def test_staff_create_needs_a_customer_and_valid_fields():
    with pytest.raises(ValidationFailed) as err:
        d.prepare_create(
            staff("advisor"),
            description="",
            unit_id="not-a-uuid",
            visible_to_customer="yes",
        )
    assert err.value.code == "validation_failed"
    assert err.value.errors == {
        "customer_id": ["is required"],
        "visible_to_customer": ["must be true or false"],
        "description": ["must not be blank"],
        "unit_id": ["must be a UUID"],
    }


@pytest.mark.parametrize(
    "actor",
    [
        token(),
        staff(),
        portal(*BOTH, read_only=True),
        Actor(kind="robot", id="r", tenant_id=TENANT),
    ],
    ids=["token", "roleless_staff", "preview", "unknown_kind"],
)
def test_callers_who_cannot_create(actor):
    with pytest.raises(Forbidden) as err:
        d.prepare_create(actor, description="x", customer_id=CUSTOMER)
    assert err.value.code == "forbidden"


def test_system_creates_like_staff():
    new = d.prepare_create(SYSTEM, description="x", customer_id=CUSTOMER, known=KNOWN)
    assert new.created_by == "system"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is required"),
        ("   \n", "must not be blank"),
        (42, "must be a string"),
        ("x" * 5001, "must be at most 5000 characters"),
        ("bad\x00byte", "must not contain control characters"),
        ("lone \ud800 surrogate", "must be valid Unicode (it contains an unpaired surrogate)"),
        ("spoof \u202e txt.exe", "must not contain bidirectional control characters"),
    ],
)
def test_description_rules(value, message):
    with pytest.raises(ValidationFailed) as err:
        d.prepare_create(staff("advisor"), description=value, customer_id=CUSTOMER, known=KNOWN)
    assert err.value.errors == {"description": [message]}


def test_description_limits_and_multiline_text_are_fine():
    text = "x" * 5000
    admin = staff("admin")
    assert d.prepare_create(admin, description=text, customer_id=CUSTOMER, known=KNOWN).description
    multi = "Line one\n\tLine two\r\nLine three"
    got = d.prepare_create(admin, description=multi, customer_id=CUSTOMER, known=KNOWN)
    assert got.description == multi.replace("\r\n", "\n")  # kit.text: CRLF -> LF


# ------------------------------------------------------------------------------------
# moving between states: the permission matrix

OK, OK_BEHALF, FORBID, PERM = "ok", "ok_behalf", "forbidden", "permission_required"
SOURCE = {
    "in_process": "pending",
    "customer_approval_needed": "in_process",
    "approved": "customer_approval_needed",
    "denied": "customer_approval_needed",
    "cancelled": "pending",
}
STAFF_MOVE = {
    "admin": OK,
    "manager": OK,
    "advisor": OK,
    "technician": FORBID,
    "roleless_staff": FORBID,
    "portal_full": FORBID,
    "portal_request": FORBID,
    "portal_approve": FORBID,
    "portal_none": FORBID,
    "preview": FORBID,
    "token": FORBID,
    "system": OK,
}
DECIDE = {
    "admin": OK_BEHALF,
    "manager": OK_BEHALF,
    "advisor": FORBID,
    "technician": FORBID,
    "roleless_staff": FORBID,
    "portal_full": OK,
    "portal_request": PERM,
    "portal_approve": OK,
    "portal_none": PERM,
    "preview": FORBID,
    "token": FORBID,
    "system": OK_BEHALF,
}
CANCEL = {
    "admin": OK,
    "manager": OK,
    "advisor": OK,
    "technician": FORBID,
    "roleless_staff": FORBID,
    "portal_full": OK,
    "portal_request": OK,
    "portal_approve": PERM,
    "portal_none": PERM,
    "preview": FORBID,
    "token": FORBID,
    "system": OK,
}
MATRIX = {
    "in_process": STAFF_MOVE,
    "customer_approval_needed": STAFF_MOVE,
    "approved": DECIDE,
    "denied": DECIDE,
    "cancelled": CANCEL,
}


@pytest.mark.parametrize(
    ("target", "name"), [(t, n) for t in MATRIX for n in sorted(ACTORS)], ids=lambda v: str(v)
)
def test_transition_permission_matrix(target, name):
    actor = ACTORS[name]
    quote = Quote(status=SOURCE[target])
    assert d.can_see(actor, quote)
    expected = MATRIX[target][name]
    if expected in (OK, OK_BEHALF):
        decision = d.authorize_transition(
            actor, quote, target, attachment_kinds=["attachment", "quote_document"]
        )
        assert decision.status == target
        assert decision.event == d.event_for_transition(target)
        assert decision.on_behalf is (expected == OK_BEHALF)
    else:
        with pytest.raises(Forbidden) as err:
            d.authorize_transition(actor, quote, target, attachment_kinds=["quote_document"])
        assert err.value.code == expected


@pytest.mark.parametrize("name", sorted(ACTORS))
def test_nobody_moves_a_quote_back_to_pending(name):
    with pytest.raises((Forbidden, InvalidTransition)):
        d.authorize_transition(ACTORS[name], Quote(status="in_process"), "pending")


def test_asking_for_approval_needs_a_quote_document():
    quote = Quote(status="in_process")
    for kinds in ([], ["attachment"], ["attachment", "attachment"]):
        with pytest.raises(d.QuoteDocumentRequired) as err:
            d.authorize_transition(
                staff("advisor"), quote, "customer_approval_needed", attachment_kinds=kinds
            )
        assert err.value.code == "quote_document_required"
        assert status_for(err.value.code) == 422
    gen = (k for k in ["attachment", "quote_document"])  # any iterable will do
    decision = d.authorize_transition(
        staff("advisor"), quote, "customer_approval_needed", attachment_kinds=gen
    )
    assert decision.event == "quote_request.approval_requested"


def test_quote_document_required_survives_an_rpc_round_trip():
    err = d.QuoteDocumentRequired("attach it")
    assert isinstance(err, DomainError)
    again = type(err)(*err.args)
    assert (again.code, again.detail, again.errors) == (
        "quote_document_required",
        "attach it",
        None,
    )


def test_state_is_checked_after_permission():
    with pytest.raises(InvalidTransition):
        d.approve(portal(d.PERM_APPROVE), Quote(status="pending"))
    with pytest.raises(InvalidTransition):
        d.cancel(staff("advisor"), Quote(status="approved"))
    with pytest.raises(InvalidTransition):
        d.deny(staff("manager"), Quote(status="denied"))
    with pytest.raises(Forbidden):  # no permission beats wrong state
        d.approve(portal(), Quote(status="pending"))


def test_staff_can_send_a_quote_back_for_rework():
    decision = d.authorize_transition(
        staff("advisor"), Quote(status="customer_approval_needed"), "in_process"
    )
    assert decision.status == "in_process"
    assert decision.event == "quote_request.status_changed"


def test_unknown_target_is_a_validation_error():
    with pytest.raises(ValidationFailed) as err:
        d.authorize_transition(staff("admin"), Quote(), "archived")
    assert list(err.value.errors or {}) == ["status"]


# ------------------------------------------------------------------------------------
# approve / deny / cancel


def test_portal_approves_with_a_po_number():
    quote = Quote(status="customer_approval_needed")
    decision = d.approve(portal(d.PERM_APPROVE), quote, "  PO-2024/17  ")
    assert decision == d.Decision(
        status="approved", event="quote_request.approved", on_behalf=False, po_number="PO-2024/17"
    )
    assert d.approve(portal(d.PERM_APPROVE), quote).po_number is None
    assert d.approve(portal(d.PERM_APPROVE), quote, "   ").po_number is None
    assert d.approve(portal(d.PERM_APPROVE), quote, "P" * 64).po_number == "P" * 64


def test_manager_approves_on_behalf():
    decision = d.approve(staff("manager"), Quote(status="customer_approval_needed"), "77")
    assert decision.on_behalf is True
    assert decision.po_number == "77"


@pytest.mark.parametrize(
    ("po", "message"),
    [
        ("P" * 65, "must be at most 64 characters"),
        ("PO\n1", "must be a single line"),
        ("PO\t1", "must not contain control characters"),
        ("PO\x001", "must not contain control characters"),
        (1234, "must be a string"),
    ],
)
def test_bad_po_numbers(po, message):
    with pytest.raises(ValidationFailed) as err:
        d.approve(portal(d.PERM_APPROVE), Quote(status="customer_approval_needed"), po)
    assert err.value.errors == {"po_number": [message]}


def test_deny_with_optional_reason():
    quote = Quote(status="customer_approval_needed")
    decision = d.deny(portal(d.PERM_APPROVE), quote, "  Too expensive \n")
    assert (decision.status, decision.event, decision.reason) == (
        "denied",
        "quote_request.denied",
        "Too expensive",
    )
    assert d.deny(portal(d.PERM_APPROVE), quote).reason is None
    assert d.deny(portal(d.PERM_APPROVE), quote, "r" * 2000).reason == "r" * 2000
    with pytest.raises(ValidationFailed) as err:
        d.deny(portal(d.PERM_APPROVE), quote, "r" * 2001)
    assert err.value.errors == {"reason": ["must be at most 2000 characters"]}


@pytest.mark.parametrize("status", ["pending", "in_process", "customer_approval_needed"])
def test_portal_user_cancels_own_request(status):
    decision = d.cancel(portal(d.PERM_REQUEST), Quote(status=status))
    assert (decision.status, decision.event) == ("cancelled", "quote_request.cancelled")


# ------------------------------------------------------------------------------------
# PATCH


def test_patch_description_and_visibility_emit_updated():
    plan = d.plan_patch(
        staff("advisor"), Quote(), {"description": " New text ", "visible_to_customer": False}
    )
    assert dict(plan.changes) == {"description": "New text", "visible_to_customer": False}
    assert plan.events == ("quote_request.updated",)
    assert plan.decision is None


def test_patch_assignee_is_canonical_and_can_be_cleared():
    plan = d.plan_patch(staff("manager"), Quote(), {"assigned_to": USER.upper()}, known=KNOWN)
    assert dict(plan.changes) == {"assigned_to": USER}
    assert plan.events == ("quote_request.assigned",)
    cleared = d.plan_patch(staff("manager"), Quote(assigned_to=USER), {"assigned_to": None})
    assert dict(cleared.changes) == {"assigned_to": None}
    assert cleared.events == ("quote_request.assigned",)


def test_patch_with_unchanged_values_is_empty():
    quote = Quote(assigned_to=USER, status="in_process")
    plan = d.plan_patch(
        staff("admin"),
        quote,
        {
            "description": quote.description,
            "assigned_to": USER,
            "visible_to_customer": True,
            "status": "in_process",
        },
    )
    assert dict(plan.changes) == {}
    assert plan.events == ()


def test_patch_status_goes_through_the_state_machine():
    plan = d.plan_patch(
        staff("advisor"),
        Quote(status="pending"),
        {"status": "in_process", "assigned_to": USER, "description": "More detail"},
        known=KNOWN,
    )
    assert dict(plan.changes) == {
        "status": "in_process",
        "assigned_to": USER,
        "description": "More detail",
    }
    assert plan.events == (
        "quote_request.updated",
        "quote_request.assigned",
        "quote_request.status_changed",
    )
    assert plan.decision is not None and plan.decision.status == "in_process"
    with pytest.raises(InvalidTransition):
        d.plan_patch(
            staff("manager"), Quote(status="pending"), {"status": "customer_approval_needed"}
        )
    with pytest.raises(d.QuoteDocumentRequired):
        d.plan_patch(
            staff("advisor"), Quote(status="in_process"), {"status": "customer_approval_needed"}
        )
    ok = d.plan_patch(
        staff("advisor"),
        Quote(status="in_process"),
        {"status": "customer_approval_needed"},
        attachment_kinds=["quote_document"],
    )
    assert ok.events == ("quote_request.approval_requested",)


@pytest.mark.parametrize(
    ("status", "call"), [("approved", "approve"), ("denied", "deny"), ("cancelled", "cancel")]
)
@pytest.mark.parametrize("current", ALL_STATUSES)
def test_patch_never_makes_a_decision(status, call, current):
    """Decisions are recorded (who, on whose behalf, when) only by their own calls:
    PATCH refuses them whoever asks and whatever the state, naming the call."""
    quote = Quote(status=current)
    for role in ("admin", "manager", "advisor"):
        with pytest.raises(ValidationFailed) as err:
            d.plan_patch(staff(role), quote, {"status": status})
        assert err.value.code == "validation_failed"
        assert err.value.errors is not None
        (message,) = err.value.errors["status"]
        assert f"POST /quote-requests/{{id}}/{call}" in message


@pytest.mark.parametrize(
    "name", ["technician", "roleless_staff", "portal_full", "token", "preview"]
)
def test_only_quote_staff_patch(name):
    with pytest.raises(Forbidden) as err:
        d.plan_patch(ACTORS[name], Quote(), {"description": "x"})
    assert err.value.code == "forbidden"


def test_patch_field_errors_are_collected():
    with pytest.raises(ValidationFailed) as err:
        d.plan_patch(
            staff("admin"),
            Quote(),
            {
                "description": "",
                "assigned_to": "bob",
                "visible_to_customer": None,
                "status": "archived",
                "customer_id": OTHER_CUSTOMER,
            },
        )
    assert err.value.errors == {
        "customer_id": ["unknown field"],
        "description": ["must not be blank"],
        "visible_to_customer": ["must be true or false"],
        "assigned_to": ["must be a UUID"],
        "status": ["must be one of pending, in_process, customer_approval_needed"],
    }


def test_patch_status_must_be_a_string():
    with pytest.raises(ValidationFailed):
        d.plan_patch(staff("admin"), Quote(), {"status": 3})


# ------------------------------------------------------------------------------------
# comments and attachments: the kit's discussion rules as quotes declares them, after
# the visibility check every discussion entrypoint makes first (kit.discussion_rpc)


def comment(actor, quote, body):
    d.ensure_visible(actor, quote)
    return d.DISCUSSION.validate_comment(actor, body)


def delete_comment(actor, quote):
    d.ensure_visible(actor, quote)
    d.DISCUSSION.authorize_delete(actor)


def attach(actor, quote, kind):
    d.ensure_visible(actor, quote)
    return d.DISCUSSION.authorize_attachment(actor, kind)


@pytest.mark.parametrize(
    "name",
    ["admin", "manager", "advisor", "technician", "portal_full", "portal_none", "system"],
)
def test_who_may_comment(name):
    assert comment(ACTORS[name], Quote(), "  Any news? ") == "Any news?"


@pytest.mark.parametrize("name", ["token", "preview", "roleless_staff"])
def test_who_may_not_comment(name):
    with pytest.raises(Forbidden):
        comment(ACTORS[name], Quote(), "hello")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "must not be blank"),
        (" \n\t ", "must not be blank"),
        (None, "is required"),
        ("c" * 5001, "must be at most 5000 characters"),
        ("bell\x07", "must not contain control characters"),
    ],
)
def test_comment_body_rules(body, message):
    with pytest.raises(ValidationFailed) as err:
        comment(staff("advisor"), Quote(), body)
    assert err.value.errors == {"body": [message]}
    assert comment(staff("advisor"), Quote(), "c" * 5000) == "c" * 5000


def test_portal_cannot_comment_on_hidden_quote():
    with pytest.raises(NotFound):
        comment(portal(*BOTH), Quote(visible_to_customer=False), "hello")


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("admin", True),
        ("manager", True),
        ("system", True),
        ("advisor", False),
        ("technician", False),
        ("portal_full", False),
        ("token", False),
        ("preview", False),
    ],
)
def test_only_managers_delete_comments(name, allowed):
    if allowed:
        delete_comment(ACTORS[name], Quote())
    else:
        with pytest.raises(Forbidden):
            delete_comment(ACTORS[name], Quote())


@pytest.mark.parametrize("role", ["admin", "manager", "advisor", "technician"])
@pytest.mark.parametrize("kind", ["attachment", "quote_document"])
def test_staff_upload_either_kind(role, kind):
    assert attach(staff(role), Quote(), kind) == kind


def test_portal_uploads_plain_attachments_only():
    assert attach(portal(), Quote(), "attachment") == "attachment"
    with pytest.raises(Forbidden) as err:
        attach(portal(*BOTH), Quote(), "quote_document")
    assert err.value.code == "forbidden"


@pytest.mark.parametrize("name", ["token", "preview", "roleless_staff"])
def test_who_may_not_upload(name):
    with pytest.raises(Forbidden):
        attach(ACTORS[name], Quote(), "attachment")


@pytest.mark.parametrize("kind", ["invoice", "", None, 1])
def test_unknown_attachment_kind(kind):
    with pytest.raises(ValidationFailed) as err:
        attach(staff("admin"), Quote(), kind)
    assert list(err.value.errors or {}) == ["kind"]


def test_decisions_are_immutable():
    decision = d.cancel(staff("admin"), Quote())
    with pytest.raises(AttributeError):
        decision.status = "approved"  # type: ignore[misc]
    assert replace(decision, status="x").status == "x"
