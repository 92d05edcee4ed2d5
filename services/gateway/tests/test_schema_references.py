"""The gateway's references are bound to the tenant in the database itself.

PostgreSQL checks foreign keys without row-level security, so only a composite key
``(tenant_id, x_id) -> (tenant_id, id)`` stops a row from pointing into another
tenant. These run as the owner role (which bypasses RLS, as a migration or an operator
script would), so nothing but the foreign keys can refuse the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.support import owner_engine, scratch_database

FK_VIOLATION = "23503"
A, B = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(scope="module")
def owner() -> Iterator[Connection]:
    with (
        scratch_database("gateway") as (admin, _urls),
        owner_engine(admin) as engine,
        engine.connect() as conn,
    ):
        yield conn


def _customer(conn: Connection, tenant: str) -> str:
    cid = str(uuid.uuid4())
    conn.execute(
        text(
            "insert into gateway.customers (id, tenant_id, name, require_invoice_authorization,"
            " portal_features, version, created_at) values (:id, :t, 'C', false, '{}', 1, now())"
        ),
        {"id": cid, "t": tenant},
    )
    return cid


def _contact(conn: Connection, tenant: str, customer: str) -> str:
    contact_id = str(uuid.uuid4())
    conn.execute(
        text(
            "insert into gateway.contacts (id, tenant_id, customer_id, first_name, last_name,"
            " notify_by, is_team_manager, version, created_at)"
            " values (:id, :t, :c, 'F', 'L', 'none', false, 1, now())"
        ),
        {"id": contact_id, "t": tenant, "c": customer},
    )
    return contact_id


def _refused(conn: Connection, statement: str, params: dict[str, str | None]) -> None:
    with pytest.raises(IntegrityError) as caught, conn.begin_nested():
        conn.execute(text(statement), params)
    assert caught.value.orig.pgcode == FK_VIOLATION  # type: ignore[union-attr]


def test_a_contact_cannot_point_at_another_tenants_customer(owner: Connection) -> None:
    with owner.begin():
        theirs = _customer(owner, B)
        mine = _customer(owner, A)
        _contact(owner, A, mine)  # control: the same insert within the tenant works
        with pytest.raises(IntegrityError) as caught, owner.begin_nested():
            _contact(owner, A, theirs)
        assert caught.value.orig.pgcode == FK_VIOLATION  # type: ignore[union-attr]


def test_units_and_portal_accounts_cannot_point_into_another_tenant(owner: Connection) -> None:
    with owner.begin():
        mine, theirs = _customer(owner, A), _customer(owner, B)
        their_contact = _contact(owner, B, theirs)
        _refused(
            owner,
            "insert into gateway.units (id, tenant_id, customer_id, make, model, serial,"
            " fleet_number, created_at) values (:id, :t, :c, 'm', '', '', '', now())",
            {"id": str(uuid.uuid4()), "t": A, "c": theirs},
        )
        account = (
            "insert into gateway.portal_accounts (id, tenant_id, customer_id, contact_id, email,"
            " first_name, last_name, time_zone, permissions, enabled, version, created_at)"
            " values (:id, :t, :c, :k, :e, 'F', 'L', 'UTC', '{}', true, 1, now())"
        )
        _refused(owner, account, {"id": str(uuid.uuid4()), "t": A, "c": theirs, "k": None, "e": "x@a.test"})  # fmt: skip
        _refused(owner, account, {"id": str(uuid.uuid4()), "t": A, "c": mine, "k": their_contact, "e": "y@a.test"})  # fmt: skip


def test_a_refresh_token_cannot_join_another_tenants_session(owner: Connection) -> None:
    with owner.begin():
        session_id = str(uuid.uuid4())
        owner.execute(
            text(
                "insert into gateway.auth_sessions (id, tenant_id, subject_kind, subject_id,"
                " created_at, expires_at) values (:id, :t, 'staff', :s, now(), now())"
            ),
            {"id": session_id, "t": B, "s": str(uuid.uuid4())},
        )
        _refused(
            owner,
            "insert into gateway.refresh_tokens (id, tenant_id, session_id, token_hash, created_at)"
            " values (:id, :t, :s, :h, now())",
            {"id": str(uuid.uuid4()), "t": A, "s": session_id, "h": uuid.uuid4().hex},
        )
