"""kit.statemachine: declaration checks, the one move check and its order."""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kit import statemachine
from kit.errors import Forbidden, InvalidTransition, ValidationFailed, status_for
from kit.statemachine import Clause, Entry, Machine, Refusal, Who


@dataclass(frozen=True)
class Caller:
    kind: str
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()


STAFF_ONLY: Who[Caller] = Who(
    clauses=(Clause(applies=lambda c: c.kind == "staff", capacity="staff"),),
    otherwise=Refusal("only staff may move it to {target}"),
)
CUSTOMER_OR_MANAGER: Who[Caller] = Who(
    clauses=(
        Clause(
            applies=lambda c: c.kind == "portal",
            allowed=lambda c: "approve" in c.permissions,
            capacity="customer",
            refusal=Refusal("approve permission required", "permission_required"),
        ),
        Clause(applies=lambda c: "manager" in c.roles, capacity="on_behalf"),
    ),
)

DOOR: Machine[Caller] = Machine(
    noun="door",
    states=("open", "closed", "locked"),
    transitions={"open": {"closed"}, "closed": {"open", "locked"}, "locked": {"closed"}},
    entries={
        "open": Entry(STAFF_ONLY),
        "closed": Entry(STAFF_ONLY, "door.closed"),
        "locked": Entry(CUSTOMER_OR_MANAGER, "door.locked"),
    },
    default_event="door.changed",
)
STAFF = Caller("staff")
MANAGER = Caller("staff", roles=("manager",))
CUSTOMER = Caller("portal", permissions=("approve",))
VISITOR = Caller("portal")
STRANGER = Caller("token")


def test_moves_are_normalised_and_read_only():
    assert DOOR.moves == {
        "open": frozenset({"closed"}),
        "closed": frozenset({"open", "locked"}),
        "locked": frozenset({"closed"}),
    }
    with pytest.raises(TypeError):
        DOOR.moves["open"] = frozenset()  # type: ignore[index]
    assert DOOR.final_states == frozenset()


def test_a_move_carries_its_event_and_capacity():
    move = DOOR.move(MANAGER, "closed", "locked")
    assert (move.source, move.target, move.event, move.capacity) == (
        "closed",
        "locked",
        "door.locked",
        "on_behalf",
    )
    assert DOOR.move(CUSTOMER, "closed", "locked").capacity == "customer"
    assert DOOR.move(STAFF, "closed", "open").event == "door.changed"  # default event


@pytest.mark.parametrize(("current", "target"), list(itertools.product(DOOR.states, repeat=2)))
def test_every_pair_for_an_allowed_caller(current, target):
    caller = MANAGER  # staff with the manager role passes every entry here
    if target in DOOR.moves[current]:
        assert DOOR.move(caller, current, target).target == target
    else:
        with pytest.raises(InvalidTransition) as err:
            DOOR.move(caller, current, target)
        assert err.value.detail == f"a door cannot go from {current} to {target}"
        assert status_for(err.value.code) == 409


def test_who_may_is_checked_before_the_state():
    # open -> locked is not a move, but a caller who may never lock hears 403 first.
    with pytest.raises(Forbidden) as err:
        DOOR.move(VISITOR, "open", "locked")
    assert err.value.code == "permission_required"
    assert err.value.detail == "approve permission required"
    with pytest.raises(Forbidden) as err:
        DOOR.move(STRANGER, "open", "locked")
    assert err.value.code == "forbidden"
    with pytest.raises(Forbidden) as err:
        DOOR.move(CUSTOMER, "locked", "open")
    assert err.value.detail == "only staff may move it to open"
    with pytest.raises(InvalidTransition):
        DOOR.move(CUSTOMER, "open", "locked")


def test_an_unknown_target_is_a_422_naming_the_field():
    with pytest.raises(ValidationFailed) as err:
        DOOR.move(STRANGER, "open", "ajar")
    assert err.value.errors == {"status": ["must be one of open, closed, locked"]}
    other = Machine(
        noun="line",
        states=("a", "b"),
        transitions={"a": {"b"}},
        entries={"b": Entry(STAFF_ONLY, "line.b")},
        field_name="decision",
    )
    with pytest.raises(ValidationFailed) as err:
        other.move(STAFF, "a", "c")
    assert list(err.value.errors or {}) == ["decision"]


def test_an_unknown_current_state_is_an_invalid_transition():
    with pytest.raises(InvalidTransition):
        DOOR.move(STAFF, "ajar", "closed")
    with pytest.raises(InvalidTransition):
        DOOR.check("ajar", "closed")


def test_a_state_nothing_enters_refuses_every_move_into_it():
    machine = Machine(
        noun="thing",
        states=("new", "done"),
        transitions={"new": {"done"}},
        entries={"done": Entry(STAFF_ONLY, "thing.done")},
    )
    for caller in (STAFF, MANAGER, CUSTOMER, STRANGER):
        with pytest.raises(InvalidTransition):
            machine.move(caller, "done", "new")
    assert machine.final_states == frozenset({"done"})
    assert machine.event_for("done") == "thing.done"


def test_event_for_an_unknown_state_is_a_bug():
    with pytest.raises(ValueError):
        DOOR.event_for("ajar")


@pytest.mark.parametrize(
    "kwargs",
    [
        # a move into a state nobody is declared to make would be open to everyone
        {"transitions": {"a": {"b"}}, "entries": {}},
        # moves and entries name only declared states
        {"transitions": {"a": {"z"}}, "entries": {"z": Entry(STAFF_ONLY, "e")}},
        {"transitions": {"z": {"a"}}, "entries": {"a": Entry(STAFF_ONLY, "e")}},
        {"transitions": {}, "entries": {"z": Entry(STAFF_ONLY, "e")}},
        # every entry publishes something
        {"transitions": {"a": {"b"}}, "entries": {"b": Entry(STAFF_ONLY)}},
    ],
)
def test_bad_declarations_are_refused(kwargs):
    with pytest.raises(ValueError):
        Machine(noun="x", states=("a", "b"), **kwargs)


def test_a_state_listed_twice_is_refused():
    with pytest.raises(ValueError):
        Machine(noun="x", states=("a", "a"), transitions={}, entries={})


# -- property: for any declared machine, move() is exactly "target known, who, edge" ----

STATES = ("s0", "s1", "s2", "s3", "s4")
KINDS = ("staff", "portal", "token")


def _kind_in(kinds: frozenset[str]):
    def applies(caller: Caller) -> bool:
        return caller.kind in kinds

    return applies


@st.composite
def machines(draw):
    edges = draw(st.sets(st.tuples(st.sampled_from(STATES), st.sampled_from(STATES))))
    transitions: dict[str, set[str]] = {}
    for src, dst in edges:
        transitions.setdefault(src, set()).add(dst)
    targets = {dst for _, dst in edges} | draw(st.sets(st.sampled_from(STATES)))
    allowed = {t: draw(st.frozensets(st.sampled_from(KINDS))) for t in targets}
    entries = {
        t: Entry(Who(clauses=(Clause(applies=_kind_in(kinds), capacity="ok"),)), f"thing.{t}")
        for t, kinds in allowed.items()
    }
    machine = Machine(noun="thing", states=STATES, transitions=transitions, entries=entries)
    return machine, edges, allowed


@given(
    machines(),
    st.sampled_from(STATES),
    st.sampled_from((*STATES, "bogus")),
    st.sampled_from(KINDS),
)
def test_move_is_target_then_who_then_edge(spec, current, target, kind):
    machine, edges, allowed = spec
    caller = Caller(kind)
    if target not in STATES:
        expected: type[Exception] | None = ValidationFailed
    elif target not in allowed:
        expected = InvalidTransition  # nothing enters it
    elif kind not in allowed[target]:
        expected = Forbidden
    elif (current, target) not in edges:
        expected = InvalidTransition
    else:
        expected = None
    if expected is None:
        move = machine.move(caller, current, target)
        assert (move.event, move.capacity) == (f"thing.{target}", "ok")
    else:
        with pytest.raises(expected):
            machine.move(caller, current, target)


def test_the_estimates_example_in_the_docs_declares_valid_machines():
    doc = statemachine.__doc__ or ""
    block = doc.split("on_behalf``)::\n", 1)[1].split("\nand each operation", 1)[0]
    names = [
        "DRAFT",
        "SENT",
        "APPROVED",
        "PARTIALLY_APPROVED",
        "DECLINED",
        "SUPERSEDED",
        "UNDECIDED",
        "ACCEPTED",
        "REFUSED",
        "DEFERRED",
        "OPEN",
        "ANSWERED",
        "RESOLVED",
        "REOPENED",
    ]
    scope: dict[str, object] = {n: n.lower() for n in names}
    scope.update(
        Machine=Machine,
        Entry=Entry,
        ActorLike=Caller,
        STAFF=STAFF_ONLY,
        CUSTOMER=CUSTOMER_OR_MANAGER,
        CUSTOMER_OR_MANAGER=CUSTOMER_OR_MANAGER,
    )
    exec(textwrap.dedent(block), scope)
    estimate, line, dispute = scope["ESTIMATE"], scope["LINE"], scope["DISPUTE"]
    assert isinstance(estimate, Machine) and isinstance(line, Machine)
    assert isinstance(dispute, Machine)
    assert estimate.move(MANAGER, "sent", "approved").capacity == "on_behalf"
    assert estimate.final_states == {"approved", "declined", "superseded"}
    assert line.move(CUSTOMER, "deferred", "accepted").event == "estimate.line_decided"
    with pytest.raises(ValidationFailed) as err:
        line.move(CUSTOMER, "undecided", "maybe")
    assert list(err.value.errors or {}) == ["decision"]
    assert dispute.move(STAFF, "open", "answered").event == "estimate.dispute_answered"
