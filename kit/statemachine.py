"""State machines as data: states, moves, who may make them, the event each emits.

Pure: standard library and the kit's errors only. A service declares its machine once
in its ``domain.py`` and every status change goes through :meth:`Machine.move`, the one
check, in this order (the order quotes has always used):

1. the target is one of the machine's states, else ``422 validation_failed`` naming
   the machine's field (a typo in a request, not a move);
2. the caller may move things into that state (:class:`Who`), else ``403``
   ``forbidden`` / ``permission_required``: refusing the caller first means a caller
   without the right learns nothing about the record's state;
3. ``current -> target`` is a declared move, else ``409 invalid_transition``.

Scope (``404``) and read-only sessions are the domain's checks and come before the
move; preconditions such as "a document is attached" come after it.

Who may and the event belong to the *target* state (:class:`Entry`): "approve" is the
same act from whichever state allows it. A machine whose event must depend on where a
move starts declares the two starting points as different targets (e.g. ``reopened``
next to ``open``), which keeps each state's rule readable on its own line.

How estimates will declare their three machines (one per thing that has a status),
sharing the ``Who`` values the way quotes does (``STAFF``: admin/manager/advisor;
``CUSTOMER_OR_MANAGER``: portal users with ``estimates.approve``, else a manager acting
``on_behalf``)::

    ESTIMATE: Machine[ActorLike] = Machine(
        noun="estimate",
        states=(DRAFT, SENT, APPROVED, PARTIALLY_APPROVED, DECLINED, SUPERSEDED),
        transitions={
            DRAFT: {SENT},
            SENT: {APPROVED, PARTIALLY_APPROVED, DECLINED, SUPERSEDED},
            PARTIALLY_APPROVED: {APPROVED, SUPERSEDED},
        },
        entries={
            SENT: Entry(STAFF, "estimate.sent"),
            APPROVED: Entry(CUSTOMER_OR_MANAGER, "estimate.approved"),
            PARTIALLY_APPROVED: Entry(CUSTOMER_OR_MANAGER, "estimate.partially_approved"),
            DECLINED: Entry(CUSTOMER_OR_MANAGER, "estimate.declined"),
            SUPERSEDED: Entry(STAFF, "estimate.superseded"),  # a new version was sent
        },
    )
    LINE: Machine[ActorLike] = Machine(  # one decision per estimate line
        noun="estimate line",
        field_name="decision",
        states=(UNDECIDED, ACCEPTED, REFUSED, DEFERRED),
        transitions={UNDECIDED: {ACCEPTED, REFUSED, DEFERRED}, DEFERRED: {ACCEPTED, REFUSED}},
        entries={s: Entry(CUSTOMER_OR_MANAGER) for s in (UNDECIDED, ACCEPTED, REFUSED, DEFERRED)},
        default_event="estimate.line_decided",
    )
    DISPUTE: Machine[ActorLike] = Machine(
        noun="dispute",
        states=(OPEN, ANSWERED, RESOLVED, REOPENED),
        transitions={OPEN: {ANSWERED}, ANSWERED: {RESOLVED, REOPENED}, REOPENED: {ANSWERED}},
        entries={
            OPEN: Entry(CUSTOMER),
            ANSWERED: Entry(STAFF, "estimate.dispute_answered"),
            RESOLVED: Entry(CUSTOMER_OR_MANAGER, "estimate.dispute_resolved"),
            REOPENED: Entry(CUSTOMER, "estimate.dispute_reopened"),
        },
        default_event="estimate.dispute_opened",
    )

and each operation calls ``ESTIMATE.move(actor, estimate.status, target)`` and publishes
``move.event``; :attr:`Move.capacity` says in which capacity the caller acted (e.g. a
manager recording the customer's decision on their behalf).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar

from kit.errors import DomainError, Forbidden, InvalidTransition, ValidationFailed

A = TypeVar("A")


def anyone(_actor: object) -> bool:
    """The predicate that holds for every caller."""
    return True


@dataclass(frozen=True)
class Refusal:
    """The 403 a refused caller gets; ``{target}`` in ``detail`` names the state."""

    detail: str
    code: str = "forbidden"  # or "permission_required"

    def error(self, target: str) -> Forbidden:
        return Forbidden(self.detail.format(target=target), code=self.code)


@dataclass(frozen=True)
class Clause(Generic[A]):
    """Callers ``applies`` picks may make the move if ``allowed`` holds, acting in
    ``capacity``; the others it picks are refused with ``refusal``."""

    applies: Callable[[A], bool]
    allowed: Callable[[A], bool] = anyone
    capacity: str = ""
    refusal: Refusal = Refusal("this caller may not make that change")


@dataclass(frozen=True)
class Who(Generic[A]):
    """Who may move a record into a state: the first clause that applies to the caller
    decides; a caller no clause applies to is refused with ``otherwise``."""

    clauses: tuple[Clause[A], ...]
    otherwise: Refusal = Refusal("this caller may not make that change")

    def check(self, actor: A, target: str) -> str:
        """The capacity ``actor`` acts in, or ``Forbidden``."""
        for clause in self.clauses:
            if clause.applies(actor):
                if clause.allowed(actor):
                    return clause.capacity
                raise clause.refusal.error(target)
        raise self.otherwise.error(target)


@dataclass(frozen=True)
class Entry(Generic[A]):
    """Entering a state: who may, and the event published when it happens
    (``None``: the machine's ``default_event``)."""

    who: Who[A]
    event: str | None = None


@dataclass(frozen=True)
class Move:
    """An allowed move: what to write, what to publish, in which capacity."""

    source: str
    target: str
    event: str
    capacity: str = ""


@dataclass(frozen=True)
class Machine(Generic[A]):
    """One status field's rules, declared once (see the module docstring)."""

    noun: str  # "quote request": used in the 409's detail
    states: tuple[str, ...]
    transitions: Mapping[str, Iterable[str]]
    entries: Mapping[str, Entry[A]]
    default_event: str = ""
    field_name: str = "status"  # the request field a 422 names
    _moves: Mapping[str, frozenset[str]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        states = tuple(self.states)
        known = frozenset(states)
        if len(known) != len(states):
            raise ValueError(f"{self.noun}: a state is listed twice")
        moves = {src: frozenset(dst) for src, dst in self.transitions.items()}
        strays = (set(moves) | {t for dst in moves.values() for t in dst}) - known
        strays |= set(self.entries) - known
        if strays:
            raise ValueError(f"{self.noun}: unknown states {sorted(strays)}")
        reachable = {t for dst in moves.values() for t in dst}
        if reachable - set(self.entries):
            # A move nobody is declared to make would be open to every caller: refuse.
            raise ValueError(f"{self.noun}: no entry for {sorted(reachable - set(self.entries))}")
        for state, entry in self.entries.items():
            if not (entry.event or self.default_event):
                raise ValueError(f"{self.noun}: no event for entering {state}")
        normalised = MappingProxyType({s: moves.get(s, frozenset()) for s in states})
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "transitions", normalised)
        object.__setattr__(self, "_moves", normalised)
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    @property
    def moves(self) -> Mapping[str, frozenset[str]]:
        """``{from: frozenset(to)}`` with every state present (final ones empty), read-only."""
        return self._moves

    @property
    def final_states(self) -> frozenset[str]:
        return frozenset(s for s in self.states if not self.moves[s])

    def check(self, current: str, target: str) -> None:
        """``InvalidTransition`` unless ``current -> target`` is declared."""
        if target not in self.moves.get(current, frozenset()):
            raise self._invalid(current, target)

    def _invalid(self, current: str, target: str) -> DomainError:
        return InvalidTransition(detail=f"a {self.noun} cannot go from {current} to {target}")

    def event_for(self, target: str) -> str:
        """The event published on entering ``target``; ``ValueError`` for a state the
        machine does not have (a bug in the caller, not a request to refuse)."""
        if target not in self.moves:
            raise ValueError(f"unknown {self.field_name} {target!r}")
        entry = self.entries.get(target)
        return (entry.event if entry else None) or self.default_event

    def move(self, actor: A, current: str, target: str) -> Move:
        """The one check of a status change (order in the module docstring)."""
        if target not in self.moves:
            raise ValidationFailed(
                detail=f"unknown {self.field_name}",
                errors={self.field_name: [f"must be one of {', '.join(self.states)}"]},
            )
        entry = self.entries.get(target)
        if entry is None:  # nothing moves into this state: not a move anyone can make
            raise self._invalid(current, target)
        capacity = entry.who.check(actor, target)
        self.check(current, target)
        return Move(current, target, self.event_for(target), capacity)


__all__ = [
    "Clause",
    "Entry",
    "Machine",
    "Move",
    "Refusal",
    "Who",
    "anyone",
]
