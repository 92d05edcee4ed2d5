"""Unit tests of the quote-request routes: header parsing and building, the CSV export,
route matching, and the handlers against a fake gateway whose reads are real (the
gateway's view tables in a scratch database, as the gateway's role, so row-level
security applies) and whose commands go to a fake quotes RPC (its replies are applied
to the views, as the gateway does), with a real blob store in a temporary directory."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, text
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts import quotes as c
from kit import errors
from kit.blobs import BlobStore
from kit.context import ACTOR_KEY, Actor, Context
from kit.errors import Forbidden, UnsupportedMediaType
from kit.providers import WorkerDb
from services.gateway import api_quotes as q
from services.gateway import discussion, views
from services.gateway.models import Customer, metadata
from services.gateway.web import (
    ROUTES,
    ApiError,
    Call,
    build_map,
    error_response,
    expected_version,
    parse_input,
)
from tests.support import ScratchService, scratch_service

QID = "6f1c1d1e-5b0a-4c44-9d0b-0a8f3c9d7e11"
CID = "0c0c1d1e-5b0a-4c44-9d0b-0a8f3c9d7e12"
AID = "0a0a1d1e-5b0a-4c44-9d0b-0a8f3c9d7e13"
CUSTOMER = "0b7e5c52-1d8e-4b8a-8a35-2f1b7d7b6a01"
PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n"
T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def quote_item(**overrides: Any) -> dict[str, Any]:
    """A quote request as the quotes service returns it (already dumped)."""
    item = {
        "id": QID, "number": "Q-000042", "customer_id": CUSTOMER, "unit_id": None,
        "work_order_id": None, "description": "Brakes squeal", "status": "pending",
        "created_by": str(uuid.uuid4()), "created_by_name": "Pat Portal",
        "created_by_customer": True, "visible_to_customer": True, "assigned_to": None,
        "po_number": None, "decision_reason": None, "decided_on_behalf": False,
        "decided_at": None, "version": 3, "created_at": "2025-03-01T10:00:00+00:00",
        "updated_at": "2025-03-02T11:30:00.123456+00:00",
    }  # fmt: skip
    item.update(overrides)
    return item


# --- fakes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db() -> Iterator[ScratchService]:
    with scratch_service("gateway", metadata, autocommit=True) as scratch:
        yield scratch


class FakeQuotes:
    """Records every RPC call; answers from ``replies`` (a value or a callable)."""

    def __init__(self, **replies: Any) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.replies = replies

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            json.dumps(args)  # RPC payloads must be JSON-safe
            self.calls.append((method, args))
            reply = self.replies.get(method)
            return reply(*args) if callable(reply) else reply

        return call

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class NoDatabase:
    """The ``db`` of a gateway whose test must be refused before any read or write."""

    core = None

    def unit_of_work(self, **_: Any) -> Any:
        raise AssertionError("this path must not touch the database")


class FakeGateway:
    """The worker a handler sees: ``quotes`` is the fake RPC (commands), ``db`` the real
    views of one fresh tenant, bound to the caller (a staff advisor of that tenant) as
    the gateway's ``WorkerDb`` is; without ``db``, any database use fails the test."""

    def __init__(self, tmp_path: Any, db: ScratchService | None = None, **replies: Any) -> None:
        self.quotes = FakeQuotes(**replies)
        self.tenant_id = new_id()
        self.actor = Actor(kind="staff", id=new_id(), tenant_id=self.tenant_id, roles=("advisor",))
        self.scratch = db
        self.db: Any = NoDatabase()
        if db is not None:
            worker_ctx = SimpleNamespace(data={ACTOR_KEY: self.actor.to_json()})
            self.db = WorkerDb(db.core, Context(worker_ctx))
        self.blobs = BlobStore(tmp_path / "blobs")

    @contextmanager
    def seeding(self) -> Iterator[Any]:
        """A unit of work in this gateway's tenant, as the events' consumer has one."""
        assert self.scratch is not None
        with self.scratch.core.unit_of_work(tenant_id=self.tenant_id) as uow:
            yield uow

    def customer(self, name: str) -> str:
        """A customer of the gateway's directory; its id."""
        customer_id = new_id()
        with self.seeding() as uow:
            uow.session.add(Customer(id=customer_id, tenant_id=self.tenant_id, name=name))
        return customer_id

    def quote(self, **overrides: Any) -> dict[str, Any]:
        """A quote request in the view (as its event leaves it); its record."""
        record = quote_item(**{"id": new_id(), **overrides})
        with self.seeding() as uow:
            views.apply_quote_reply(uow, record)
        return record

    def comment(self, quote_id: str, body: str, created_at: datetime) -> dict[str, Any]:
        comment = {
            "id": new_id(), "quote_request_id": quote_id, "author_kind": "staff",
            "author_id": new_id(), "author_name": "Sam", "body": body,
            "created_at": created_at.isoformat(),
        }  # fmt: skip
        with self.seeding() as uow:
            views.add_comment(uow, views.QUOTE_REQUEST, quote_id, comment)
        return comment

    def attachment(self, quote_id: str, created_at: datetime, **meta: Any) -> dict[str, Any]:
        item = attachment_reply(
            quote_id,
            {
                "kind": "attachment", "filename": "a.pdf", "content_type": "application/pdf",
                "size": len(PDF), "sha256": hashlib.sha256(PDF).hexdigest(),
                "created_at": created_at.isoformat(), **meta,
            },
        )  # fmt: skip
        with self.seeding() as uow:
            views.add_attachment(uow, views.QUOTE_REQUEST, quote_id, item)
        return item

    @contextmanager
    def sql(self) -> Iterator[list[tuple[str, Any]]]:
        """Every (statement, parameters) the gateway's role sends while inside."""
        assert self.scratch is not None
        engine = self.scratch.core.engine
        sent: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            sent.append((statement, params))

        event.listen(engine, "before_cursor_execute", record)
        try:
            yield sent
        finally:
            event.remove(engine, "before_cursor_execute", record)


def reads_of(sent: list[tuple[str, Any]], table: str) -> list[tuple[str, Any]]:
    """The SELECTs of ``sent`` that read ``gateway.<table>``."""
    return [
        (stmt, params)
        for stmt, params in sent
        if stmt.lstrip().upper().startswith("SELECT") and f"FROM gateway.{table}" in stmt
    ]


def make_call(
    gw: FakeGateway,
    method: str = "GET",
    path: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    **builder: Any,
) -> Call:
    request = Request(EnvironBuilder(method=method, path="/api/v1/x", **builder).get_environ())
    return Call(
        request=request, gw=gw, path=path or {}, query=query or {}, body=body or {}, actor=gw.actor
    )


def blob_files(gw: FakeGateway) -> list[Any]:
    root = gw.blobs.root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def attachment_reply(quote_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What the quotes service answers to ``add_attachment``."""
    return {
        "id": str(uuid.uuid4()),
        "quote_request_id": quote_id,
        "uploaded_by_name": "Sam",
        "created_at": "2025-03-01T10:00:00+00:00",
        **meta,
    }


# --- If-Match -------------------------------------------------------------------------


def test_the_body_version_wins_over_if_match(tmp_path):
    gw = FakeGateway(tmp_path)
    call = make_call(gw, "POST", body={"version": 2}, headers={"If-Match": '"9"'})
    assert expected_version(call) == 2
    call = make_call(gw, "POST", body={}, headers={"If-Match": 'W/"9"'})
    assert expected_version(call) == 9
    assert expected_version(make_call(gw, "POST")) is None


# --- Content-Disposition --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("quote.pdf", "quote.pdf"),
        ("Résumé – final.pdf", "Résumé – final.pdf"),
        ('a"b".pdf', "ab.pdf"),
        ("日本語の見積.pdf", "日本語の見積.pdf"),
        ("../../etc/passwd", "passwd"),
        ("evil\r\nSet-Cookie: x=1.pdf", "evil Set-Cookie x=1.pdf"),
        ("semi;colon,comma 100%.txt", "semi;colon,comma 100%.txt"),
        ("", "file"),
    ],
)
def test_content_disposition_round_trips_the_sanitised_name(name, expected):
    header = discussion.content_disposition(name)
    header.encode("ascii")  # header values stay plain ASCII
    assert "\r" not in header and "\n" not in header
    kind, params = parse_options_header(header)
    assert kind == "attachment"
    assert params["filename"] == expected  # filename* (RFC 8187) wins when understood
    assert header.index('filename="') < header.index("filename*=")  # RFC 6266 order


def test_ascii_fallback_keeps_what_ascii_can_say():
    header = discussion.content_disposition('Résumé "final" – 100%.pdf')
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback == "Resume final _ 100_.pdf"
    assert discussion.ascii_filename("日本語.pdf") == "___.pdf"
    assert discussion.ascii_filename("\\") == "_"
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20final%20%E2%80%93%20100%25.pdf" in header


# --- CSV ------------------------------------------------------------------------------


def test_csv_has_the_contract_columns_and_neutralised_cells():
    item = quote_item(
        description='=HYPERLINK("http://evil","click")',
        po_number="+1-555",
        customer_name="@corp",
        assigned_to=None,
        created_by_customer=False,
    )
    text = q.export_csv([item])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        "number",
        "status",
        "created_by_customer",
        "customer",
        "description",
        "assigned_to",
        "po_number",
        "created_at",
        "updated_at",
    ]
    assert rows[1] == [
        "Q-000042",
        "pending",
        "false",
        "'@corp",
        '\'=HYPERLINK("http://evil","click")',
        "",
        "'+1-555",
        "2025-03-01T10:00:00+00:00",
        "2025-03-02T11:30:00.123456+00:00",
    ]
    assert text.endswith("\r\n")


def test_csv_falls_back_to_the_customer_id_without_a_name():
    row = q.csv_row(quote_item(customer_name=None, created_by_customer=True))
    assert row[2] == "true"
    assert row[3] == CUSTOMER


# --- routes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "args"),
    [
        ("GET", "/quote-requests/summary", "GET /quote-requests/summary", {}),
        ("GET", "/quote-requests/export.csv", "GET /quote-requests/export.csv", {}),
        ("GET", f"/quote-requests/{QID}", "GET /quote-requests/{id}", {"id": QID}),
        ("PATCH", f"/quote-requests/{QID}", "PATCH /quote-requests/{id}", {"id": QID}),
        ("GET", "/quote-requests", "GET /quote-requests", {}),
        (
            "POST",
            f"/quote-requests/{QID}/approve",
            "POST /quote-requests/{id}/approve",
            {"id": QID},
        ),
        (
            "DELETE",
            f"/quote-requests/{QID}/comments/{CID}",
            "DELETE /quote-requests/{id}/comments/{cid}",
            {"id": QID, "cid": CID},
        ),
        (
            "GET",
            f"/quote-requests/{QID}/attachments/{AID}",
            "GET /quote-requests/{id}/attachments/{aid}",
            {"id": QID, "aid": AID},
        ),
    ],
)
def test_static_segments_win_over_the_id(method, path, endpoint, args):
    urls, by_endpoint = build_map()
    adapter = urls.bind("", url_scheme="http")
    assert adapter.match("/api/v1" + path, method=method) == (endpoint, args)
    assert endpoint in by_endpoint


def test_an_id_segment_only_matches_a_uuid():
    adapter = build_map()[0].bind("", url_scheme="http")
    # PATCH exists for /quote-requests/{id}, but "summary" is not an id: 405, not a 404
    # from looking up a quote request called "summary".
    with pytest.raises(MethodNotAllowed) as err:
        adapter.match("/api/v1/quote-requests/summary", method="PATCH")
    assert set(err.value.valid_methods or ()) == {"GET", "HEAD"}
    for path in ("/quote-requests/42", f"/quote-requests/{QID}/comments/c1", "/customers/x"):
        with pytest.raises(NotFound):
            adapter.match("/api/v1" + path, method="GET")


def test_every_quote_route_of_the_contract_is_registered_with_its_callers():
    mine = {(r.method, r.path): r for r in ROUTES if r.path.startswith("/quote-requests")}
    expected_callers = {
        ("POST", "/quote-requests"): ("staff", "portal"),
        ("GET", "/quote-requests"): ("staff", "portal", "token"),
        ("GET", "/quote-requests/summary"): ("staff", "portal", "token"),
        ("GET", "/quote-requests/export.csv"): ("staff", "portal"),
        ("GET", "/quote-requests/{id}"): ("staff", "portal", "token"),
        ("PATCH", "/quote-requests/{id}"): ("staff",),
        ("POST", "/quote-requests/{id}/approve"): ("staff", "portal"),
        ("POST", "/quote-requests/{id}/deny"): ("staff", "portal"),
        ("POST", "/quote-requests/{id}/cancel"): ("staff", "portal"),
        ("GET", "/quote-requests/{id}/comments"): ("staff", "portal", "token"),
        ("POST", "/quote-requests/{id}/comments"): ("staff", "portal"),
        ("DELETE", "/quote-requests/{id}/comments/{cid}"): ("staff",),
        ("POST", "/quote-requests/{id}/attachments"): ("staff", "portal"),
        ("GET", "/quote-requests/{id}/attachments"): ("staff", "portal", "token"),
        ("GET", "/quote-requests/{id}/attachments/{aid}"): ("staff", "portal", "token"),
    }
    assert {k: v.callers for k, v in mine.items()} == expected_callers
    assert mine[("POST", "/quote-requests")].status == 201
    assert mine[("POST", "/quote-requests/{id}/comments")].status == 201
    assert mine[("POST", "/quote-requests/{id}/attachments")].status == 201
    assert mine[("POST", "/quote-requests/{id}/attachments")].multipart
    assert mine[("DELETE", "/quote-requests/{id}/comments/{cid}")].status == 204


# --- reads: from the views -----------------------------------------------------------


def test_list_names_customers_in_one_query_and_dumps_with_the_schema(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    acme, bolt = gw.customer("Acme Fleet"), gw.customer("Bolt Haulage")
    unknown = new_id()  # no directory row: no name, not an error
    gw.quote(customer_id=acme, created_by_customer=False, created_at=T0.isoformat())  # filtered
    seeded = [
        gw.quote(customer_id=cid, created_at=(T0 - timedelta(minutes=n + 1)).isoformat())
        for n, cid in enumerate((acme, bolt, acme, unknown, bolt))
    ]
    query = parse_input(c.QuoteListQuery, {"created_by_customer": "true", "limit": "4"}, "query")
    with gw.sql() as sent:
        page = q.list_quote_requests(make_call(gw, query=query))
    assert len(reads_of(sent, "customers")) == 1  # every name of the page at once
    assert len(reads_of(sent, "quote_request_views")) == 1
    assert gw.quotes.calls == []  # reads never cross the broker
    assert [item["id"] for item in page["items"]] == [r["id"] for r in seeded[:4]]  # newest first
    dumped = c.QuoteRequestSchema().dump(page["items"], many=True)  # what dispatch does
    assert [d["customer_name"] for d in dumped] == [
        "Acme Fleet",
        "Bolt Haulage",
        "Acme Fleet",
        None,
    ]
    assert dumped[0]["updated_at"] == "2025-03-02T11:30:00.123456+00:00"
    assert dumped[0]["created_at"] == (T0 - timedelta(minutes=1)).isoformat()
    assert dumped[0]["number"] == "Q-000042"
    assert page["next_cursor"] is not None
    rest = q.list_quote_requests(make_call(gw, query={**query, "cursor": page["next_cursor"]}))
    assert [item["id"] for item in rest["items"]] == [seeded[4]["id"]]
    assert rest["items"][0]["customer_name"] == "Bolt Haulage"
    assert rest["next_cursor"] is None


def test_an_empty_list_runs_no_directory_query(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    gw.customer("Acme Fleet")
    with gw.sql() as sent:
        page = q.list_quote_requests(make_call(gw, query={"limit": 50}))
    assert page == {"items": [], "next_cursor": None}
    assert reads_of(sent, "customers") == []
    assert gw.quotes.calls == []


def test_detail_carries_customer_name_and_etag(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    acme = gw.customer("Acme Fleet")
    item = gw.quote(customer_id=acme)
    other = gw.quote(customer_id=acme)
    gw.attachment(item["id"], T0)
    gw.attachment(item["id"], T0 + timedelta(minutes=1))
    gw.attachment(other["id"], T0)  # another request's file does not count
    response = q.get_quote_request(make_call(gw, path={"id": item["id"]}))
    body = json.loads(response.get_data())
    assert response.status_code == 200
    assert response.headers["ETag"] == '"3"'
    assert body["id"] == item["id"]
    assert body["customer_name"] == "Acme Fleet"
    assert body["attachment_count"] == 2
    assert body["created_at"] == "2025-03-01T10:00:00+00:00"
    assert gw.quotes.calls == []
    with pytest.raises(errors.NotFound):  # an id not in this tenant's view
        q.get_quote_request(make_call(gw, path={"id": new_id()}))


# --- commands: by RPC, the reply applied to the view ------------------------------------


def test_create_sends_uuids_as_text_and_answers_201_with_location(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    acme = gw.customer("Acme Fleet")
    created = quote_item(id=new_id(), customer_id=acme, version=1)
    gw.quotes.replies["create_quote_request"] = created
    body = parse_input(
        c.CreateQuoteRequest,
        {"description": "Need tyres", "customer_id": acme, "unit_id": None},
        "request body",
    )
    response = q.create_quote_request(make_call(gw, "POST", body=body))
    assert gw.quotes.calls == [
        (
            "create_quote_request",
            ({"description": "Need tyres", "customer_id": acme, "unit_id": None},),
        )
    ]
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/v1/quote-requests/{created['id']}"
    assert response.headers["ETag"] == '"1"'
    assert json.loads(response.get_data())["customer_name"] == "Acme Fleet"


@pytest.mark.parametrize(
    ("handler", "method", "body", "if_match", "sent"),
    [
        (
            q.update_quote_request,
            "update_quote_request",
            {"assigned_to": uuid.UUID(CUSTOMER)},
            'W/"3"',
            {"assigned_to": CUSTOMER, "version": 3},
        ),
        (
            q.approve_quote_request,
            "approve_quote_request",
            {"po_number": "PO-1"},
            '"3"',
            {"po_number": "PO-1", "version": 3},
        ),
        (
            q.deny_quote_request,
            "deny_quote_request",
            {"reason": "Too dear", "version": 2},
            '"3"',
            {"reason": "Too dear", "version": 2},
        ),
        (q.cancel_quote_request, "cancel_quote_request", {}, None, {}),
    ],
)
def test_state_changes_pass_the_version_from_body_or_if_match(
    db, tmp_path, handler, method, body, if_match, sent
):
    gw = FakeGateway(tmp_path, db)
    seeded = gw.quote(version=3)
    gw.quotes.replies[method] = {**seeded, "version": 4}
    headers = {"If-Match": if_match} if if_match else {}
    call = make_call(gw, "POST", path={"id": seeded["id"]}, body=body, headers=headers)
    response = handler(call)
    assert gw.quotes.calls == [(method, (seeded["id"], sent))]
    assert response.headers["ETag"] == '"4"'


def test_a_commands_reply_is_read_right_after(db, tmp_path):
    """Read-your-writes: the reply is in the view before the answer, so the very next
    read (detail, list, tabs, discussion) sees it without waiting for the event."""
    gw = FakeGateway(tmp_path, db)
    acme = gw.customer("Acme Fleet")
    created = quote_item(id=new_id(), customer_id=acme, version=1)
    gw.quotes.replies["create_quote_request"] = created
    q.create_quote_request(
        make_call(gw, "POST", body={"description": "Brakes squeal", "customer_id": acme})
    )
    detail = q.get_quote_request(make_call(gw, path={"id": created["id"]}))
    assert detail.headers["ETag"] == '"1"'
    assert json.loads(detail.get_data())["customer_name"] == "Acme Fleet"

    approved = {**created, "status": "approved", "po_number": "PO-9", "version": 2}
    gw.quotes.replies["approve_quote_request"] = approved
    q.approve_quote_request(
        make_call(gw, "POST", path={"id": created["id"]}, body={"po_number": "PO-9"})
    )
    detail = q.get_quote_request(make_call(gw, path={"id": created["id"]}))
    assert detail.headers["ETag"] == '"2"'
    assert json.loads(detail.get_data())["status"] == "approved"
    listed = q.list_quote_requests(make_call(gw, query={"status": "approved"}))
    assert [(i["id"], i["po_number"]) for i in listed["items"]] == [(created["id"], "PO-9")]
    tabs = q.summarize_quote_requests(make_call(gw, query={}))
    assert (tabs["counts"]["approved"], tabs["counts"]["pending"]) == (1, 0)

    comment = {
        "id": new_id(), "quote_request_id": created["id"], "author_kind": "staff",
        "author_id": gw.actor.id, "author_name": "Sam", "body": "Parts ordered",
        "created_at": T0.isoformat(),
    }  # fmt: skip
    gw.quotes.replies["add_comment"] = comment
    q.discussion.add_comment(
        make_call(gw, "POST", path={"id": created["id"]}, body={"body": "Parts ordered"})
    )
    page = q.discussion.list_comments(make_call(gw, path={"id": created["id"]}))
    assert [item["body"] for item in page["items"]] == ["Parts ordered"]
    gw.quotes.replies["delete_comment"] = {"id": comment["id"], "deleted_at": T0.isoformat()}
    q.discussion.delete_comment(
        make_call(gw, "DELETE", path={"id": created["id"], "cid": comment["id"]})
    )
    assert q.discussion.list_comments(make_call(gw, path={"id": created["id"]}))["items"] == []
    assert gw.quotes.names() == [
        "create_quote_request",
        "approve_quote_request",
        "add_comment",
        "delete_comment",
    ]  # and no read went by RPC


def test_a_reply_older_than_the_view_row_does_not_overwrite_it(db, tmp_path):
    """A slow reply arriving after a newer event (here: version 5 already applied)."""
    gw = FakeGateway(tmp_path, db)
    current = gw.quote(version=5, status="approved", po_number="PO-1")
    stale = {**current, "version": 4, "status": "in_process", "po_number": None}
    gw.quotes.replies["update_quote_request"] = stale
    q.update_quote_request(
        make_call(gw, "PATCH", path={"id": current["id"]}, body={"description": "x"})
    )
    detail = q.get_quote_request(make_call(gw, path={"id": current["id"]}))
    body = json.loads(detail.get_data())
    assert detail.headers["ETag"] == '"5"'
    assert (body["version"], body["status"], body["po_number"]) == (5, "approved", "PO-1")


# --- the export -----------------------------------------------------------------------


def test_export_is_csv_attachment_with_names_in_one_query(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    acme, bolt = gw.customer("Acme, Inc."), gw.customer("=Bolt")
    gw.quote(customer_id=acme, description="-cmd|' /C calc'!A0", created_at=T0.isoformat())
    gw.quote(customer_id=bolt, created_at=(T0 - timedelta(minutes=1)).isoformat())
    gw.quote(customer_id=acme, status="approved")  # filtered out
    query = parse_input(c.QuoteFilters, {"status": "pending"}, "query")
    with gw.sql() as sent:
        response = q.export_quote_requests(make_call(gw, query=query))
        data = response.get_data(as_text=True)
    pages = reads_of(sent, "quote_request_views")
    assert len(pages) == 1
    assert c.EXPORT_PAGE_MAX + 1 in dict(pages[0][1]).values()  # pages of EXPORT_PAGE_MAX
    assert len(reads_of(sent, "customers")) == 1
    assert gw.quotes.calls == []
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="quote-requests.csv"'
    parsed = list(csv.reader(io.StringIO(data)))
    assert parsed[0][3] == "customer"
    assert [r[3] for r in parsed[1:]] == ["Acme, Inc.", "'=Bolt"]
    assert parsed[1][4] == "'-cmd|' /C calc'!A0"


def bulk(gw: FakeGateway, customer: str, count: int) -> None:
    """``count`` pending requests straight into the view, Q-000001 the newest."""
    assert gw.scratch is not None
    with gw.scratch.owner.connect() as conn:
        conn.execute(
            text(
                "insert into gateway.quote_request_views (id, tenant_id, number, customer_id,"
                " unit_id, work_order_id, description, status, created_by, created_by_name,"
                " created_by_customer, visible_to_customer, decided_on_behalf, version,"
                " created_at, updated_at, source_at)"
                " select gen_random_uuid(), :t, n, :c, null, null, 'Bulk ' || n, 'pending',"
                " gen_random_uuid(), '', true, true, false, 1,"
                " now() - make_interval(secs => n), now(), now()"
                " from generate_series(1, :n) as n"
            ),
            {"t": gw.tenant_id, "c": customer, "n": count},
        )


def test_export_streams_every_page_fetching_each_only_when_needed(db, tmp_path):
    """Three pages: the first is read before the response starts (a refusal is still a
    problem+json), each other one only once the rows before it have been written."""
    gw = FakeGateway(tmp_path, db)
    total = 2 * c.EXPORT_PAGE_MAX + 5
    bulk(gw, gw.customer("Acme"), total)
    with gw.sql() as sent:
        response = q.export_quote_requests(make_call(gw, query={}))
        assert response.is_streamed
        assert len(reads_of(sent, "quote_request_views")) == 1
        chunks: list[str] = []
        for chunk in response.iter_encoded():
            chunks.append(chunk.decode())
            written = "".join(chunks).count("\r\n") - 1  # rows, without the header
            fetched = len(reads_of(sent, "quote_request_views"))
            assert fetched == max(1, math.ceil(written / c.EXPORT_PAGE_MAX)), written
    pages = reads_of(sent, "quote_request_views")
    assert len(pages) == 3
    assert all(c.EXPORT_PAGE_MAX + 1 in dict(params).values() for _, params in pages)
    assert len(reads_of(sent, "customers")) == 3  # one per page
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[0][0] == "number"
    assert [row[0] for row in rows[1:]] == [f"Q-{n:06d}" for n in range(1, total + 1)]
    assert {row[3] for row in rows[1:]} == {"Acme"}
    assert gw.quotes.calls == []


def test_follow_pages_holds_one_page_at_a_time():
    fetched: list[str | None] = []

    def fetch(cursor: str | None) -> dict[str, Any]:
        fetched.append(cursor)
        n = int(cursor or 0)
        return {"items": [n], "next_cursor": str(n + 1) if n < 4 else None}

    items = q.follow_pages(fetch, fetch(None))
    assert next(items) == 0 and fetched == [None]
    assert next(items) == 1 and fetched == [None, "1"]
    assert list(items) == [2, 3, 4]


# --- comments and attachments ---------------------------------------------------------


def test_comments_are_pages_oldest_first_without_the_deleted(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    quote, other = gw.quote(), gw.quote()
    later = gw.comment(quote["id"], "Third", T0 + timedelta(hours=3))
    first = gw.comment(quote["id"], "First", T0)
    gone = gw.comment(quote["id"], "Oops", T0 + timedelta(hours=1))
    second = gw.comment(quote["id"], "Second", T0 + timedelta(hours=2))
    gw.comment(other["id"], "Elsewhere", T0)
    with gw.seeding() as uow:
        views.delete_comment(uow, views.QUOTE_REQUEST, quote["id"], gone["id"], T0)
    query = parse_input(c.OldestFirstPage, {"limit": "2"}, "query")
    page = q.discussion.list_comments(make_call(gw, path={"id": quote["id"]}, query=query))
    assert c.CommentSchema().dump(page["items"], many=True) == [first, second]
    assert page["next_cursor"] is not None
    query = parse_input(c.OldestFirstPage, {"limit": "2", "cursor": page["next_cursor"]}, "query")
    rest = q.discussion.list_comments(make_call(gw, path={"id": quote["id"]}, query=query))
    assert c.CommentSchema().dump(rest["items"], many=True) == [later]
    assert rest["next_cursor"] is None
    assert gw.quotes.calls == []
    with pytest.raises(errors.NotFound):  # the record must be in the caller's view
        q.discussion.list_comments(make_call(gw, path={"id": new_id()}))


def test_attachments_are_pages_oldest_first(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    quote, other = gw.quote(), gw.quote()
    later = gw.attachment(quote["id"], T0 + timedelta(hours=2), filename="c.pdf")
    first = gw.attachment(quote["id"], T0, filename="a.pdf")
    second = gw.attachment(quote["id"], T0 + timedelta(hours=1), filename="b.pdf")
    gw.attachment(other["id"], T0)
    query = parse_input(c.OldestFirstPage, {"limit": "2"}, "query")
    page = q.discussion.list_attachments(make_call(gw, path={"id": quote["id"]}, query=query))
    assert c.AttachmentSchema().dump(page["items"], many=True) == [first, second]
    query = parse_input(c.OldestFirstPage, {"limit": "2", "cursor": page["next_cursor"]}, "query")
    rest = q.discussion.list_attachments(make_call(gw, path={"id": quote["id"]}, query=query))
    assert c.AttachmentSchema().dump(rest["items"], many=True) == [later]
    assert rest["next_cursor"] is None
    assert gw.quotes.calls == []


# --- uploads --------------------------------------------------------------------------


def upload_call(gw: FakeGateway, data: dict[str, Any], quote_id: str = QID, **builder: Any) -> Call:
    return make_call(gw, "POST", path={"id": quote_id}, data=data, **builder)


def test_upload_authorises_then_stores_by_hash_then_records(db, tmp_path):
    gw = FakeGateway(tmp_path, db, authorize_upload="quote_document")
    quote = gw.quote()
    gw.quotes.replies["add_attachment"] = attachment_reply
    call = upload_call(
        gw,
        {
            "file": (io.BytesIO(PDF), "Quote: final?.pdf", "application/pdf"),
            "kind": "quote_document",
        },
        quote["id"],
    )
    result = q.discussion.add_attachment(call)
    digest = hashlib.sha256(PDF).hexdigest()
    assert gw.quotes.names() == ["authorize_upload", "add_attachment"]
    assert gw.quotes.calls[0] == ("authorize_upload", (quote["id"], "quote_document"))
    assert gw.quotes.calls[1] == (
        "add_attachment",
        (
            quote["id"],
            {
                "kind": "quote_document",
                "filename": "Quote final.pdf",
                "content_type": "application/pdf",
                "size": len(PDF),
                "sha256": digest,
            },
        ),
    )
    assert gw.blobs.open(digest).read() == PDF
    answered = c.AttachmentSchema().dump(result)
    assert answered["sha256"] == digest
    # the reply is in the attachment view at once: listed, counted, downloadable
    listed = q.discussion.list_attachments(make_call(gw, path={"id": quote["id"]}))
    assert c.AttachmentSchema().dump(listed["items"], many=True) == [answered]
    detail = q.get_quote_request(make_call(gw, path={"id": quote["id"]}))
    assert json.loads(detail.get_data())["attachment_count"] == 1
    path = {"id": quote["id"], "aid": answered["id"]}
    response = q.discussion.download_attachment(make_call(gw, path=path))
    assert b"".join(response.response) == PDF
    response.close()


def test_kind_defaults_to_attachment(db, tmp_path):
    gw = FakeGateway(tmp_path, db, authorize_upload="attachment", add_attachment=attachment_reply)
    quote = gw.quote()
    q.discussion.add_attachment(upload_call(gw, {"file": (io.BytesIO(PDF), "a.pdf")}, quote["id"]))
    assert gw.quotes.calls[0] == ("authorize_upload", (quote["id"], "attachment"))
    assert gw.quotes.calls[1][1][1]["kind"] == "attachment"
    listed = q.discussion.list_attachments(make_call(gw, path={"id": quote["id"]}))
    assert [item["kind"] for item in listed["items"]] == ["attachment"]


def test_a_refused_uploader_leaves_no_bytes_behind(tmp_path):
    def refuse(*_args: Any) -> Any:
        raise Forbidden("only shop staff may attach a quote document")

    gw = FakeGateway(tmp_path, authorize_upload=refuse)
    with pytest.raises(Forbidden):
        q.discussion.add_attachment(
            upload_call(gw, {"file": (io.BytesIO(PDF), "a.pdf"), "kind": "quote_document"})
        )
    assert blob_files(gw) == []
    assert gw.quotes.names() == ["authorize_upload"]


def test_a_disallowed_file_is_415_and_not_stored(tmp_path):
    gw = FakeGateway(tmp_path, authorize_upload="attachment")
    html = b"<!doctype html><script>alert(1)</script>"
    with pytest.raises(UnsupportedMediaType):
        q.discussion.add_attachment(
            upload_call(gw, {"file": (io.BytesIO(html), "x.txt", "text/plain")})
        )
    assert blob_files(gw) == []
    assert gw.quotes.names() == ["authorize_upload"]


def test_an_oversized_content_length_is_413_before_anything_is_read(tmp_path):
    gw = FakeGateway(tmp_path)
    call = upload_call(gw, {"file": (io.BytesIO(PDF), "a.pdf")})
    call.request.environ["CONTENT_LENGTH"] = str(discussion.MAX_UPLOAD_REQUEST_BYTES + 1)
    with pytest.raises(ApiError) as err:
        q.discussion.add_attachment(call)
    assert err.value.code == "payload_too_large"
    assert gw.quotes.calls == []
    assert call.request.stream.tell() == 0  # the body was never touched


def test_a_streamed_body_over_the_cap_is_413_not_500(tmp_path, monkeypatch):
    monkeypatch.setattr(discussion, "MAX_UPLOAD_REQUEST_BYTES", 1024)
    gw = FakeGateway(tmp_path)
    call = upload_call(gw, {"file": (io.BytesIO(b"x" * 5000), "a.txt")})
    del call.request.environ["CONTENT_LENGTH"]  # chunked: no length known up front
    call.request.environ["wsgi.input_terminated"] = True
    with pytest.raises(ApiError) as err:
        q.discussion.add_attachment(call)
    assert err.value.code == "payload_too_large"
    assert blob_files(gw) == [] and gw.quotes.calls == []


def test_werkzeug_entity_too_large_becomes_problem_413():
    response = error_response(RequestEntityTooLarge())
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert json.loads(response.get_data())["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "attachment"}, "file"),
        ({"file": "not a file part"}, "file"),
        ({"file": (io.BytesIO(PDF), "a.pdf"), "kind": "invoice"}, "kind"),
        ({"file": [(io.BytesIO(PDF), "a.pdf"), (io.BytesIO(PDF), "b.pdf")]}, "file"),
    ],
)
def test_missing_file_or_bad_kind_is_422_naming_the_field(tmp_path, data, field):
    gw = FakeGateway(tmp_path)
    with pytest.raises(ApiError) as err:
        q.discussion.add_attachment(upload_call(gw, data, content_type="multipart/form-data"))
    assert err.value.code == "validation_failed"
    assert err.value.errors is not None
    assert field in err.value.errors
    assert gw.quotes.calls == []


def test_a_non_multipart_upload_is_415(tmp_path):
    gw = FakeGateway(tmp_path)
    call = make_call(gw, "POST", path={"id": QID}, data=b"{}", content_type="application/json")
    with pytest.raises(ApiError) as err:
        q.discussion.add_attachment(call)
    assert err.value.code == "unsupported_media_type"


# --- downloads ------------------------------------------------------------------------


def test_download_streams_the_blob_with_safe_headers(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    digest = gw.blobs.put(PDF)
    quote = gw.quote()
    meta = gw.attachment(quote["id"], T0, filename="Devis n°1.pdf", sha256=digest)
    path = {"id": quote["id"], "aid": meta["id"]}
    response = q.discussion.download_attachment(make_call(gw, path=path))
    assert gw.quotes.calls == []  # authorised by the record's view, like its reads
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(PDF))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    disposition = response.headers["Content-Disposition"]
    assert parse_options_header(disposition) == ("attachment", {"filename": "Devis n°1.pdf"})
    assert b"".join(response.response) == PDF
    response.close()
    other = gw.quote()  # a file is only found under its own record
    with pytest.raises(errors.NotFound):
        q.discussion.download_attachment(make_call(gw, path={"id": other["id"], "aid": meta["id"]}))


def test_download_of_a_missing_blob_is_not_found(db, tmp_path):
    gw = FakeGateway(tmp_path, db)
    quote = gw.quote()
    meta = gw.attachment(quote["id"], T0, sha256=hashlib.sha256(b"gone").hexdigest())
    with pytest.raises(errors.NotFound):
        q.discussion.download_attachment(make_call(gw, path={"id": quote["id"], "aid": meta["id"]}))
    with pytest.raises(errors.NotFound):  # nor an attachment the view does not have
        q.discussion.download_attachment(make_call(gw, path={"id": quote["id"], "aid": AID}))
