"""Portal accounts: the logins of a customer's people, with their permissions and
allowed units. Disabling, narrowing or deleting an account ends its sessions at once,
in the same transaction, because access tokens carry what the account may do.

Staff never set or see an account's password: creating an account mails the person an
invitation link (see :mod:`~services.gateway.api_links`) and the person chooses it."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select

from kit.context import PORTAL_PERMISSIONS
from kit.errors import NotFound
from services.gateway import domain
from services.gateway.api_directory import (
    EMAIL,
    TIME_ZONE,
    Text,
    apply,
    claim_email,
    fetch,
    flush_unique,
    list_page,
    pick,
)
from services.gateway.api_links import issue_link, lifetimes
from services.gateway.auth import AuthCore
from services.gateway.models import Contact, Customer, PortalAccount, Unit
from services.gateway.web import STAFF, Call, PageQuery, expected_version, route

Str = fields.String


class PortalAccountSchema(Schema):
    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    contact_id = fields.UUID(allow_none=True)
    email = Str(required=True)
    first_name = Str(required=True)
    last_name = Str(required=True)
    time_zone = Str(required=True)
    permissions = fields.List(Str(), required=True)
    unit_ids = fields.List(
        fields.UUID(), allow_none=True, metadata={"description": "null: every unit of the customer"}
    )
    enabled = fields.Boolean(required=True)
    invitation_pending = fields.Boolean(
        required=True,
        metadata={"description": "The person has not set a password with their invitation yet"},
    )
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class AccountFields(Schema):
    """No password here, ever: the person sets it through their invitation or a reset."""

    email = Text(validate=[validate.Length(min=3, max=320), EMAIL])
    first_name = Text(validate=validate.Length(min=1, max=100))
    last_name = Text(validate=validate.Length(min=1, max=100))
    time_zone = Str(validate=TIME_ZONE)
    permissions = fields.List(
        Str(validate=validate.OneOf(PORTAL_PERMISSIONS)), validate=validate.Length(max=20)
    )
    unit_ids = fields.List(
        fields.UUID(),
        allow_none=True,
        validate=validate.Length(max=1000),
        metadata={
            "description": "Units of this customer (null: all of them); any other id is "
            "404 not_found with an error under unit_ids"
        },
    )
    enabled = fields.Boolean()
    contact_id = fields.UUID(
        allow_none=True,
        metadata={"description": "A contact of this customer; any other is 404 not_found"},
    )


class AccountCreate(AccountFields):
    email = Text(required=True, validate=[validate.Length(min=3, max=320), EMAIL])
    first_name = Text(required=True, validate=validate.Length(min=1, max=100))
    last_name = Text(required=True, validate=validate.Length(min=1, max=100))


class AccountPatch(AccountFields):
    version = fields.Integer(validate=validate.Range(min=1))


def _account_values(
    uow: Any, body: dict[str, Any], customer_id: str, account: PortalAccount | None
) -> dict[str, Any]:
    """Checked column values of a new or changed portal account."""
    values = pick(body, "first_name", "last_name", "time_zone", "enabled")
    domain.raise_if(domain.check_person(None, None, values.get("time_zone")))
    if "email" in body:
        values["email"] = claim_email(uow, body["email"], account.id if account else None)
    if "permissions" in body:
        values["permissions"] = domain.check_permissions(body["permissions"])
    if body.get("unit_ids") is not None:
        wanted = list(dict.fromkeys(str(u) for u in body["unit_ids"]))
        found = uow.session.scalars(
            select(Unit.id).where(Unit.customer_id == customer_id, Unit.id.in_(wanted))
        )
        foreign = domain.check_unit_ids(wanted, found)
        if foreign:  # another customer's, another tenant's or none: never say which
            raise NotFound("No such unit for this customer.", foreign)
        values["unit_ids"] = wanted
    elif "unit_ids" in body:
        values["unit_ids"] = None
    if body.get("contact_id") is not None:
        contact_id = str(body["contact_id"])
        ours = select(Contact.id).where(
            Contact.id == contact_id, Contact.customer_id == customer_id
        )
        if uow.session.scalar(ours) is None:
            raise NotFound("No such contact.", {"contact_id": ["Not a contact of this customer."]})
        values["contact_id"] = contact_id
    elif "contact_id" in body:
        values["contact_id"] = None
    return values


def account_event(uow: Any, event: str, account: PortalAccount) -> None:
    """Services that act for a customer's people keep a copy from these events."""
    uow.emit(event, domain.portal_account_event(account))


@route(
    "GET",
    "/customers/{id}/portal-accounts",
    callers=STAFF,
    summary="List a customer's portal accounts",
    tag="directory",
    query=PageQuery,
    response=PortalAccountSchema,
    many=True,
)
def list_accounts(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"])
        stmt = select(PortalAccount).where(PortalAccount.customer_id == customer.id)
        return list_page(uow, stmt, PortalAccount, call.query)


@route(
    "POST",
    "/customers/{id}/portal-accounts",
    callers=STAFF,
    summary="Give a customer's person a portal login: they get an invitation link by email",
    tag="directory",
    body=AccountCreate,
    response=PortalAccountSchema,
    status=201,
    idempotency="optional",
)
def create_account(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"])
        values = {
            "time_zone": "UTC",
            "enabled": True,
            "permissions": [],
            "unit_ids": None,
            **_account_values(uow, call.body, customer.id, None),
        }
        account = PortalAccount(customer_id=customer.id, password_hash=None, **values)
        uow.session.add(account)
        flush_unique(uow)
        account_event(uow, "directory.portal_account.created", account)
        if account.enabled:
            issue_link(uow, "invitation", account, lifetimes(call))
        return account


@route(
    "POST",
    "/portal-accounts/{id}/invitation",
    callers=STAFF,
    summary="Send the invitation again (a new link; earlier ones stop working)",
    tag="directory",
    response=PortalAccountSchema,
    errors=(409,),
)
def reinvite_account(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        account = fetch(uow, PortalAccount, call.path["id"], lock=True)
        domain.raise_if_cannot_invite(account)
        issue_link(uow, "invitation", account, lifetimes(call))
        return account


@route(
    "PATCH",
    "/portal-accounts/{id}",
    callers=STAFF,
    summary="Change a portal account (never its password); disabling or narrowing it ends its sessions",
    tag="directory",
    body=AccountPatch,
    response=PortalAccountSchema,
)
def patch_account(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        account = fetch(uow, PortalAccount, call.path["id"], lock=True)
        domain.check_version(account.version, expected_version(call))
        values = _account_values(uow, call.body, account.customer_id, account)
        narrowed = (
            "permissions" in values and domain.narrows(account.permissions, values["permissions"])
        ) or ("unit_ids" in values and domain.narrows_units(account.unit_ids, values["unit_ids"]))
        reason = domain.revoke_reason(
            disabled=account.enabled and values.get("enabled") is False,
            narrowed=narrowed,
            password=False,
        )
        if apply(account, values):
            account.version += 1
            flush_unique(uow)
            account_event(uow, "directory.portal_account.updated", account)
        if reason:
            AuthCore.revoke_subject(uow.session, account.id, reason)
        return account


@route(
    "DELETE",
    "/portal-accounts/{id}",
    callers=STAFF,
    summary="Delete a portal account and end its sessions",
    tag="directory",
    status=204,
)
def delete_account(call: Call) -> Any:
    """Revoke every session of the account, then delete its row, in one transaction.

    Nothing in the database points at a portal account: its sessions name it by id
    without a foreign key (they stay behind, revoked, as the audit of its sign-ins) and
    refresh tokens belong to sessions. Other services keep the id and the name they got
    with their own records. Deleting frees the email for a new account.
    """
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        account = fetch(uow, PortalAccount, call.path["id"], lock=True)
        domain.check_version(account.version, expected_version(call))
        AuthCore.revoke_subject(uow.session, account.id, "subject_deleted")
        account_event(uow, "directory.portal_account.deleted", account)
        uow.session.delete(account)
    return None
