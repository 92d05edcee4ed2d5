"""The shop's directory: customers, their contacts and units.

Every query runs in a tenant unit of work, so another tenant's rows do not exist here.
Portal callers are narrowed further to their own customer (and their allowed units);
anything outside that scope is ``404 not_found``, never a hint that it exists.
The helpers at the top are shared with :mod:`~services.gateway.api_accounts` and
:mod:`~services.gateway.api_staff`.
"""

from __future__ import annotations

import uuid
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from kit.access import Scope
from kit.access_sql import columns_of, scope_filter
from kit.errors import Conflict, NotFound
from services.gateway import domain
from services.gateway.models import Contact, Customer, PortalAccount, StaffUser, Unit
from services.gateway.openapi import NOT_BLANK, TEXT_REFUSED, WHITESPACE, padded
from services.gateway.web import (
    PORTAL,
    STAFF,
    Call,
    PageQuery,
    expected_version,
    read_page,
    route,
)

Str = fields.String
STAFF_OR_PORTAL = STAFF + PORTAL
UNIQUE_VIOLATION = "23505"  # PostgreSQL SQLSTATE


class Text(fields.String):
    """A string trimmed of surrounding whitespace before its validators run.

    Its length limits also hold for the text as sent, as the OpenAPI document's
    ``maxLength`` says (a value at the limit padded with spaces is too long), and the
    document allows whitespace around a value its ``pattern`` describes."""

    strips = True  # the OpenAPI document then asks for a non-blank value if one is required

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        for validator in self.validators:
            if isinstance(validator, validate.Length):
                validator(text)
        return text.strip()


# Addresses and numbers as domain.EMAIL_RE and domain.PHONE_RE read them (after
# trimming), spelled so that Python and JSON Schema (ECMA 262) read them alike and
# refusing what kit.text refuses: the OpenAPI document states them exactly.
_ADDRESS_CHAR = f"[^@{TEXT_REFUSED}{WHITESPACE}]"
EMAIL_PATTERN = f"^{_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}+\\.{_ADDRESS_CHAR}{{2,}}$"
# PHONE_RE is ^\+?[0-9 ()\-.]{6,20}$; trimmed, it neither starts nor ends with a space.
_PHONE_CHAR, _PHONE_EDGE = "[0-9 ()\\-.]", "[0-9()\\-.]"
PHONE_PATTERN = (
    f"^(?:\\+{_PHONE_CHAR}{{5,19}}{_PHONE_EDGE}|{_PHONE_EDGE}{_PHONE_CHAR}{{4,18}}{_PHONE_EDGE})$"
)
EMAIL = validate.Regexp(EMAIL_PATTERN, error="Not a valid email address.")
PHONE = validate.Regexp(PHONE_PATTERN, error="Not a valid phone number.")
# A contact's email or phone may be cleared: blank (or null) means none.
EMAIL_OR_BLANK = validate.Regexp(f"^(?:{EMAIL_PATTERN[1:-1]})?$", error=EMAIL.error)
PHONE_OR_BLANK = validate.Regexp(f"^(?:{PHONE_PATTERN[1:-1]})?$", error=PHONE.error)
TIME_ZONE = validate.OneOf(sorted(domain.time_zones()), error="Not an IANA time zone name.")


def features_field(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        keys=Str(validate=validate.OneOf(domain.TENANT_FEATURES)), values=fields.Boolean(), **kwargs
    )


# --- shared helpers ------------------------------------------------------------------------
def fetch(uow: Any, model: Any, row_id: str, *, lock: bool = False) -> Any:
    """The tenant's row with that id (locked for an update), else 404, bad ids included."""
    try:
        key = str(uuid.UUID(row_id))
    except ValueError:
        key = None
    row = uow.session.get(model, key, with_for_update=lock) if key else None
    if row is None:
        raise NotFound(f"No such {model.__tablename__[:-1].replace('_', ' ')}.")
    return row


def visible_customer(uow: Any, call: Call, customer_id: str) -> Customer:
    """The customer if the caller may see it: staff any, a portal user only its own."""
    customer = fetch(uow, Customer, customer_id)
    scope = Scope.of(call.require_actor()).whole_customer()
    if not scope.matches(customer, domain.CUSTOMER_FIELDS):
        raise NotFound("No such customer.")
    return customer


def list_page(uow: Any, stmt: Any, model: Any, query: dict[str, Any]) -> dict[str, Any]:
    items, cursor = read_page(uow.session, stmt, model, query["limit"], query.get("cursor"))
    return {"items": items, "next_cursor": cursor}


def claim_email(uow: Any, email: str, owner_id: str | None = None) -> str:
    """A normalised sign-in email nobody else in the tenant uses. Sign-in looks an email
    up among staff, then portal accounts, so it must be unique across both tables."""
    email = domain.normalise_email(email)
    domain.raise_if(domain.check_email(email))
    for model in (StaffUser, PortalAccount):
        stmt = select(model.id).where(model.email == email)
        if owner_id is not None:
            stmt = stmt.where(model.id != owner_id)
        if uow.session.execute(stmt.limit(1)).first() is not None:
            raise Conflict("That email address is already in use.", {"email": ["already in use"]})
    return email


def flush_unique(uow: Any) -> None:
    """Flush; a concurrent insert of the same email becomes 409, not a 500."""
    try:
        uow.session.flush()
    except IntegrityError as exc:
        if getattr(exc.orig, "pgcode", None) == UNIQUE_VIOLATION:
            raise Conflict(
                "That email address is already in use.", {"email": ["already in use"]}
            ) from exc
        raise


def apply(row: Any, changes: dict[str, Any]) -> bool:
    """Set what differs; True if anything did (then the caller bumps the version)."""
    changed = False
    for key, value in changes.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def pick(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: body[k] for k in keys if k in body}


# --- customers -----------------------------------------------------------------------------
class CustomerSchema(Schema):
    id = fields.UUID(required=True)
    name = Str(required=True)
    account_number = Str(allow_none=True)
    require_invoice_authorization = fields.Boolean(required=True)
    portal_features = features_field(required=True)
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


class CustomerQuery(PageQuery):
    q = Text(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Part of the name or account number"},
    )


class CustomerCreate(Schema):
    name = Text(required=True, validate=validate.Length(min=1, max=200))
    account_number = Text(allow_none=True, validate=validate.Length(max=64))
    require_invoice_authorization = fields.Boolean(load_default=False)
    portal_features = features_field(load_default=dict)


class CustomerPatch(Schema):
    name = Text(validate=validate.Length(min=1, max=200))
    account_number = Text(allow_none=True, validate=validate.Length(max=64))
    require_invoice_authorization = fields.Boolean()
    portal_features = features_field(metadata={"description": "Merged into the current map"})
    version = fields.Integer(validate=validate.Range(min=1))


def _customer_event(uow: Any, event: str, customer: Customer) -> None:
    uow.emit(event, domain.customer_event(customer))


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@route(
    "GET",
    "/customers",
    callers=STAFF,
    summary="List customers",
    tag="directory",
    query=CustomerQuery,
    response=CustomerSchema,
    many=True,
)
def list_customers(call: Call) -> Any:
    stmt = select(Customer)
    if call.query.get("q"):
        pattern = _like(call.query["q"])
        stmt = stmt.where(
            or_(
                Customer.name.ilike(pattern, escape="\\"),
                Customer.account_number.ilike(pattern, escape="\\"),
            )
        )
    with call.gw.db.unit_of_work() as uow:
        return list_page(uow, stmt, Customer, call.query)


@route(
    "POST",
    "/customers",
    callers=STAFF,
    summary="Create a customer",
    tag="directory",
    body=CustomerCreate,
    response=CustomerSchema,
    status=201,
)
def create_customer(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    b = call.body
    with call.gw.db.unit_of_work() as uow:
        customer = Customer(
            name=b["name"],
            account_number=b.get("account_number") or None,
            require_invoice_authorization=b["require_invoice_authorization"],
            portal_features=dict(b["portal_features"]),
        )
        uow.session.add(customer)
        uow.session.flush()
        _customer_event(uow, "directory.customer.created", customer)
        return customer


@route(
    "GET",
    "/customers/{id}",
    callers=STAFF_OR_PORTAL,
    summary="Get a customer",
    tag="directory",
    response=CustomerSchema,
)
def get_customer(call: Call) -> Any:
    with call.gw.db.unit_of_work() as uow:
        return visible_customer(uow, call, call.path["id"])


@route(
    "PATCH",
    "/customers/{id}",
    callers=STAFF,
    summary="Change a customer or its settings",
    tag="directory",
    body=CustomerPatch,
    response=CustomerSchema,
)
def patch_customer(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    b = call.body
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"], lock=True)
        domain.check_version(customer.version, expected_version(call))
        changes = pick(b, "name", "account_number", "require_invoice_authorization")
        if "account_number" in changes:
            changes["account_number"] = changes["account_number"] or None
        if "portal_features" in b:
            changes["portal_features"] = {**customer.portal_features, **b["portal_features"]}
        if apply(customer, changes):
            customer.version += 1
            _customer_event(uow, "directory.customer.updated", customer)
        return customer


# --- contacts ------------------------------------------------------------------------------
class ContactSchema(Schema):
    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    first_name = Str(required=True)
    last_name = Str(required=True)
    email = Str(allow_none=True)
    phone = Str(allow_none=True)
    notify_by = Str(required=True, validate=validate.OneOf(domain.NOTIFY_BY))
    is_team_manager = fields.Boolean(required=True)
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)


def _needs(notify_by: tuple[str, ...], name: str, pattern: str) -> dict[str, Any]:
    """JSON Schema: notifying by one of ``notify_by`` needs a ``name`` matching ``pattern``
    (``notify_by`` absent or another value: no condition)."""
    others = [v for v in domain.NOTIFY_BY if v not in notify_by]
    return {
        "anyOf": [
            {"properties": {"notify_by": {"enum": others}}},
            {"required": [name], "properties": {name: {"type": "string", "pattern": pattern}}},
        ]
    }


class ContactFields(Schema):
    first_name = Text(validate=validate.Length(min=1, max=100))
    last_name = Text(validate=validate.Length(min=1, max=100))
    email = Text(
        allow_none=True,
        validate=[validate.Length(max=320), EMAIL_OR_BLANK],
        metadata={"description": "Blank or null: none"},
    )
    phone = Text(
        allow_none=True,
        validate=[validate.Length(max=32), PHONE_OR_BLANK],
        metadata={"description": "Blank or null: none"},
    )
    notify_by = Str(
        validate=validate.OneOf(domain.NOTIFY_BY),
        metadata={
            "description": "Default: email if given, else sms, else none. email and both "
            "need an email address, sms and both a phone number"
        },
    )
    is_team_manager = fields.Boolean()


class ContactCreate(ContactFields):
    first_name = Text(required=True, validate=validate.Length(min=1, max=100))
    last_name = Text(required=True, validate=validate.Length(min=1, max=100))

    # The body alone must name the address (or number) it asks to be notified at.
    OPENAPI_RULES = {
        "allOf": [
            _needs(("email", "both"), "email", padded(EMAIL_PATTERN)),
            _needs(("sms", "both"), "phone", padded(PHONE_PATTERN)),
        ]
    }


class ContactPatch(ContactFields):
    """A change whose result would notify by a channel the contact has no address for
    is 409 conflict when the stored contact is what lacks it, 422 when the body says both."""

    version = fields.Integer(validate=validate.Range(min=1))

    # A body that sets notify_by and clears the address it needs is invalid on its own.
    OPENAPI_RULES = {
        "allOf": [
            {
                "anyOf": [
                    {"properties": {"notify_by": {"enum": ["sms", "none"]}}},
                    {"properties": {"email": {"type": "string", "pattern": padded(EMAIL_PATTERN)}}},
                ]
            },
            {
                "anyOf": [
                    {"properties": {"notify_by": {"enum": ["email", "none"]}}},
                    {"properties": {"phone": {"type": "string", "pattern": padded(PHONE_PATTERN)}}},
                ]
            },
        ]
    }


def _contact_event(uow: Any, event: str, c: Contact) -> None:
    uow.emit(
        event,
        {
            "id": c.id,
            "customer_id": c.customer_id,
            "name": domain.full_name(c.first_name, c.last_name),
            "email": c.email,
            "phone": c.phone,
            "notify_by": c.notify_by,
            "is_team_manager": c.is_team_manager,
        },
    )


def contact_values(body: dict[str, Any], current: Contact | None) -> dict[str, Any]:
    """The contact's fields after this change, checked as a whole."""
    values = pick(body, "first_name", "last_name", "email", "phone", "is_team_manager")
    if "email" in values:
        values["email"] = domain.normalise_email(values["email"] or "") or None
    if "phone" in values:
        values["phone"] = values["phone"] or None
    email = values.get("email", current.email if current else None)
    phone = values.get("phone", current.phone if current else None)
    values["notify_by"] = body.get("notify_by") or (
        current.notify_by if current else domain.default_notify_by(email, phone)
    )
    errors = domain.check_contact(email, phone, values["notify_by"])
    # The body alone is at fault (422) when it names both the channel and the missing
    # address; otherwise the stored contact lacks what the change needs: 409.
    stated = "notify_by" in body and all(name in values for name in errors)
    if errors and current is not None and not stated:
        raise Conflict("The contact has no address for that notification channel.", errors)
    domain.raise_if(errors)
    return values


@route(
    "GET",
    "/customers/{id}/contacts",
    callers=STAFF_OR_PORTAL,
    summary="List a customer's contacts",
    tag="directory",
    query=PageQuery,
    response=ContactSchema,
    many=True,
)
def list_contacts(call: Call) -> Any:
    with call.gw.db.unit_of_work() as uow:
        customer = visible_customer(uow, call, call.path["id"])
        stmt = select(Contact).where(Contact.customer_id == customer.id)
        return list_page(uow, stmt, Contact, call.query)


@route(
    "POST",
    "/customers/{id}/contacts",
    callers=STAFF,
    summary="Add a contact",
    tag="directory",
    body=ContactCreate,
    response=ContactSchema,
    status=201,
)
def create_contact(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"])
        values = {"is_team_manager": False, **contact_values(call.body, None)}
        contact = Contact(customer_id=customer.id, **values)
        uow.session.add(contact)
        uow.session.flush()
        _contact_event(uow, "directory.contact.created", contact)
        return contact


@route(
    "PATCH",
    "/contacts/{id}",
    callers=STAFF,
    summary="Change a contact",
    tag="directory",
    body=ContactPatch,
    response=ContactSchema,
)
def patch_contact(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    with call.gw.db.unit_of_work() as uow:
        contact = fetch(uow, Contact, call.path["id"], lock=True)
        domain.check_version(contact.version, expected_version(call))
        if apply(contact, contact_values(call.body, contact)):
            contact.version += 1
            _contact_event(uow, "directory.contact.updated", contact)
        return contact


# --- units ---------------------------------------------------------------------------------
class UnitSchema(Schema):
    id = fields.UUID(required=True)
    customer_id = fields.UUID(required=True)
    make = Str(required=True)
    model = Str(required=True)
    serial = Str(required=True, metadata={"description": "Serial number or VIN"})
    fleet_number = Str(required=True)
    year = fields.Integer(allow_none=True)
    created_at = fields.DateTime(required=True)


class UnitCreate(Schema):
    # At least one of make, model, serial and fleet_number is not blank.
    OPENAPI_RULES = {
        "anyOf": [
            {"required": [name], "properties": {name: {"pattern": NOT_BLANK}}}
            for name in ("make", "model", "serial", "fleet_number")
        ]
    }

    make = Text(load_default="", validate=validate.Length(max=100))
    model = Text(load_default="", validate=validate.Length(max=100))
    serial = Text(load_default="", validate=validate.Length(max=64))
    fleet_number = Text(load_default="", validate=validate.Length(max=64))
    year = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1900, max=2100)
    )


def unit_label(unit: Unit) -> str:
    """How other services name a unit: fleet number, make, model (those given)."""
    return " ".join(part for part in (unit.fleet_number, unit.make, unit.model) if part)


def _unit_event(uow: Any, event: str, unit: Unit) -> None:
    """Services that check unit references (quotes) keep a copy from these events."""
    uow.emit(event, {"id": unit.id, "customer_id": unit.customer_id, "label": unit_label(unit)})


@route(
    "GET",
    "/customers/{id}/units",
    callers=STAFF_OR_PORTAL,
    summary="List a customer's units (a portal user sees its allowed units)",
    tag="directory",
    query=PageQuery,
    response=UnitSchema,
    many=True,
)
def list_units(call: Call) -> Any:
    with call.gw.db.unit_of_work() as uow:
        customer = visible_customer(uow, call, call.path["id"])
        scope = Scope.of(call.require_actor())
        stmt = select(Unit).where(
            Unit.customer_id == customer.id,
            scope_filter(scope, columns_of(Unit, domain.UNIT_FIELDS)),
        )
        return list_page(uow, stmt, Unit, call.query)


@route(
    "POST",
    "/customers/{id}/units",
    callers=STAFF,
    summary="Add a unit (vehicle, equipment)",
    tag="directory",
    body=UnitCreate,
    response=UnitSchema,
    status=201,
)
def create_unit(call: Call) -> Any:
    domain.require_directory_writer(call.require_actor())
    b = call.body
    with call.gw.db.unit_of_work() as uow:
        customer = fetch(uow, Customer, call.path["id"])  # scope first: 404 before 422
        domain.raise_if(domain.check_unit(b["make"], b["model"], b["serial"], b["fleet_number"]))
        unit = Unit(customer_id=customer.id, **b)
        uow.session.add(unit)
        uow.session.flush()
        _unit_event(uow, "directory.unit.created", unit)
        return unit
