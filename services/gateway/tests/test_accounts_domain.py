"""Pure rules behind invitations, password resets, previews and feature switches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from kit.context import Actor
from kit.errors import Conflict, ValidationFailed
from services.gateway import domain as d

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
T = str(uuid.uuid4())


def _account(**kw: object) -> SimpleNamespace:
    base = dict(
        id=str(uuid.uuid4()),
        first_name="Casey",
        last_name="Fleet",
        permissions=["quotes.request"],
        customer_id=str(uuid.uuid4()),
        unit_ids=[str(uuid.uuid4())],
        enabled=True,
        password_hash=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_link_lifetimes_from_the_environment() -> None:
    assert d.LinkLifetimes.from_env({}).of("invitation") == timedelta(hours=72)
    assert d.LinkLifetimes.from_env({}).of("password_reset") == timedelta(minutes=60)
    env = {"INVITATION_TTL_HOURS": "1", "PASSWORD_RESET_TTL_MINUTES": "5"}
    assert d.LinkLifetimes.from_env(env).of("invitation") == timedelta(hours=1)
    assert d.LinkLifetimes.from_env(env).of("password_reset") == timedelta(minutes=5)


@pytest.mark.parametrize("presented", ["", "abc", "not-a-uuid.secret", f"{T}.", f"{T}", ".secret"])
def test_malformed_link_tokens_are_refused(presented: str) -> None:
    assert d.split_link_token(presented) is None


def test_link_token_round_trip() -> None:
    assert d.split_link_token(d.link_token(T, "s3cret.with.dots")) == (T, "s3cret.with.dots")


@pytest.mark.parametrize(
    ("wanted", "purpose", "used", "expires", "usable"),
    [
        ("invitation", "invitation", None, NOW + timedelta(seconds=1), True),
        ("invitation", "password_reset", None, NOW + timedelta(hours=1), False),
        ("password_reset", "password_reset", NOW, NOW + timedelta(hours=1), False),
        ("password_reset", "password_reset", None, NOW, False),
    ],
)
def test_a_link_works_once_in_time_for_its_purpose(wanted, purpose, used, expires, usable):
    assert d.link_usable(wanted, purpose, used, expires, NOW) is usable


def test_who_may_use_a_link() -> None:
    assert d.may_use_link("invitation", _account())
    assert not d.may_use_link("invitation", _account(password_hash="$argon2id$..."))
    assert d.may_use_link("password_reset", _account(password_hash="$argon2id$..."))
    assert not d.may_use_link("password_reset", _account(enabled=False))
    assert not d.may_use_link("password_reset", None)


def test_invitations_again_only_while_pending_and_enabled() -> None:
    d.raise_if_cannot_invite(_account())
    with pytest.raises(Conflict):
        d.raise_if_cannot_invite(_account(password_hash="x"))
    with pytest.raises(Conflict):
        d.raise_if_cannot_invite(_account(enabled=False))


def test_caller_features_combine_tenant_and_customer() -> None:
    assert d.caller_features(None, None) == dict.fromkeys(d.TENANT_FEATURES, True)
    got = d.caller_features({"bookings": False}, {"quotes": False, "history": True})
    assert got == {"quotes": False, "bookings": False, "payments": True, "history": True}
    # a customer cannot switch on what the tenant switched off
    assert d.caller_features({"payments": False}, {"payments": True})["payments"] is False


def test_notify_roles_are_staff_roles() -> None:
    assert d.check_notify_roles(["manager", "advisor", "manager"]) == ["manager", "advisor"]
    assert d.check_notify_roles([]) == []
    with pytest.raises(ValidationFailed):
        d.check_notify_roles(["customer"])
    assert d.default_settings()["notify_new_request_roles"] == ["manager", "advisor"]


def test_preview_carries_exactly_the_accounts_access() -> None:
    staff = Actor(kind="staff", id=str(uuid.uuid4()), tenant_id=T, roles=("advisor",), name="Avery")
    account = _account(permissions=["quotes.request"], password_hash="x")
    actor = d.preview_actor(staff, account, T)
    assert actor.kind == "portal" and actor.read_only
    assert actor.id == account.id and actor.customer_id == account.customer_id
    assert actor.permissions == ("quotes.request",)
    assert actor.unit_ids == tuple(account.unit_ids)
    assert actor.name == "Preview by Avery"
    with pytest.raises(Conflict):
        d.preview_actor(staff, _account(enabled=False), T)
