"""Pure rules of the gateway: who a token describes, who may manage the directory,
and what valid directory data looks like. No I/O here."""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from kit import access
from kit.context import PORTAL_PERMISSIONS, STAFF_ROLES, Actor
from kit.errors import Conflict, Forbidden, ValidationFailed, VersionConflict
from kit.ids import is_uuid

NOTIFY_BY = ("email", "sms", "both", "none")
TENANT_FEATURES = ("quotes", "bookings", "payments", "history")
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
PHONE_RE = re.compile(r"^\+?[0-9 ()\-.]{6,20}$")
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DIRECTORY_WRITERS = ("admin", "manager", "advisor")
MAX_REASON_CODES = 50


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def valid_email(email: str) -> bool:
    return bool(EMAIL_RE.match(email)) and len(email) <= 320


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# --- tokens <-> actors -----------------------------------------------------------------
def claims_for(actor: Actor, session_id: str) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": actor.id,
        "tid": actor.tenant_id,
        "kind": actor.kind,
        "sid": session_id,
        "name": actor.name,
    }
    if actor.kind == "staff":
        claims["roles"] = list(actor.roles)
    else:
        claims["perms"] = list(actor.permissions)
        claims["cid"] = actor.customer_id
        claims["units"] = list(actor.unit_ids) if actor.unit_ids is not None else None
        if actor.read_only:
            claims["ro"] = True
    return claims


def _strings(value: Any) -> tuple[str, ...] | None:
    """A claim that must be a list of strings; None when it is anything else."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def actor_from_claims(claims: Mapping[str, Any]) -> Actor | None:
    kind = claims.get("kind")
    tid, sub, sid = claims.get("tid"), claims.get("sub"), claims.get("sid")
    if not (
        isinstance(tid, str)
        and is_uuid(tid)
        and isinstance(sub, str)
        and isinstance(sid, str)
        and is_uuid(sid)
    ):
        return None
    if kind == "staff":
        roles = tuple(r for r in _strings(claims.get("roles")) or () if r in STAFF_ROLES)
        if not roles:
            return None
        return Actor(
            kind="staff", id=sub, tenant_id=tid, roles=roles, name=str(claims.get("name", ""))
        )
    if kind == "portal":
        cid = claims.get("cid")
        perms = _strings(claims.get("perms"))
        units = claims.get("units")
        unit_ids = _strings(units)
        if not (isinstance(cid, str) and is_uuid(cid)) or perms is None:
            return None
        if units is not None and (unit_ids is None or not all(is_uuid(u) for u in unit_ids)):
            return None
        return Actor(
            kind="portal",
            id=sub,
            tenant_id=tid,
            permissions=tuple(p for p in perms if p in PORTAL_PERMISSIONS),
            customer_id=cid,
            unit_ids=unit_ids if units is not None else None,
            read_only=bool(claims.get("ro")),
            name=str(claims.get("name", "")),
        )
    return None


def may_sign_in(subject: Any) -> bool:
    """Staff must be active, portal accounts enabled."""
    return bool(getattr(subject, "active", getattr(subject, "enabled", False)))


def actor_for(subject: Any, tenant_id: str) -> Actor:
    name = f"{subject.first_name} {subject.last_name}".strip()
    if hasattr(subject, "roles"):
        return Actor(
            kind="staff", id=subject.id, tenant_id=tenant_id, roles=tuple(subject.roles), name=name
        )
    return Actor(
        kind="portal",
        id=subject.id,
        tenant_id=tenant_id,
        permissions=tuple(subject.permissions or ()),
        customer_id=subject.customer_id,
        unit_ids=tuple(subject.unit_ids) if subject.unit_ids is not None else None,
        name=name,
    )


def preview_actor(staff: Actor, account: Any, tenant_id: str) -> Actor:
    """A read-only look at the portal exactly as ``account`` sees it: its customer, its
    permissions, its units, and its id (so records "created by me" match too). The name
    says who is looking; writes are refused because it is read-only."""
    if not may_sign_in(account):
        raise Conflict("The account is disabled; it sees nothing to preview.")
    return replace(actor_for(account, tenant_id), read_only=True, name=f"Preview by {staff.name}")


# --- rate limits -----------------------------------------------------------------------
# The ``from_env`` readers below parse the mapping the service passes in (its
# Settings.raw): a pure domain reads no environment of its own.
@dataclass(frozen=True)
class RateLimits:
    account: int = 5
    address: int = 30
    window_seconds: int = 300

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RateLimits:
        return cls(
            account=int(env.get("LOGIN_LIMIT_PER_ACCOUNT", "5")),
            address=int(env.get("LOGIN_LIMIT_PER_ADDRESS", "30")),
            window_seconds=int(env.get("LOGIN_LIMIT_WINDOW_SECONDS", "300")),
        )


def retry_after(
    window_start: datetime, count: int, now: datetime, limit: int, window_seconds: int
) -> int:
    """Seconds to wait, or 0 when another attempt is allowed."""
    elapsed = (now - window_start).total_seconds()
    if elapsed >= window_seconds or count < limit:
        return 0
    return max(1, int(window_seconds - elapsed + 0.999))


# --- the client's address behind proxies -------------------------------------------------
def trusted_proxy_hops(env: Mapping[str, str]) -> int:
    """``TRUSTED_PROXY_HOPS``: how many proxies of ours stand in front of the gateway,
    each appending the address it was connected from to ``X-Forwarded-For``."""
    raw = env.get("TRUSTED_PROXY_HOPS", "").strip() or "0"
    if not raw.isdigit() or int(raw) > 16:
        raise ValueError("TRUSTED_PROXY_HOPS must be a whole number from 0 to 16")
    return int(raw)


def _plain_address(entry: str) -> str | None:
    """An IP address out of one ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:80``,
    ``[2001:db8::1]:80`` or ``2001:db8::1``), or None when it is not one."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str], hops: int) -> str:
    """The address a request came from, for per-address limits.

    ``peer`` is the socket's peer, ``forwarded_for`` every ``X-Forwarded-For`` header of
    the request in order, ``hops`` the number of our own proxies in front of us. Each of
    them appends the address it was connected from, so the client is the ``hops``-th
    entry from the right; anything further left was sent by the client and is never
    read. With ``hops == 0`` the header is ignored.

    When the header has fewer entries than ``hops`` (or the entry is not an address),
    the request did not come through all of our proxies, e.g. a pod calling the Service
    directly, or the setting is wrong: then no entry is known to be written by a proxy
    of ours, so the socket peer, which nobody can forge, is used instead. At worst that
    groups several clients under one address (a stricter limit), never a looser one.
    """
    fallback = peer or "unknown"
    if hops <= 0:
        return fallback
    entries = [e for header in forwarded_for for e in header.split(",")]
    entries = [e.strip() for e in entries if e.strip()]
    if len(entries) < hops:
        return fallback
    return _plain_address(entries[-hops]) or fallback


# --- who may manage the directory ------------------------------------------------------
def require_staff(actor: Actor, *roles: str) -> None:
    if actor.kind != "staff":
        raise Forbidden("Only shop staff may do this.")
    if roles and not actor.has_role(*roles):
        raise Forbidden(f"This needs the {' or '.join(roles)} role.")


def require_writable(actor: Actor) -> None:
    if actor.read_only:
        raise Forbidden("A preview is read-only.")


def check_roles(roles: Iterable[str]) -> list[str]:
    roles = list(dict.fromkeys(roles))
    bad = [r for r in roles if r not in STAFF_ROLES]
    if bad or not roles:
        raise ValidationFailed(
            "Unknown or missing roles.", {"roles": [f"choose from {', '.join(STAFF_ROLES)}"]}
        )
    return roles


def check_permissions(perms: Iterable[str]) -> list[str]:
    perms = list(dict.fromkeys(perms))
    bad = [p for p in perms if p not in PORTAL_PERMISSIONS]
    if bad:
        raise ValidationFailed(
            "Unknown permissions.", {"permissions": [f"unknown: {', '.join(bad)}"]}
        )
    return perms


def check_person(
    first_name: str | None, last_name: str | None, time_zone: str | None = None
) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if first_name is not None and not first_name.strip():
        errors["first_name"] = ["First name is required."]
    if last_name is not None and not last_name.strip():
        errors["last_name"] = ["Last name is required."]
    if time_zone is not None and time_zone not in time_zones():
        errors["time_zone"] = ["Not an IANA time zone name."]
    return errors


def check_contact(email: str | None, phone: str | None, notify_by: str) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if email and not valid_email(email):
        errors["email"] = ["Not a valid email address."]
    if phone and not PHONE_RE.match(phone):
        errors["phone"] = ["Not a valid phone number."]
    if notify_by in ("email", "both") and not email:
        errors.setdefault("email", []).append("An email address is needed to notify by email.")
    if notify_by in ("sms", "both") and not phone:
        errors.setdefault("phone", []).append("A phone number is needed to notify by SMS.")
    return errors


def raise_if(errors: dict[str, list[str]]) -> None:
    if errors:
        raise ValidationFailed("Some fields are not valid.", errors)


def valid_slug(slug: str) -> bool:
    return bool(SLUG_RE.match(slug))


# --- the directory ---------------------------------------------------------------------
def require_directory_writer(actor: Actor) -> None:
    """Customers, contacts, units and portal accounts: every staff role but technician."""
    require_staff(actor, *DIRECTORY_WRITERS)


# Who sees which directory rows is kit.access.Scope's rule; these say where the rule
# finds its fields. A customer row is its own customer, a unit row its own unit; neither
# has a visibility switch, an author or a work order (so a token holder sees none).
# Staff see every customer and unit of their tenant; a portal user its own customer
# (``Scope.whole_customer``: also when its account is limited to some units) and, if
# limited, only those units.
CUSTOMER_FIELDS = access.Fields(
    customer_id="id", unit_id=None, visible_to_customer=None, created_by=None, work_order_id=None
)
UNIT_FIELDS = access.Fields(
    unit_id="id", visible_to_customer=None, created_by=None, work_order_id=None
)


def check_version(current: int, expected: int | None) -> None:
    """Optimistic concurrency: a version the caller based its change on must be current."""
    if expected is not None and expected != current:
        raise VersionConflict(
            f"It changed meanwhile (version {current}, not {expected}); reload it."
        )


def full_name(first_name: str, last_name: str) -> str:
    return f"{first_name} {last_name}".strip()


def check_email(email: str, field: str = "email") -> dict[str, list[str]]:
    return {} if valid_email(email) else {field: ["Not a valid email address."]}


def default_notify_by(email: str | None, phone: str | None) -> str:
    """When none is chosen: by email if there is one, else by SMS if there is a phone."""
    return "email" if email else "sms" if phone else "none"


def check_unit(make: str, model: str, serial: str, fleet_number: str) -> dict[str, list[str]]:
    if any(v.strip() for v in (make, model, serial, fleet_number)):
        return {}
    return {"_schema": ["Give at least one of make, model, serial or fleet number."]}


def check_unit_ids(requested: Iterable[str], customer_units: Iterable[str]) -> dict[str, list[str]]:
    """Every allowed unit must be one of the customer's own units."""
    foreign = sorted(set(requested) - set(customer_units))
    if foreign:
        return {"unit_ids": [f"Not units of this customer: {', '.join(foreign)}."]}
    return {}


def check_self_change(
    actor: Actor, target_id: str, roles: Iterable[str] | None, active: bool | None
) -> dict[str, list[str]]:
    """An admin cannot lock themselves out: keep your own admin role and stay active."""
    if actor.id != target_id:
        return {}
    errors: dict[str, list[str]] = {}
    if roles is not None and "admin" not in roles:
        errors["roles"] = ["You cannot remove your own admin role."]
    if active is False:
        errors["active"] = ["You cannot deactivate yourself."]
    return errors


def narrows(old: Iterable[str], new: Iterable[str]) -> bool:
    """True when ``new`` takes away any role or permission that ``old`` granted."""
    return bool(set(old) - set(new))


def narrows_units(old: Iterable[str] | None, new: Iterable[str] | None) -> bool:
    """True when the allowed units shrink (None means every unit of the customer)."""
    if new is None:
        return False
    return old is None or bool(set(old) - set(new))


def revoke_reason(*, disabled: bool, narrowed: bool, password: bool) -> str | None:
    """Why a change ends a subject's sessions at once, if it does. Access tokens carry
    roles, permissions and units, so taking any away must not wait for them to expire."""
    if disabled:
        return "subject_disabled"
    if narrowed:
        return "access_changed"
    return "password_changed" if password else None


# --- tenant settings -------------------------------------------------------------------
DEFAULT_FEATURES: Mapping[str, bool] = MappingProxyType({f: True for f in TENANT_FEATURES})


def default_settings() -> dict[str, Any]:
    """What a tenant gets until an admin changes it."""
    return {
        "features": dict(DEFAULT_FEATURES),
        "approval_terms": "",
        "work_order_token_hours": 48,
        "tax_rate_bp": 0,
        "currency": "USD",
        "reason_codes": [],
        "notify_new_request_roles": list(DEFAULT_NOTIFY_NEW_REQUEST_ROLES),
    }


def effective_features(
    stored: Mapping[str, Any] | None, changes: Mapping[str, bool] | None = None
) -> dict[str, bool]:
    """Every known feature with its value: defaults, then stored, then ``changes``."""
    out = dict(DEFAULT_FEATURES)
    for source in (stored or {}, changes or {}):
        out.update({k: bool(v) for k, v in source.items() if k in DEFAULT_FEATURES})
    return out


def clean_reason_codes(codes: Iterable[str]) -> list[str]:
    """Trimmed, de-duplicated (first one wins), each 1..64 characters, at most 50."""
    out = list(dict.fromkeys(c.strip() for c in codes))
    bad = [c for c in out if not 1 <= len(c) <= 64]
    if bad:
        raise ValidationFailed(
            "Some reason codes are not valid.",
            {"reason_codes": ["Each reason code needs 1 to 64 characters."]},
        )
    if len(out) > MAX_REASON_CODES:
        raise ValidationFailed(
            "Too many reason codes.",
            {"reason_codes": [f"At most {MAX_REASON_CODES} reason codes."]},
        )
    return out


def staff_user_event(user: Any) -> dict[str, Any]:
    """Data of ``directory.staff_user.*``: what other services keep about staff."""
    return {
        "id": user.id,
        "name": full_name(user.first_name, user.last_name),
        "email": user.email,
        "roles": list(user.roles),
        "active": user.active,
    }


def settings_event(row: Any) -> dict[str, Any]:
    """Data of ``directory.settings.updated``: the tenant's settings in full."""
    return {
        "features": effective_features(row.features),
        "notify_new_request_roles": list(row.notify_new_request_roles),
        "tax_rate_bp": row.tax_rate_bp,
        "currency": row.currency,
        "approval_terms": row.approval_terms,
        "reason_codes": list(row.reason_codes),
        "work_order_token_hours": row.work_order_token_hours,
    }


def customer_event(customer: Any) -> dict[str, Any]:
    """Data of ``directory.customer.*``: the customer and its settings."""
    return {
        "id": customer.id,
        "name": customer.name,
        "account_number": customer.account_number,
        "require_invoice_authorization": customer.require_invoice_authorization,
        "portal_features": dict(customer.portal_features or {}),
    }


def portal_account_event(account: Any) -> dict[str, Any]:
    """Data of ``directory.portal_account.*``: named fields only, so that the password
    hash (or any secret added to the row later) can never leave in an event."""
    return {
        "id": account.id,
        "customer_id": account.customer_id,
        "contact_id": account.contact_id,
        "name": full_name(account.first_name, account.last_name),
        "email": account.email,
        "permissions": list(account.permissions),
        "unit_ids": None if account.unit_ids is None else [str(u) for u in account.unit_ids],
        "enabled": account.enabled,
    }


# --- invitation and password-reset links -------------------------------------------------
LINK_PURPOSES = ("invitation", "password_reset")


@dataclass(frozen=True)
class LinkLifetimes:
    """How long a mailed link works: an invitation for days, a reset for an hour."""

    invitation: timedelta = timedelta(hours=72)
    password_reset: timedelta = timedelta(minutes=60)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LinkLifetimes:
        return cls(
            invitation=timedelta(hours=int(env.get("INVITATION_TTL_HOURS", "72"))),
            password_reset=timedelta(minutes=int(env.get("PASSWORD_RESET_TTL_MINUTES", "60"))),
        )

    def of(self, purpose: str) -> timedelta:
        return self.invitation if purpose == "invitation" else self.password_reset


@dataclass(frozen=True)
class ResetLimits:
    """Password-reset requests: per account (silently ignored beyond it), per address
    (429), and the least time every answer takes, found or not."""

    account: int = 3
    address: int = 20
    min_seconds: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ResetLimits:
        return cls(
            account=int(env.get("PASSWORD_RESET_LIMIT_PER_ACCOUNT", "3")),
            address=int(env.get("PASSWORD_RESET_LIMIT_PER_ADDRESS", "20")),
            min_seconds=int(env.get("PASSWORD_RESET_MIN_MS", "250")) / 1000,
        )


def link_token(tenant_id: str, secret: str) -> str:
    """The link's token as mailed: the tenant travels with the secret, as in refresh
    tokens, so the lookup runs in that tenant's unit of work (RLS)."""
    return f"{tenant_id}.{secret}"


def split_link_token(presented: str) -> tuple[str, str] | None:
    tenant_id, _, secret = (presented or "").partition(".")
    if not is_uuid(tenant_id) or not secret:
        return None
    return tenant_id, secret


def link_usable(
    wanted: str, purpose: str, used_at: datetime | None, expires_at: datetime, now: datetime
) -> bool:
    """A link works once, before it expires, and only for what it was issued for."""
    return purpose == wanted and used_at is None and now < expires_at


def subject_kind(subject: Any) -> str:
    return "staff" if hasattr(subject, "roles") else "portal"


def invitation_pending(subject: Any) -> bool:
    """The person has not set a password yet (nobody else ever sets one)."""
    return getattr(subject, "password_hash", None) is None


def may_use_link(purpose: str, subject: Any) -> bool:
    """Disabled accounts get nothing; an invitation only sets a first password."""
    if subject is None or not may_sign_in(subject):
        return False
    return purpose != "invitation" or invitation_pending(subject)


def raise_if_cannot_invite(subject: Any) -> None:
    """An invitation again only for someone who can still use it."""
    if not invitation_pending(subject):
        raise Conflict("This person has already set a password; they can ask for a password reset.")
    if not may_sign_in(subject):
        raise Conflict("The account is disabled; enable it first.")


# --- feature switches --------------------------------------------------------------------
DEFAULT_NOTIFY_NEW_REQUEST_ROLES = ("manager", "advisor")


def caller_features(
    tenant_features: Mapping[str, Any] | None, customer_features: Mapping[str, Any] | None
) -> dict[str, bool]:
    """Every feature with its effective state for a portal user or token holder: on when
    the tenant has it on and the customer's ``portal_features`` does not switch it off
    (the rule is :func:`kit.access.feature_enabled`, which the gateway enforces with
    :func:`kit.access.require_feature`)."""
    tenant = effective_features(tenant_features)
    return {f: access.feature_enabled(f, tenant, customer_features) for f in TENANT_FEATURES}


def check_notify_roles(roles: Iterable[str]) -> list[str]:
    """Staff roles told about a new customer request: known roles, none repeated; an
    empty list means nobody is told (beyond an assignee)."""
    roles = list(dict.fromkeys(roles))
    bad = [r for r in roles if r not in STAFF_ROLES]
    if bad:
        raise ValidationFailed(
            "Unknown roles.",
            {"notify_new_request_roles": [f"choose from {', '.join(STAFF_ROLES)}"]},
        )
    return roles
