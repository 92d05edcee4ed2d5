"""Who the caller is and what it may see, in one place: :class:`Scope`.

A :class:`Scope` is built from a :class:`kit.context.Actor` (``Scope.of(actor)``) and
holds the caller's kind, roles and permissions together with its customer scope: the
tenant, the customer, the units a restricted account is limited to, whether it sees only
what is visible to customers, what it created itself, and the work order of a token
holder. The rule over one record is :meth:`Scope.matches`; its SQL twin is
:func:`kit.access_sql.scope_filter`, built from the same fields, and a property test
(kit/tests/test_access.py) proves both agree on random records in PostgreSQL. The rule
is written here once; services declare only which fields their resources have
(:class:`Fields`).

The rule, in the order it is applied:

- another tenant's record: never (a scope always names one tenant);
- staff and ``system`` actors: everything of their tenant;
- portal users with a customer: that customer's records visible to customers, and if
  the account is limited to some units, only records about one of those units or
  created by the account itself (:meth:`Scope.whole_customer` drops that limit for
  records about the customer as a whole, such as the customer itself);
- token holders with a work order: that work order's records visible to customers
  (and of the token's customer, when it names one);
- anyone else: nothing.

A field a resource does not have reads as its neutral value, so a rule never widens:
no ``visible_to_customer`` field means always visible; no ``unit_id``, ``created_by``
or ``work_order_id`` field means none (a unit-restricted account then sees only what a
creator field says it made, a token holder sees nothing of a resource without work
orders).

Feature switches are checked here too (:func:`require_feature`): the tenant's
``features`` and the customer's ``portal_features``; staff are never feature-gated.

Pure (standard library and :mod:`kit.context`/:mod:`kit.errors` only), so every
``domain.py`` can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from kit.context import PORTAL_PERMISSIONS, STAFF_ROLES
from kit.errors import Forbidden

# --- callers ---------------------------------------------------------------------------

# staff | portal (a customer's user) | token (a work-order link's holder) | system (built
# by the services themselves, never from a token)
CALLER_KINDS: tuple[str, ...] = ("staff", "portal", "token", "system")
# Kinds that act inside their whole tenant, with every staff role for ``system``.
TENANT_WIDE_KINDS: frozenset[str] = frozenset({"staff", "system"})

__all__ = [
    "ALL_FIELDS",
    "CALLER_KINDS",
    "FIELD_NAMES",
    "PORTAL_PERMISSIONS",
    "STAFF_ROLES",
    "TENANT_WIDE_KINDS",
    "ActorLike",
    "Fields",
    "Scope",
    "feature_enabled",
    "has_role",
    "is_tenant_wide",
    "require_feature",
]


class ActorLike(Protocol):
    """What the scope reads of a caller (``kit.context.Actor`` fits)."""

    @property
    def kind(self) -> str: ...
    @property
    def id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...
    @property
    def roles(self) -> tuple[str, ...]: ...
    @property
    def permissions(self) -> tuple[str, ...]: ...
    @property
    def customer_id(self) -> str | None: ...
    @property
    def unit_ids(self) -> tuple[str, ...] | None: ...
    @property
    def work_order_id(self) -> str | None: ...
    @property
    def read_only(self) -> bool: ...


def is_tenant_wide(kind: str) -> bool:
    """Staff and ``system`` act inside their whole tenant."""
    return kind in TENANT_WIDE_KINDS


def require_system(actor: ActorLike) -> None:
    """Only the services themselves (a ``system`` actor, never built from a token): e.g.
    the paged snapshots the gateway's read views are rebuilt from."""
    if actor.kind != "system":
        raise Forbidden("only the system may do that")


def has_role(kind: str, held: Iterable[str], wanted: Iterable[str]) -> bool:
    """Whether a caller of ``kind`` holding roles ``held`` has one of ``wanted``: only
    staff hold roles, and ``system`` has every staff role."""
    if kind == "system":
        return True
    return kind == "staff" and not frozenset(wanted).isdisjoint(held)


# --- which scope fields a resource has -------------------------------------------------

# The record fields the rule reads, by their scope name.
FIELD_NAMES: tuple[str, ...] = (
    "tenant_id",
    "customer_id",
    "unit_id",
    "visible_to_customer",
    "created_by",
    "work_order_id",
)


@dataclass(frozen=True)
class Fields:
    """Where a resource keeps each field the rule reads: the attribute (or column) name,
    or None when the resource has no such field (it then reads as its neutral value, see
    the module doc). Every resource has a tenant and a customer."""

    tenant_id: str = "tenant_id"
    customer_id: str = "customer_id"
    unit_id: str | None = "unit_id"
    visible_to_customer: str | None = "visible_to_customer"
    created_by: str | None = "created_by"
    work_order_id: str | None = "work_order_id"

    def mapping(self) -> dict[str, str]:
        """Scope field name -> the resource's name for it, for the fields it has."""
        names = {name: getattr(self, name) for name in FIELD_NAMES}
        return {name: attr for name, attr in names.items() if attr is not None}


ALL_FIELDS = Fields()


def _read(record: Any, fields: Fields, name: str) -> Any:
    attr = getattr(fields, name)
    if attr is None:
        return True if name == "visible_to_customer" else None
    return getattr(record, attr)


# --- the scope -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """A caller and the records it may see, as data (for checks and list queries).

    Two scopes are equal when they see the same records: the caller's identity (kind,
    id, roles, permissions, read-only) rides along for role and permission checks but
    takes no part in the comparison.
    """

    tenant_id: str
    everything: bool = False  # staff/system: the whole tenant
    customer_id: str | None = None
    # None: no unit restriction. Otherwise only records about one of these units, or
    # created by ``creator_id`` (a restricted account still sees what it made).
    unit_ids: frozenset[str] | None = None
    creator_id: str | None = None
    work_order_id: str | None = None
    nothing: bool = False
    kind: str = field(default="", compare=False)
    caller_id: str = field(default="", compare=False)
    roles: frozenset[str] = field(default=frozenset(), compare=False)
    permissions: frozenset[str] = field(default=frozenset(), compare=False)
    read_only: bool = field(default=False, compare=False)

    @classmethod
    def of(cls, actor: ActorLike) -> Scope:
        """What ``actor`` is and may see: the one definition for checks and lists."""
        who: dict[str, Any] = {
            "kind": actor.kind,
            "caller_id": actor.id,
            "roles": frozenset(actor.roles),
            "permissions": frozenset(actor.permissions),
            "read_only": actor.read_only,
        }
        tenant = actor.tenant_id
        if is_tenant_wide(actor.kind):
            return cls(tenant_id=tenant, everything=True, **who)
        if actor.kind == "portal" and actor.customer_id:
            if actor.unit_ids is None:
                return cls(tenant_id=tenant, customer_id=actor.customer_id, **who)
            return cls(
                tenant_id=tenant,
                customer_id=actor.customer_id,
                unit_ids=frozenset(actor.unit_ids),
                creator_id=actor.id,
                **who,
            )
        if actor.kind == "token" and actor.work_order_id:
            return cls(
                tenant_id=tenant,
                customer_id=actor.customer_id or None,
                work_order_id=actor.work_order_id,
                **who,
            )
        return cls(tenant_id=tenant, nothing=True, **who)

    # -- who the caller is --

    @property
    def is_staff(self) -> bool:
        """Staff or ``system``: acts inside the whole tenant."""
        return is_tenant_wide(self.kind)

    def has_role(self, *roles: str) -> bool:
        """A staff role among ``roles`` (``system`` has every staff role)."""
        return has_role(self.kind, self.roles, roles)

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    # -- what it may see --

    def whole_customer(self) -> Scope:
        """This scope without its unit restriction, for records about the customer as a
        whole rather than about one unit (the customer itself, its contacts): an account
        limited to some units (even to none) still sees its own customer. Everything else
        stays: another customer, a token holder's work order, nothing."""
        return replace(self, unit_ids=None, creator_id=None)

    def matches(self, record: Any, fields: Fields = ALL_FIELDS) -> bool:
        """The rule for one record. :func:`kit.access_sql.scope_filter` is its SQL twin:
        change both (the property test in kit/tests/test_access.py checks they agree)."""
        if self.nothing or _read(record, fields, "tenant_id") != self.tenant_id:
            return False
        if self.everything:
            return True
        if not _read(record, fields, "visible_to_customer"):
            return False
        if (
            self.customer_id is not None
            and _read(record, fields, "customer_id") != self.customer_id
        ):
            return False
        if (
            self.work_order_id is not None
            and _read(record, fields, "work_order_id") != self.work_order_id
        ):
            return False
        if self.unit_ids is None:
            return True
        unit = _read(record, fields, "unit_id")
        creator = _read(record, fields, "created_by")
        return (unit is not None and unit in self.unit_ids) or (
            self.creator_id is not None and creator == self.creator_id
        )


# --- feature switches ------------------------------------------------------------------


def feature_enabled(
    feature: str,
    tenant_features: Mapping[str, Any] | None,
    customer_features: Mapping[str, Any] | None,
) -> bool:
    """On when the tenant has it on (the default) and the customer's ``portal_features``
    does not switch it off (the default is on too)."""
    tenant_on = bool((tenant_features or {}).get(feature, True))
    return tenant_on and bool((customer_features or {}).get(feature, True))


def require_feature(
    feature: str,
    tenant_features: Mapping[str, Any] | None,
    customer_features: Mapping[str, Any] | None,
    actor: ActorLike,
) -> None:
    """``403 feature_disabled`` when ``feature`` is switched off for a portal user or
    token holder; staff (and ``system``) are never feature-gated."""
    if is_tenant_wide(actor.kind):
        return
    if not feature_enabled(feature, tenant_features, customer_features):
        raise Forbidden(f"The {feature} feature is switched off for you.", "feature_disabled")
