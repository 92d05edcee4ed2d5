"""Staff accounts and roles, the staff directory, tenant settings, previewing the portal
as one portal account sees it, and what waits for a portal user's action.

Admins never set or see a staff password: creating a user mails an invitation link
(see :mod:`~services.gateway.api_links`) and the person chooses it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import any_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from kit.context import STAFF_ROLES
from kit.db import new_id
from kit.errors import NotFound
from kit.money import CURRENCIES
from services.gateway import actions, domain
from services.gateway.api_auth import TokenResponse
from services.gateway.api_directory import (
    EMAIL,
    TIME_ZONE,
    Text,
    apply,
    claim_email,
    features_field,
    fetch,
    flush_unique,
    list_page,
    pick,
)
from services.gateway.api_links import issue_link, lifetimes
from services.gateway.auth import PREVIEW_MINUTES, AuthCore
from services.gateway.features import caller_features
from services.gateway.models import Customer, PortalAccount, StaffUser, Tenant, TenantSettings
from services.gateway.web import STAFF, Call, PageQuery, expected_version, route

Str = fields.String


# --- staff users ---------------------------------------------------------------------------
class StaffUserSchema(Schema):
    id = fields.UUID(required=True)
    email = Str(required=True)
    first_name = Str(required=True)
    last_name = Str(required=True)
    time_zone = Str(required=True)
    roles = fields.List(Str(validate=validate.OneOf(STAFF_ROLES)), required=True)
    active = fields.Boolean(required=True)
    invitation_pending = fields.Boolean(
        required=True,
        metadata={"description": "The person has not set a password with their invitation yet"},
    )
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class StaffEntrySchema(Schema):
    """One line of the staff directory every staff member may read."""

    id = fields.UUID(required=True)
    first_name = Str(required=True)
    last_name = Str(required=True)
    roles = fields.List(Str(validate=validate.OneOf(STAFF_ROLES)), required=True)
    active = fields.Boolean(required=True)


class UserQuery(PageQuery):
    role = Str(validate=validate.OneOf(STAFF_ROLES))
    active = fields.Boolean()


class UserFields(Schema):
    """No password here, ever: the person sets it through their invitation or a reset."""

    first_name = Text(validate=validate.Length(min=1, max=100))
    last_name = Text(validate=validate.Length(min=1, max=100))
    time_zone = Str(validate=TIME_ZONE)
    roles = fields.List(
        Str(validate=validate.OneOf(STAFF_ROLES)), validate=validate.Length(min=1, max=10)
    )
    active = fields.Boolean()


class UserCreate(UserFields):
    email = Text(required=True, validate=[validate.Length(min=3, max=320), EMAIL])
    first_name = Text(required=True, validate=validate.Length(min=1, max=100))
    last_name = Text(required=True, validate=validate.Length(min=1, max=100))
    roles = fields.List(
        Str(validate=validate.OneOf(STAFF_ROLES)),
        required=True,
        validate=validate.Length(min=1, max=10),
    )


class UserPatch(UserFields):
    version = fields.Integer(validate=validate.Range(min=1))


def _user_event(uow: Any, event: str, user: StaffUser) -> None:
    uow.emit(event, domain.staff_user_event(user))


def _user_values(body: dict[str, Any]) -> dict[str, Any]:
    values = pick(body, "first_name", "last_name", "time_zone", "active")
    domain.raise_if(domain.check_person(None, None, values.get("time_zone")))
    if "roles" in body:
        values["roles"] = domain.check_roles(body["roles"])
    return values


@route(
    "GET",
    "/users",
    callers=STAFF,
    summary="List staff accounts (admin)",
    tag="staff",
    query=UserQuery,
    response=StaffUserSchema,
    many=True,
)
def list_users(call: Call) -> Any:
    domain.require_staff(call.require_actor(), "admin")
    return list_users_page(call)


def list_users_page(call: Call) -> Any:
    stmt = select(StaffUser)
    if "role" in call.query:
        stmt = stmt.where(call.query["role"] == any_(StaffUser.roles))
    if "active" in call.query:
        stmt = stmt.where(StaffUser.active.is_(call.query["active"]))
    with call.gw.db.unit_of_work() as uow:
        return list_page(uow, stmt, StaffUser, call.query)


@route(
    "POST",
    "/users",
    callers=STAFF,
    summary="Create a staff account (admin): the person gets an invitation link by email",
    tag="staff",
    body=UserCreate,
    response=StaffUserSchema,
    status=201,
    idempotency="optional",
)
def create_user(call: Call) -> Any:
    domain.require_staff(call.require_actor(), "admin")
    values = {"time_zone": "UTC", "active": True, **_user_values(call.body)}
    with call.gw.db.unit_of_work() as uow:
        user = StaffUser(email=claim_email(uow, call.body["email"]), password_hash=None, **values)
        uow.session.add(user)
        flush_unique(uow)
        _user_event(uow, "directory.staff_user.created", user)
        if user.active:
            issue_link(uow, "invitation", user, lifetimes(call))
        return user


@route(
    "POST",
    "/users/{id}/invitation",
    callers=STAFF,
    summary="Send the invitation again (admin; a new link, earlier ones stop working)",
    tag="staff",
    response=StaffUserSchema,
    errors=(409,),
)
def reinvite_user(call: Call) -> Any:
    domain.require_staff(call.require_actor(), "admin")
    with call.gw.db.unit_of_work() as uow:
        user = fetch(uow, StaffUser, call.path["id"], lock=True)
        domain.raise_if_cannot_invite(user)
        issue_link(uow, "invitation", user, lifetimes(call))
        return user


@route(
    "GET",
    "/staff",
    callers=STAFF,
    summary="The staff directory: names, roles and whether active (any staff role)",
    tag="staff",
    query=UserQuery,
    response=StaffEntrySchema,
    many=True,
)
def list_staff(call: Call) -> Any:
    return list_users_page(call)


@route(
    "PATCH",
    "/users/{id}",
    callers=STAFF,
    summary="Change a staff account (admin; never its password); deactivating or demoting ends its sessions",
    tag="staff",
    body=UserPatch,
    response=StaffUserSchema,
)
def patch_user(call: Call) -> Any:
    actor = call.require_actor()
    domain.require_staff(actor, "admin")
    values = _user_values(call.body)
    with call.gw.db.unit_of_work() as uow:
        user = fetch(uow, StaffUser, call.path["id"], lock=True)
        domain.check_version(user.version, expected_version(call))
        domain.raise_if(
            domain.check_self_change(actor, user.id, values.get("roles"), values.get("active"))
        )
        reason = domain.revoke_reason(
            disabled=user.active and values.get("active") is False,
            narrowed="roles" in values and domain.narrows(user.roles, values["roles"]),
            password=False,
        )
        if apply(user, values):
            user.version += 1
            _user_event(uow, "directory.staff_user.updated", user)
        if reason:
            # An admin changing their own roles stays signed in here, nowhere else.
            keep = call.claims.get("sid") if user.id == actor.id else None
            AuthCore.revoke_subject(uow.session, user.id, reason, keep_session=keep)
        return user


# --- tenant settings -----------------------------------------------------------------------
class SettingsSchema(Schema):
    features = features_field(required=True)
    approval_terms = Str(required=True)
    work_order_token_hours = fields.Integer(required=True)
    tax_rate_bp = fields.Integer(required=True, metadata={"description": "Basis points"})
    currency = Str(required=True)
    reason_codes = fields.List(Str(), required=True)
    notify_new_request_roles = fields.List(
        Str(validate=validate.OneOf(STAFF_ROLES)),
        required=True,
        metadata={"description": "Staff roles told about a new customer request"},
    )
    version = fields.Integer(required=True)


class SettingsPatch(Schema):
    features = features_field(metadata={"description": "Merged into the current map"})
    approval_terms = Str(validate=validate.Length(max=20000), metadata={"multiline": True})
    work_order_token_hours = fields.Integer(validate=validate.Range(min=1, max=720))
    tax_rate_bp = fields.Integer(
        validate=validate.Range(min=0, max=10000),
        metadata={"description": "Basis points: 825 is 8.25 %"},
    )
    # Only currencies the kit's money type knows (minor-unit digits), so every amount a
    # service computes in the tenant's currency can be computed.
    currency = Str(validate=validate.OneOf(CURRENCIES, error="an ISO 4217 code, e.g. USD"))
    reason_codes = fields.List(
        Text(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(max=domain.MAX_REASON_CODES),
        metadata={"description": "Trimmed; repeats count once"},
    )
    notify_new_request_roles = fields.List(
        Str(validate=validate.OneOf(STAFF_ROLES)),
        validate=validate.Length(max=len(STAFF_ROLES)),
        metadata={"description": "Staff roles told about a new customer request"},
    )
    version = fields.Integer(validate=validate.Range(min=1))


SETTINGS_FIELDS = ("approval_terms", "work_order_token_hours", "tax_rate_bp", "currency")


def _settings(uow: Any, lock: bool = False) -> TenantSettings:
    """The tenant's settings row, created with the defaults the first time it is needed."""
    stmt = select(TenantSettings).limit(1)
    if lock:
        stmt = stmt.with_for_update()
    row = uow.session.scalars(stmt).first()
    if row is None:
        # Two first requests at once: one inserts, the other finds its row.
        uow.session.execute(
            pg_insert(TenantSettings)
            .values(id=new_id(), tenant_id=uow.tenant_id, version=1, **domain.default_settings())
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        row = uow.session.scalars(stmt).one()
    return row


def _settings_out(row: TenantSettings) -> dict[str, Any]:
    keys = (*SETTINGS_FIELDS, "reason_codes", "notify_new_request_roles", "version")
    out = {k: getattr(row, k) for k in keys}
    return {**out, "features": domain.effective_features(row.features)}


@route(
    "GET",
    "/settings",
    callers=STAFF,
    summary="The shop's settings (admin)",
    tag="settings",
    response=SettingsSchema,
)
def get_settings(call: Call) -> Any:
    domain.require_staff(call.require_actor(), "admin")
    with call.gw.db.unit_of_work() as uow:
        return _settings_out(_settings(uow))


@route(
    "PATCH",
    "/settings",
    callers=STAFF,
    summary="Change the shop's settings (admin)",
    tag="settings",
    body=SettingsPatch,
    response=SettingsSchema,
)
def patch_settings(call: Call) -> Any:
    domain.require_staff(call.require_actor(), "admin")
    b = call.body
    changes = pick(b, *SETTINGS_FIELDS)
    if "reason_codes" in b:
        changes["reason_codes"] = domain.clean_reason_codes(b["reason_codes"])
    if "notify_new_request_roles" in b:
        changes["notify_new_request_roles"] = domain.check_notify_roles(
            b["notify_new_request_roles"]
        )
    with call.gw.db.unit_of_work() as uow:
        row = _settings(uow, lock=True)
        domain.check_version(row.version, expected_version(call))
        if "features" in b:
            changes["features"] = domain.effective_features(row.features, b["features"])
        if apply(row, changes):
            row.version += 1
            tenant = uow.session.get(Tenant, uow.tenant_id)
            uow.emit(
                "directory.tenant.updated",
                {"id": tenant.id, "slug": tenant.slug, "name": tenant.name},
            )
            uow.emit("directory.settings.updated", domain.settings_event(row))
        return _settings_out(row)


# --- preview and action required -----------------------------------------------------------
class PreviewRequest(Schema):
    portal_account_id = fields.UUID(
        required=True, metadata={"description": "The account whose view to show"}
    )


@route(
    "POST",
    "/customers/{id}/preview",
    callers=STAFF,
    summary="A short-lived read-only token showing the portal exactly as one of the "
    "customer's portal accounts sees it (its permissions and units)",
    tag="directory",
    body=PreviewRequest,
    response=TokenResponse,
)
def preview(call: Call) -> Any:
    staff = call.require_actor()
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"])
        account = fetch(uow, PortalAccount, str(call.body["portal_account_id"]))
        if account.customer_id != customer.id:  # another customer's account: no such thing
            raise NotFound("No such portal account.")
        actor = domain.preview_actor(staff, account, uow.tenant_id)
    return call.gw.auth.core.start_session(
        call.gw.db.core,
        actor,
        "preview",
        lifetime=timedelta(minutes=PREVIEW_MINUTES),
        with_refresh=False,
    )


class ActionItemSchema(Schema):
    kind = Str(required=True, validate=validate.OneOf(actions.KINDS))
    id = fields.UUID(required=True)
    title = Str(required=True)
    created_at = fields.DateTime(required=True)
    link = Str(required=True, metadata={"description": "Path of the resource, under /api/v1"})


@route(
    "GET",
    "/action-required",
    callers=("portal", "token"),
    summary="What waits for this caller to act on, newest first",
    tag="portal",
    query=PageQuery,
    response=ActionItemSchema,
    many=True,
    errors=(503,),
)
def action_required(call: Call) -> Any:
    """One query over the read views (services.gateway.actions): only what this caller
    may act on (scope, permission, features switched on for it)."""
    actor = call.require_actor()
    features = caller_features(call.gw.db.core, actor)
    with call.gw.db.unit_of_work() as uow:
        return actions.page(uow, actor, features, call.query.get("limit"), call.query.get("cursor"))
