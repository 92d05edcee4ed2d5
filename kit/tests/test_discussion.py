"""The kit's discussion: the rules (pure), the tables and the RPC entrypoints a
declaration gives. Quotes' own tests run the entrypoints against PostgreSQL
(services/quotes/tests/test_service.py); these pin what every user of the kit gets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import ForeignKeyConstraint, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from contracts.discussion import attachment_schema, comment_schema
from kit.db import TenantScoped, make_metadata
from kit.discussion import Discussion
from kit.discussion_rpc import discussion_entrypoints, rpc_names
from kit.discussion_store import DiscussionStore, discussion_models
from kit.errors import Forbidden, ValidationFailed


@dataclass(frozen=True)
class Who:
    kind: str
    roles: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    read_only: bool = False
    id: str = "00000000-0000-0000-0000-000000000001"
    tenant_id: str = "00000000-0000-0000-0000-000000000002"
    customer_id: str | None = None
    unit_ids: tuple[str, ...] | None = None
    work_order_id: str | None = None
    name: str = "Someone"


ESTIMATE = Discussion(
    record="estimate_line",
    record_key="line_id",
    label="estimate line",
    kinds=("photo", "note"),
    staff_only_kinds=frozenset({"photo"}),
    guest_kinds=frozenset({"token"}),
    name="line_",
    comments_table="line_comments",
    attachments_table="line_attachments",
)
PLAIN = Discussion(record="thing", record_key="thing_id", label="thing")


@pytest.mark.parametrize(
    "who",
    [
        Who("staff", ("technician",)),
        Who("staff", ("admin",)),
        Who("portal"),
        Who("system"),
        Who("token"),  # a guest kind of this discussion
    ],
)
def test_who_comments(who: Who) -> None:
    assert ESTIMATE.validate_comment(who, "  Looks worn \r\n here ") == "Looks worn \n here"


@pytest.mark.parametrize(
    "who", [Who("token"), Who("portal", read_only=True), Who("staff"), Who("robot")]
)
def test_who_may_not_comment(who: Who) -> None:
    with pytest.raises(Forbidden):
        PLAIN.validate_comment(who, "hi")


def test_staff_roles_narrow_who_takes_part() -> None:
    advisors = Discussion(
        record="thing", record_key="thing_id", label="thing", staff_roles=frozenset({"advisor"})
    )
    assert advisors.validate_comment(Who("staff", ("advisor",)), "ok") == "ok"
    with pytest.raises(Forbidden):
        advisors.validate_comment(Who("staff", ("technician",)), "no")


@pytest.mark.parametrize(
    ("body", "message"),
    [(None, "is required"), ("  ", "must not be blank"), ("x" * 5001, "at most 5000")],
)
def test_comment_text_rules(body: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        PLAIN.validate_comment(Who("portal"), body)
    assert message in err.value.errors["body"][0]  # type: ignore[index]


def test_only_managers_delete() -> None:
    PLAIN.authorize_delete(Who("staff", ("manager",)))
    PLAIN.authorize_delete(Who("system"))
    for who in (Who("staff", ("advisor",)), Who("portal"), Who("token")):
        with pytest.raises(Forbidden):
            PLAIN.authorize_delete(who)
    with pytest.raises(Forbidden):
        PLAIN.authorize_delete(Who("staff", ("admin",), read_only=True))


def test_attachment_kinds() -> None:
    assert ESTIMATE.authorize_attachment(Who("staff", ("technician",)), "photo") == "photo"
    assert ESTIMATE.authorize_attachment(Who("portal"), "note") == "note"
    with pytest.raises(Forbidden, match="only shop staff"):
        ESTIMATE.authorize_attachment(Who("portal"), "photo")
    with pytest.raises(ValidationFailed) as err:
        ESTIMATE.authorize_attachment(Who("staff", ("admin",)), "invoice")
    assert err.value.errors == {"kind": ["must be one of photo, note"]}
    with pytest.raises(Forbidden):  # read-only before anything else
        ESTIMATE.authorize_attachment(Who("portal", read_only=True), "invoice")


def test_events_are_named_after_the_record() -> None:
    assert ESTIMATE.events == (
        "estimate_line.comment_added",
        "estimate_line.comment_deleted",
        "estimate_line.attachment_added",
    )


def test_a_staff_only_kind_must_be_a_kind() -> None:
    with pytest.raises(AssertionError):
        Discussion(record="x", record_key="x_id", label="x", staff_only_kinds=frozenset({"y"}))


# --- tables and entrypoints -----------------------------------------------------------


class Base(DeclarativeBase):
    metadata = make_metadata("kit_discussion_test")


class Line(TenantScoped, Base):
    __tablename__ = "estimate_lines"
    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)
    text: Mapped[str] = mapped_column(String(50))


class Thing(TenantScoped, Base):
    __tablename__ = "things"
    id: Mapped[str] = mapped_column(Uuid(as_uuid=False), primary_key=True)


LINE_MODELS = discussion_models(Base, ESTIMATE, "estimate_lines")
THING_MODELS = discussion_models(Base, PLAIN, "things")


def test_tables_are_tenant_bound_to_their_record() -> None:
    comments = LINE_MODELS.comment.__table__
    assert comments.name == "line_comments" and comments.schema == "kit_discussion_test"
    (fk,) = [c for c in comments.constraints if isinstance(c, ForeignKeyConstraint)]
    assert [c.name for c in fk.columns] == ["tenant_id", "line_id"]
    assert [e.column for e in fk.elements] == [Line.__table__.c.tenant_id, Line.__table__.c.id]
    assert {"tenant_id", "line_id", "body", "deleted_at"} <= set(comments.c.keys())
    files = THING_MODELS.attachment.__table__
    assert files.name == "attachments"
    assert {"thing_id", "sha256", "size", "kind"} <= set(files.c.keys())


def test_entrypoints_by_declaration_two_discussions_side_by_side() -> None:
    def load(uow: object, actor: object, record_id: str) -> object:
        raise AssertionError("not called here")

    schemas = {
        "comment_schema": comment_schema("line_id", "LineCommentSchema"),
        "attachment_schema": attachment_schema("line_id", ESTIMATE.kinds, "LineAttachment"),
    }
    lines = discussion_entrypoints(
        DiscussionStore(LINE_MODELS), load_record=load, event_data=dict, **schemas
    )
    things = discussion_entrypoints(
        DiscussionStore(THING_MODELS), load_record=load, event_data=dict, **schemas
    )
    both = type("Both", (lines, things), {})
    names = set(rpc_names(ESTIMATE)) | set(rpc_names(PLAIN))
    assert len(names) == 12
    assert "line_add_comment" in names and "add_comment" in names
    for name in names:
        assert hasattr(getattr(both, name), "nameko_entrypoints"), name
