"""Sign in, refresh, sign out, and the caller's own profile."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from services.gateway import domain
from services.gateway.api_directory import TIME_ZONE, Text, features_field
from services.gateway.features import approval_terms, caller_features
from services.gateway.models import PortalAccount, StaffUser
from services.gateway.web import ANY_CALLER, PUBLIC, ApiError, Call, route

Str = fields.String


class TokenRequest(Schema):
    tenant = Str(required=True, validate=validate.Length(min=1, max=63))
    email = Str(required=True, validate=validate.Length(min=3, max=320))
    password = Str(required=True, validate=validate.Length(min=1, max=1024))


class RefreshRequest(Schema):
    refresh_token = Str(required=True, validate=validate.Length(min=10, max=512))


class TokenResponse(Schema):
    access_token = Str(required=True)
    refresh_token = Str()
    token_type = Str(required=True)
    expires_in = fields.Integer(required=True)


class MeSchema(Schema):
    id = fields.UUID(required=True)
    kind = Str(required=True)
    tenant_id = fields.UUID(required=True)
    email = Str()
    first_name = Str()
    last_name = Str()
    time_zone = Str()
    roles = fields.List(Str())
    permissions = fields.List(Str())
    customer_id = fields.UUID(allow_none=True)
    unit_ids = fields.List(fields.UUID(), allow_none=True)
    read_only = fields.Boolean()
    features = features_field(
        required=True,
        metadata={
            "description": "Every feature, on or off for this caller (the tenant's switch and "
            "the customer's portal_features; staff have every feature)"
        },
    )
    approval_terms = Str(required=True, metadata={"description": "The shop's approval terms"})


class MePatch(Schema):
    first_name = Text(required=True, validate=validate.Length(min=1, max=100))
    last_name = Text(required=True, validate=validate.Length(min=1, max=100))
    time_zone = Str(validate=TIME_ZONE)


def _client_address(call: Call) -> str:
    forwarded = call.request.headers.getlist("X-Forwarded-For")
    return domain.client_address(
        call.request.remote_addr, forwarded, call.gw.auth.core.trusted_proxy_hops
    )


@route(
    "POST",
    "/auth/token",
    callers=PUBLIC,
    summary="Sign in with tenant, email and password",
    tag="auth",
    body=TokenRequest,
    response=TokenResponse,
    errors=(401, 429),
)
def token(call: Call) -> Any:
    b = call.body
    return call.gw.auth.core.login(
        call.gw.db.core, b["tenant"], b["email"], b["password"], _client_address(call)
    )


@route(
    "POST",
    "/auth/refresh",
    callers=PUBLIC,
    summary="Trade a refresh token for new tokens",
    tag="auth",
    body=RefreshRequest,
    response=TokenResponse,
    errors=(401,),
)
def refresh(call: Call) -> Any:
    return call.gw.auth.core.refresh(call.gw.db.core, call.body["refresh_token"])


class LogoutRequest(Schema):
    refresh_token = Str(
        validate=validate.Length(min=10, max=512),
        metadata={
            "description": "End the session of this refresh token; needed only when no "
            "bearer token is sent (e.g. the access token has expired)."
        },
    )


@route(
    "POST",
    "/auth/logout",
    callers=ANY_CALLER,
    token_optional=True,
    summary="End this session now, by its bearer token or its refresh token",
    tag="auth",
    body=LogoutRequest,
    status=204,
    errors=(401,),
)
def logout(call: Call) -> Any:
    auth, db = call.gw.auth.core, call.gw.db.core
    presented = call.body.get("refresh_token")
    if call.actor is None and not presented:
        raise ApiError(
            "unauthenticated", "Send a bearer token, or the session's refresh token in the body."
        )
    if call.actor is not None:
        auth.revoke_session(db, call.actor.tenant_id, call.claims["sid"], "logout")
    if presented:
        auth.end_refresh_session(db, presented)
    return None


def _me(call: Call, uow: Any, subject: Any) -> dict[str, Any]:
    actor = call.require_actor()
    out: dict[str, Any] = {
        "features": caller_features(call.gw.db.core, actor),
        "approval_terms": approval_terms(uow),
        "id": actor.id,
        "kind": actor.kind,
        "tenant_id": actor.tenant_id,
        "roles": list(actor.roles),
        "permissions": list(actor.permissions),
        "customer_id": actor.customer_id,
        "unit_ids": list(actor.unit_ids) if actor.unit_ids is not None else None,
        "read_only": actor.read_only,
    }
    if subject is not None:
        out.update(
            email=subject.email,
            first_name=subject.first_name,
            last_name=subject.last_name,
            time_zone=subject.time_zone,
        )
    return out


def _subject(uow: Any, actor: Any) -> Any:
    if actor.read_only:
        return None
    model = StaffUser if actor.kind == "staff" else PortalAccount
    subject = uow.session.get(model, actor.id)
    if subject is None:
        raise ApiError("not_found", "Your account no longer exists.")
    return subject


@route("GET", "/me", callers=ANY_CALLER, summary="Who am I", tag="auth", response=MeSchema)
def get_me(call: Call) -> Any:
    actor = call.require_actor()
    with call.gw.db.unit_of_work() as uow:
        return _me(call, uow, _subject(uow, actor))


@route(
    "PATCH",
    "/me",
    callers=ANY_CALLER,
    summary="Update my name and time zone",
    tag="auth",
    body=MePatch,
    response=MeSchema,
)
def patch_me(call: Call) -> Any:
    actor = call.require_actor()
    domain.require_writable(actor)
    b = call.body
    domain.raise_if(domain.check_person(b["first_name"], b["last_name"], b.get("time_zone")))
    with call.gw.db.unit_of_work() as uow:
        subject = _subject(uow, actor)
        subject.first_name = b["first_name"].strip()
        subject.last_name = b["last_name"].strip()
        if "time_zone" in b:
            subject.time_zone = b["time_zone"]
        if actor.is_staff:  # other services keep staff names (e.g. in emails)
            uow.emit("directory.staff_user.updated", domain.staff_user_event(subject))
        elif actor.kind == "portal":  # and portal account names
            uow.emit("directory.portal_account.updated", domain.portal_account_event(subject))
        return _me(call, uow, subject)
