"""Quote requests: the state machine, who may do what, and input rules.

Pure: no nameko, no SQLAlchemy, no I/O. The service loads rows, calls these
functions inside its unit of work and persists what they return; every refusal is a
:mod:`kit.errors` exception with a stable code.

Order of checks in every operation on an existing quote: scope first (anything the
caller may not see is ``not_found``, never revealing it exists), then read-only
callers (``forbidden``), then caller kind/role/permission (``forbidden`` /
``permission_required``), then the state machine (``invalid_transition``), then
preconditions and input (``quote_document_required``, ``validation_failed``).

``system`` actors (built by the services themselves, never from a token) act with
every staff role inside their own tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from kit import access
from kit.access import ActorLike
from kit.discussion import Discussion
from kit.errors import (
    DomainError,
    Forbidden,
    NotFound,
    ValidationFailed,
    VersionConflict,
)
from kit.statemachine import Clause, Entry, Machine, Refusal, Who
from kit.text import field_text

# --- states -------------------------------------------------------------------------

PENDING = "pending"
IN_PROCESS = "in_process"
CUSTOMER_APPROVAL_NEEDED = "customer_approval_needed"
APPROVED = "approved"
DENIED = "denied"
CANCELLED = "cancelled"

STATUSES: tuple[str, ...] = (
    PENDING,
    IN_PROCESS,
    CUSTOMER_APPROVAL_NEEDED,
    APPROVED,
    DENIED,
    CANCELLED,
)
FINAL_STATUSES: frozenset[str] = frozenset({APPROVED, DENIED, CANCELLED})
# The states staff move a request between with PATCH. Decisions (approve, deny, cancel)
# have calls of their own, which record who decided, on whose behalf and when.
WORKING_STATUSES: tuple[str, ...] = (PENDING, IN_PROCESS, CUSTOMER_APPROVAL_NEEDED)
DECISION_CALLS: Mapping[str, str] = MappingProxyType(
    {APPROVED: "approve", DENIED: "deny", CANCELLED: "cancel"}
)


# --- events -------------------------------------------------------------------------

EVENT_CREATED = "quote_request.created"
EVENT_UPDATED = "quote_request.updated"
EVENT_STATUS_CHANGED = "quote_request.status_changed"
EVENT_ASSIGNED = "quote_request.assigned"
EVENT_APPROVAL_REQUESTED = "quote_request.approval_requested"
EVENT_APPROVED = "quote_request.approved"
EVENT_DENIED = "quote_request.denied"
EVENT_CANCELLED = "quote_request.cancelled"

ATTACHMENT = "attachment"
QUOTE_DOCUMENT = "quote_document"
ATTACHMENT_KINDS: tuple[str, ...] = (ATTACHMENT, QUOTE_DOCUMENT)

# Comments and files: the kit's rules (every staff role and portal users who see the
# request take part; only shop staff attach the quote document; managers delete).
DISCUSSION = Discussion(
    record="quote_request",
    record_key="quote_request_id",
    label="quote request",
    kinds=ATTACHMENT_KINDS,
    staff_only_kinds=frozenset({QUOTE_DOCUMENT}),
)
EVENT_COMMENT_ADDED = DISCUSSION.comment_added
EVENT_COMMENT_DELETED = DISCUSSION.comment_deleted
EVENT_ATTACHMENT_ADDED = DISCUSSION.attachment_added

EVENTS: tuple[str, ...] = (
    EVENT_CREATED,
    EVENT_UPDATED,
    EVENT_STATUS_CHANGED,
    EVENT_ASSIGNED,
    EVENT_APPROVAL_REQUESTED,
    EVENT_APPROVED,
    EVENT_DENIED,
    EVENT_CANCELLED,
    EVENT_COMMENT_ADDED,
    EVENT_COMMENT_DELETED,
    EVENT_ATTACHMENT_ADDED,
)

# --- callers ------------------------------------------------------------------------

PERM_REQUEST = "quotes.request"
PERM_APPROVE = "quotes.approve"

ALL_STAFF_ROLES: frozenset[str] = frozenset({"admin", "manager", "advisor", "technician"})
# Create a request (technicians too: requests come out of a work order's review).
CREATE_ROLES = ALL_STAFF_ROLES
# Work the request: PATCH, move to in_process / customer_approval_needed, cancel.
QUOTE_STAFF_ROLES: frozenset[str] = frozenset({"admin", "manager", "advisor"})
# Approve or deny on behalf of the customer.
MANAGER_ROLES: frozenset[str] = frozenset({"admin", "manager"})

PATCHABLE_FIELDS: frozenset[str] = frozenset(
    {"description", "assigned_to", "status", "visible_to_customer"}
)

MAX_DESCRIPTION = 5000
MAX_REASON = 2000
MAX_PO_NUMBER = 64


class QuoteLike(Protocol):
    """What scope and state rules read of a quote request."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def customer_id(self) -> str: ...
    @property
    def unit_id(self) -> str | None: ...
    @property
    def work_order_id(self) -> str | None: ...
    @property
    def visible_to_customer(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def created_by(self) -> str: ...


class QuoteRecord(QuoteLike, Protocol):
    """A quote with the fields PATCH can change."""

    @property
    def description(self) -> str: ...
    @property
    def assigned_to(self) -> str | None: ...


class QuoteDocumentRequired(DomainError):
    """Asking the customer to approve needs a quote document attached (422)."""

    code = "quote_document_required"

    def __init__(self, detail: str = "", errors: dict[str, list[str]] | None = None) -> None:
        DomainError.__init__(self, type(self).code, detail, errors)
        self.args = (detail, errors)


# --- state machine ------------------------------------------------------------------

# The capacity a caller decides in: the customer themself, or staff recording the
# customer's decision on their behalf (``Decision.on_behalf``).
AS_STAFF = "staff"
AS_CUSTOMER = "customer"
ON_BEHALF = "on_behalf"


def _is_portal(actor: ActorLike) -> bool:
    return actor.kind == "portal"


def _portal_with(permission: str) -> Clause[ActorLike]:
    """Portal users need ``permission`` (``permission_required`` without it)."""
    return Clause(
        applies=_is_portal,
        allowed=lambda actor: permission in actor.permissions,
        capacity=AS_CUSTOMER,
        refusal=Refusal(f"{permission} permission required", code="permission_required"),
    )


def _staff_in(roles: frozenset[str], capacity: str = AS_STAFF) -> Clause[ActorLike]:
    return Clause(applies=lambda actor: _has_role(actor, roles), capacity=capacity)


_STAFF_MOVE: Who[ActorLike] = Who(
    clauses=(_staff_in(QUOTE_STAFF_ROLES),),
    otherwise=Refusal("only shop staff may move a quote request to {target}"),
)
_NOT_YOURS = Refusal("this caller may not do that to a quote request")
# Approve or deny: the customer (quotes.approve), or a manager on their behalf.
_DECIDE: Who[ActorLike] = Who(
    clauses=(_portal_with(PERM_APPROVE), _staff_in(MANAGER_ROLES, ON_BEHALF)),
    otherwise=_NOT_YOURS,
)
# Cancel: the customer who may request quotes, or quote staff.
_CANCEL: Who[ActorLike] = Who(
    clauses=(_portal_with(PERM_REQUEST), _staff_in(QUOTE_STAFF_ROLES)),
    otherwise=_NOT_YOURS,
)

MACHINE: Machine[ActorLike] = Machine(
    noun="quote request",
    states=STATUSES,
    transitions={
        PENDING: {IN_PROCESS, CANCELLED},
        IN_PROCESS: {CUSTOMER_APPROVAL_NEEDED, CANCELLED},
        CUSTOMER_APPROVAL_NEEDED: {APPROVED, DENIED, IN_PROCESS, CANCELLED},
    },
    entries={
        # Nothing moves back to pending; its entry keeps the refusal staff-only.
        PENDING: Entry(_STAFF_MOVE),
        IN_PROCESS: Entry(_STAFF_MOVE),
        CUSTOMER_APPROVAL_NEEDED: Entry(_STAFF_MOVE, EVENT_APPROVAL_REQUESTED),
        APPROVED: Entry(_DECIDE, EVENT_APPROVED),
        DENIED: Entry(_DECIDE, EVENT_DENIED),
        CANCELLED: Entry(_CANCEL, EVENT_CANCELLED),
    },
    default_event=EVENT_STATUS_CHANGED,
)
TRANSITIONS: Mapping[str, frozenset[str]] = MACHINE.moves


def check_transition(current: str, target: str) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is in ``TRANSITIONS``."""
    MACHINE.check(current, target)


def event_for_transition(target_status: str) -> str:
    """The event published when a quote request enters ``target_status``."""
    return MACHINE.event_for(target_status)


def decision_call_hint(status: str) -> str:
    """Why PATCH refuses a decision status, and which call makes that decision."""
    call = DECISION_CALLS[status]
    return (
        f"{status} is a decision, recorded with who made it and when: "
        f"use POST /quote-requests/{{id}}/{call}"
    )


def check_version(current: int, supplied: int | None) -> None:
    """Optimistic concurrency: a supplied version must be the current one."""
    if supplied is not None and supplied != current:
        raise VersionConflict(
            detail=f"the quote request changed (version {current}, not {supplied}); reload it"
        )


# --- scope --------------------------------------------------------------------------


# The rule is kit.access's (written once, with its SQL twin in kit.access_sql); a quote
# request has every field it reads.
Scope = access.Scope
QUOTE_FIELDS = access.Fields()


def list_scope(actor: ActorLike) -> Scope:
    """What ``actor`` may see: the one definition used by lists and by ``can_see``."""
    return Scope.of(actor)


def can_see(actor: ActorLike, quote: QuoteLike) -> bool:
    return list_scope(actor).matches(quote, QUOTE_FIELDS)


def ensure_visible(actor: ActorLike, quote: QuoteLike) -> None:
    """``NotFound`` for anything outside the caller's tenant/customer/unit/work-order scope."""
    if not can_see(actor, quote):
        raise NotFound(detail="quote request not found")


# --- what the service knows of the directory ----------------------------------------


@dataclass(frozen=True)
class Known:
    """The directory facts the service holds about the ids one request names.

    Built by the service from its local copies (kept from ``directory.*`` events), so
    another tenant's ids, ids never seen and (for staff) inactive accounts are simply
    absent. Empty by default: nothing is known, every reference is refused.
    """

    customers: frozenset[str] = frozenset()
    # unit id -> its customer
    unit_customers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    active_staff: frozenset[str] = frozenset()


UNKNOWN_CUSTOMER = "unknown customer"
UNKNOWN_UNIT = "unknown unit"
UNKNOWN_ASSIGNEE = "unknown or inactive staff member"
UNKNOWN_WORK_ORDER = "unknown work order"


def raise_unknown(unknown: dict[str, list[str]]) -> None:
    """A well-formed id the caller may not use (another tenant's, outside its scope, or
    none at all) is ``404 not_found`` naming the field: the same answer whether or not
    it exists elsewhere, as for any resource outside the caller's scope. Raised after
    the input checks, so a request that is also malformed is a 422."""
    if unknown:
        raise NotFound(detail="a referenced record was not found", errors=unknown)


# --- creating -----------------------------------------------------------------------


@dataclass(frozen=True)
class NewQuote:
    customer_id: str
    description: str
    unit_id: str | None
    work_order_id: str | None
    visible_to_customer: bool
    created_by_customer: bool
    created_by: str
    status: str = PENDING
    event: str = EVENT_CREATED


def prepare_create(
    actor: ActorLike,
    *,
    description: object,
    customer_id: object = None,
    unit_id: object = None,
    work_order_id: object = None,
    visible_to_customer: object = None,
    known: Known = Known(),
    known_work_order_ids: Collection[str] | None = None,
) -> NewQuote:
    """Authorize and validate a new quote request.

    Portal users need ``quotes.request``; their customer is forced (it comes from
    their signed identity, not from the request) and the request is always visible to
    them. Staff of any role name the customer, which must be in ``known.customers``
    (else 404 ``customer_id``), and choose visibility (default visible). A unit must be
    a known unit of that customer and, for a portal user, one of its allowed units
    (else 404 ``unit_id``, the same words whatever the reason). ``known_work_order_ids``
    are the customer's work orders when the service knows them (else 404
    ``work_order_id``). Malformed input is a 422 before any of these.
    """
    _ensure_writer(actor)
    errors: dict[str, list[str]] = {}
    unknown: dict[str, list[str]] = {}
    if actor.kind == "portal":
        if PERM_REQUEST not in actor.permissions:
            raise Forbidden("quotes.request permission required", code="permission_required")
        if not actor.customer_id:
            raise Forbidden("this account is not bound to a customer")
        customer = actor.customer_id
        visible = True
        by_customer = True
    elif _has_role(actor, CREATE_ROLES):
        customer = _uuid(errors, "customer_id", customer_id, required=True) or ""
        if customer and customer not in known.customers:
            unknown["customer_id"] = [UNKNOWN_CUSTOMER]
        visible = _bool(errors, "visible_to_customer", visible_to_customer, default=True)
        by_customer = False
    else:
        raise Forbidden("only staff and portal users may request quotes")

    text = field_text(errors, "description", description, MAX_DESCRIPTION, required=True)
    unit = _uuid(errors, "unit_id", unit_id, required=False)
    if unit is not None:
        allowed_units = actor.unit_ids if actor.kind == "portal" else None
        if (allowed_units is not None and unit not in allowed_units) or (
            known.unit_customers.get(unit) != customer
        ):
            unknown["unit_id"] = [UNKNOWN_UNIT]
    work_order = _uuid(errors, "work_order_id", work_order_id, required=False)
    if (
        work_order is not None
        and known_work_order_ids is not None
        and work_order not in known_work_order_ids
    ):
        unknown["work_order_id"] = [UNKNOWN_WORK_ORDER]
    if errors:
        raise ValidationFailed(detail="the quote request is not valid", errors=errors)
    raise_unknown(unknown)
    return NewQuote(
        customer_id=customer,
        description=text or "",
        unit_id=unit,
        work_order_id=work_order,
        visible_to_customer=visible,
        created_by_customer=by_customer,
        created_by=actor.id,
    )


# --- moving between states ----------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A status change to apply: new status, the event to publish, its details."""

    status: str
    event: str
    on_behalf: bool = False  # staff recorded the customer's decision
    po_number: str | None = None
    reason: str | None = None


def authorize_transition(
    actor: ActorLike,
    quote: QuoteLike,
    target: str,
    *,
    attachment_kinds: Iterable[str] = (),
) -> Decision:
    """Who may move ``quote`` to ``target``; used by PATCH and the action endpoints.

    - ``in_process``, ``customer_approval_needed``: staff (admin/manager/advisor); the
      latter needs a ``quote_document`` among ``attachment_kinds``.
    - ``approved``, ``denied``: portal users with ``quotes.approve``, or
      manager/admin on the customer's behalf.
    - ``cancelled``: portal users with ``quotes.request``, or admin/manager/advisor.
    """
    ensure_visible(actor, quote)
    _ensure_writer(actor)
    move = MACHINE.move(actor, quote.status, target)
    if target == CUSTOMER_APPROVAL_NEEDED and QUOTE_DOCUMENT not in set(attachment_kinds):
        raise QuoteDocumentRequired(
            detail="attach the quote document before asking the customer to approve"
        )
    return Decision(status=target, event=move.event, on_behalf=move.capacity == ON_BEHALF)


def approve(actor: ActorLike, quote: QuoteLike, po_number: object = None) -> Decision:
    """Approve a quote awaiting the customer, with an optional PO number."""
    decision = authorize_transition(actor, quote, APPROVED)
    errors: dict[str, list[str]] = {}
    po = field_text(errors, "po_number", po_number, MAX_PO_NUMBER, required=False, single_line=True)
    if errors:
        raise ValidationFailed(detail="the approval is not valid", errors=errors)
    return replace(decision, po_number=po)


def deny(actor: ActorLike, quote: QuoteLike, reason: object = None) -> Decision:
    """Deny a quote awaiting the customer, with an optional reason."""
    decision = authorize_transition(actor, quote, DENIED)
    errors: dict[str, list[str]] = {}
    text = field_text(errors, "reason", reason, MAX_REASON, required=False)
    if errors:
        raise ValidationFailed(detail="the denial is not valid", errors=errors)
    return replace(decision, reason=text)


def cancel(actor: ActorLike, quote: QuoteLike) -> Decision:
    return authorize_transition(actor, quote, CANCELLED)


# --- editing ------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchPlan:
    """Field values to write (only real changes) and the events, in order."""

    changes: Mapping[str, object]
    events: tuple[str, ...]
    decision: Decision | None = None


def plan_patch(
    actor: ActorLike,
    quote: QuoteRecord,
    changes: Mapping[str, object],
    *,
    attachment_kinds: Iterable[str] = (),
    known: Known = Known(),
) -> PatchPlan:
    """Staff (admin/manager/advisor) edit description, assignee, visibility and status.

    ``status`` moves only between ``WORKING_STATUSES``; approving, denying and
    cancelling are decisions with calls of their own (422 ``status`` naming the call).
    A new assignee must be an active staff member in ``known.active_staff`` (else 404
    ``assigned_to``, after the input checks). Values equal to the current ones are not changes; an empty plan
    means nothing to do.
    """
    ensure_visible(actor, quote)
    _ensure_writer(actor)
    if not _has_role(actor, QUOTE_STAFF_ROLES):
        raise Forbidden("only shop staff may edit a quote request")
    errors: dict[str, list[str]] = {}
    for name in sorted(set(changes) - PATCHABLE_FIELDS):
        errors[name] = ["unknown field"]
    unknown: dict[str, list[str]] = {}
    out: dict[str, object] = {}
    events: list[str] = []
    if "description" in changes:
        text = field_text(
            errors, "description", changes["description"], MAX_DESCRIPTION, required=True
        )
        if text is not None and text != quote.description:
            out["description"] = text
    if "visible_to_customer" in changes:
        visible = _bool(errors, "visible_to_customer", changes["visible_to_customer"], None)
        if "visible_to_customer" not in errors and visible != quote.visible_to_customer:
            out["visible_to_customer"] = visible
    if "assigned_to" in changes:
        assignee = _uuid(errors, "assigned_to", changes["assigned_to"], required=False)
        if "assigned_to" not in errors and assignee != quote.assigned_to:
            if assignee is not None and assignee not in known.active_staff:
                unknown["assigned_to"] = [UNKNOWN_ASSIGNEE]
            else:
                out["assigned_to"] = assignee
    status = changes.get("status")
    if "status" in changes:
        if isinstance(status, str) and status in DECISION_CALLS:
            errors["status"] = [decision_call_hint(status)]
        elif not isinstance(status, str) or status not in WORKING_STATUSES:
            errors["status"] = [f"must be one of {', '.join(WORKING_STATUSES)}"]
    if errors:
        raise ValidationFailed(detail="the changes are not valid", errors=errors)
    raise_unknown(unknown)
    decision = None
    if isinstance(status, str) and status != quote.status:
        decision = authorize_transition(actor, quote, status, attachment_kinds=attachment_kinds)
        out["status"] = status
    if "description" in out or "visible_to_customer" in out:
        events.append(EVENT_UPDATED)
    if "assigned_to" in out:
        events.append(EVENT_ASSIGNED)
    if decision is not None:
        events.append(decision.event)
    return PatchPlan(changes=MappingProxyType(out), events=tuple(events), decision=decision)


# --- helpers ------------------------------------------------------------------------


def _is_staff(actor: ActorLike) -> bool:
    return access.is_tenant_wide(actor.kind)


def _has_role(actor: ActorLike, roles: frozenset[str]) -> bool:
    return access.has_role(actor.kind, actor.roles, roles)


def _ensure_writer(actor: ActorLike) -> None:
    if actor.read_only:
        raise Forbidden("this session is read-only")


def _uuid(errors: dict[str, list[str]], field: str, value: object, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            errors.setdefault(field, []).append("is required")
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    errors.setdefault(field, []).append("must be a UUID")
    return None


def _bool(errors: dict[str, list[str]], field: str, value: object, default: bool | None) -> bool:
    if value is None and default is not None:
        return default
    if isinstance(value, bool):
        return value
    errors.setdefault(field, []).append("must be true or false")
    return False
