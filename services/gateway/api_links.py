"""Invitations and password resets: single-use, expiring links mailed to one person.

Staff never set or learn anyone's password. Creating a staff user or a portal account
issues an invitation; the person sets their password with the link's token
(``POST /auth/invitations/accept``, which also signs them in). Anyone can ask for a
reset link (``POST /auth/password-reset``, always the same 202); using it
(``POST /auth/password-reset/confirm``) sets the password and ends every session of
the account.

A link's token is ``<tenant_id>.<secret>`` (like refresh tokens: the lookup runs in that
tenant's unit of work, under RLS); only the SHA-256 of the secret is stored. The mail
itself is sent by notify from the private ``auth.link_issued`` event, emitted in the
same transaction as the link. Unknown, used, superseded, expired, other-tenant and
wrong-purpose tokens, and tokens of disabled accounts, all get one and the same answer:
``422 invalid_link``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select, update

from kit.context import Actor
from kit.db import utcnow
from kit.errors import DomainError
from services.gateway import domain
from services.gateway.api_auth import TokenResponse, _client_address
from services.gateway.auth import AuthCore
from services.gateway.models import LinkToken, PortalAccount, StaffUser, Tenant
from services.gateway.passwords import require_password
from services.gateway.tokens import hash_password, hash_refresh_token, new_refresh_token
from services.gateway.web import PUBLIC, ApiError, Call, route

Str = fields.String
RESET_ACCEPTED = "If an account with that email exists, a link to reset its password is on its way."


class LinkUse(Schema):
    token = Str(
        required=True,
        validate=validate.Length(min=10, max=512),
        metadata={"description": "The token of the mailed link: `<tenant_id>.<secret>`"},
    )
    password = Str(
        required=True,
        validate=validate.Length(min=1, max=1024),
        metadata={"description": "At least 12 characters, not common or guessable"},
    )


class ResetRequest(Schema):
    tenant = Str(required=True, validate=validate.Length(min=1, max=63))
    email = Str(required=True, validate=validate.Length(min=3, max=320))


class AcceptedSchema(Schema):
    detail = Str(required=True)


def invalid_link() -> DomainError:
    return DomainError("invalid_link", "This link is not valid any more; ask for a new one.", None)


def lifetimes(call: Call) -> domain.LinkLifetimes:
    return domain.LinkLifetimes.from_env(call.gw.auth.core.settings.raw)


def issue_link(uow: Any, purpose: str, subject: Any, ttl: domain.LinkLifetimes) -> None:
    """Inside the caller's unit of work: a new link for ``subject`` (flushed, so it has
    an id), and the event that has notify mail it. Older unused links of the same
    purpose stop working: only the latest mail counts."""
    now = utcnow()
    uow.session.execute(
        update(LinkToken)
        .where(
            LinkToken.subject_id == subject.id,
            LinkToken.purpose == purpose,
            LinkToken.used_at.is_(None),
        )
        .values(used_at=now)
    )
    secret, digest = new_refresh_token()  # 256 random bits and their SHA-256
    expires_at = now + ttl.of(purpose)
    kind = domain.subject_kind(subject)
    uow.session.add(
        LinkToken(
            purpose=purpose,
            subject_kind=kind,
            subject_id=subject.id,
            token_hash=digest,
            expires_at=expires_at,
        )
    )
    uow.emit(
        "auth.link_issued",
        {
            "purpose": purpose,
            "subject_kind": kind,
            "subject_id": subject.id,
            "customer_id": getattr(subject, "customer_id", None),
            "email": subject.email,
            "name": domain.full_name(subject.first_name, subject.last_name),
            "token": domain.link_token(uow.tenant_id, secret),
            "expires_at": expires_at.isoformat(),
        },
    )


def _subject(session: Any, kind: str, subject_id: str, lock: bool = False) -> Any:
    model = StaffUser if kind == "staff" else PortalAccount
    return session.get(model, subject_id, with_for_update=lock)


def _link(uow: Any, digest: str, purpose: str, lock: bool = False) -> LinkToken:
    stmt = select(LinkToken).where(LinkToken.token_hash == digest)
    if lock:
        stmt = stmt.with_for_update()
    link = uow.session.scalars(stmt).first()
    if link is None or not domain.link_usable(
        purpose, link.purpose, link.used_at, link.expires_at, utcnow()
    ):
        raise invalid_link()
    return link


def redeem(call: Call, purpose: str) -> Actor:
    """Set the password of the link's person and use the link up; returns that person.

    Two short transactions around the slow part: the first finds the link and its
    person (the password rules need the email and the shop's names), then the password
    is checked and hashed outside any transaction, and the second locks the link, checks
    it again (two tabs, one link: exactly one wins) and applies the change.
    """
    parsed = domain.split_link_token(call.body["token"])
    if parsed is None:
        raise invalid_link()
    tenant_id, secret = parsed
    digest = hash_refresh_token(secret)
    core = call.gw.db.core
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        link = _link(uow, digest, purpose)
        subject = _subject(uow.session, link.subject_kind, link.subject_id)
        if not domain.may_use_link(purpose, subject):
            raise invalid_link()
        tenant = uow.session.get(Tenant, tenant_id)
        email, names = subject.email, (tenant.name, tenant.slug) if tenant else ()
    password = call.body["password"]
    require_password(password, email=email, tenant_names=names)
    password_hash = hash_password(password)
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        link = _link(uow, digest, purpose, lock=True)
        subject = _subject(uow.session, link.subject_kind, link.subject_id, lock=True)
        if not domain.may_use_link(purpose, subject):
            raise invalid_link()
        now = utcnow()
        if domain.invitation_pending(subject):
            subject.version += 1  # `invitation_pending` of the resource changes
        subject.password_hash = password_hash
        # This link and every other open link of the person stop working.
        uow.session.execute(
            update(LinkToken)
            .where(LinkToken.subject_id == subject.id, LinkToken.used_at.is_(None))
            .values(used_at=now)
        )
        # A reset (perhaps because someone else knew the password) ends every session.
        AuthCore.revoke_subject(uow.session, subject.id, "password_reset")
        return domain.actor_for(subject, tenant_id)


@route(
    "POST",
    "/auth/invitations/accept",
    callers=PUBLIC,
    summary="Set your first password with the invitation link's token, and sign in",
    tag="auth",
    body=LinkUse,
    response=TokenResponse,
    errors=(422,),
)
def accept_invitation(call: Call) -> Any:
    actor = redeem(call, "invitation")
    return call.gw.auth.core.start_session(
        call.gw.db.core, actor, "staff" if actor.is_staff else "portal"
    )


@route(
    "POST",
    "/auth/password-reset/confirm",
    callers=PUBLIC,
    summary="Set a new password with the reset link's token; ends every session of the account",
    tag="auth",
    body=LinkUse,
    status=204,
    errors=(422,),
)
def confirm_password_reset(call: Call) -> Any:
    redeem(call, "password_reset")
    return None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:40]


def _find(session: Any, email: str) -> Any:
    for model in (StaffUser, PortalAccount):  # an email is unique across both
        found = session.scalars(select(model).where(model.email == email)).first()
        if found is not None:
            return found
    return None


def _request_reset(call: Call, tenant_slug: str, email: str) -> None:
    core, auth = call.gw.db.core, call.gw.auth.core
    limits = domain.ResetLimits.from_env(auth.settings.raw)
    # Per account: silent. A refusal here would tell that the account is being reset.
    try:
        auth.take_attempt(core, f"reset-acct:{_digest(tenant_slug + '/' + email)}", limits.account)
    except ApiError as exc:
        if exc.code != "rate_limited":
            raise
        return
    with core.unit_of_work(system=True) as uow:
        tenant_id = uow.session.scalar(select(Tenant.id).where(Tenant.slug == tenant_slug))
    if tenant_id is None:
        return
    with core.unit_of_work(tenant_id=tenant_id) as uow:
        subject = _find(uow.session, email)
        if subject is not None and domain.may_sign_in(subject):  # disabled: nothing
            issue_link(uow, "password_reset", subject, lifetimes(call))


@route(
    "POST",
    "/auth/password-reset",
    callers=PUBLIC,
    summary="Ask for a password-reset link by email; always 202, whether the account exists",
    tag="auth",
    body=ResetRequest,
    response=AcceptedSchema,
    status=202,
    errors=(429,),
    idempotency="optional",
)
def request_password_reset(call: Call) -> Any:
    started = time.monotonic()
    auth = call.gw.auth.core
    limits = domain.ResetLimits.from_env(auth.settings.raw)
    # Per address: a visible 429, it says nothing about any account.
    addr = f"reset-addr:{_digest(_client_address(call))}"
    auth.take_attempt(call.gw.db.core, addr, limits.address)
    slug = call.body["tenant"].strip().lower()
    email = domain.normalise_email(call.body["email"])
    _request_reset(call, slug, email)
    # Every answer takes at least the same time, so that issuing a link and mailing the
    # event (an existing account) cannot be told from doing nothing (no such account).
    time.sleep(max(0.0, limits.min_seconds - (time.monotonic() - started)))
    return {"detail": RESET_ACCEPTED}
