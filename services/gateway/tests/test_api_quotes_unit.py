"""Unit tests of the quote-request routes that need no running system: header parsing
and building, the CSV export, route matching, and the handlers against a fake gateway
(fake RPC proxy and directory, a real blob store in a temporary directory)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from contextlib import contextmanager
from typing import Any

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from contracts import quotes as c
from kit.blobs import BlobStore
from kit.context import Actor
from kit.errors import Forbidden, UnsupportedMediaType
from services.gateway import api_quotes as q
from services.gateway import discussion
from services.gateway.web import (
    ROUTES,
    ApiError,
    Call,
    build_map,
    error_response,
    expected_version,
    parse_input,
)

QID = "6f1c1d1e-5b0a-4c44-9d0b-0a8f3c9d7e11"
CID = "0c0c1d1e-5b0a-4c44-9d0b-0a8f3c9d7e12"
AID = "0a0a1d1e-5b0a-4c44-9d0b-0a8f3c9d7e13"
CUSTOMER = "0b7e5c52-1d8e-4b8a-8a35-2f1b7d7b6a01"
OTHER_CUSTOMER = "9a0e3f0c-7b3c-4f5e-8b8c-3b5c1f1e2d02"
PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n"


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


class FakeResult:
    def __init__(self, rows: list[tuple[str, str]]) -> None:
        self.rows = rows

    def all(self) -> list[tuple[str, str]]:
        return self.rows


class FakeDb:
    """The gateway directory: customers by id; counts the statements executed."""

    def __init__(self, customers: dict[str, str]) -> None:
        self.customers = customers
        self.statements: list[Any] = []
        outer = self

        class Session:
            def execute(self, stmt: Any) -> FakeResult:
                outer.statements.append(stmt)
                ids = stmt.compile().params
                wanted = {str(v) for value in ids.values() for v in _flat(value)}
                return FakeResult([(k, v) for k, v in outer.customers.items() if k in wanted])

        self.session = Session()

        self.core = self  # hot-path reads go through DatabaseCore.read

    @contextmanager
    def unit_of_work(self) -> Any:
        yield self

    def read(self, tenant_id: str, model: Any, stmt: Any) -> list[tuple[str, str]]:
        return self.session.execute(stmt.where(model.tenant_id == tenant_id)).all()


def _flat(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


class FakeGateway:
    def __init__(
        self, tmp_path: Any, customers: dict[str, str] | None = None, **replies: Any
    ) -> None:
        self.quotes = FakeQuotes(**replies)
        self.db = FakeDb(customers or {})
        self.blobs = BlobStore(tmp_path / "blobs")


def make_call(
    gw: FakeGateway,
    method: str = "GET",
    path: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    **builder: Any,
) -> Call:
    request = Request(EnvironBuilder(method=method, path="/api/v1/x", **builder).get_environ())
    staff = Actor(
        kind="staff", id=str(uuid.uuid4()), tenant_id=str(uuid.uuid4()), roles=("advisor",)
    )
    return Call(
        request=request, gw=gw, path=path or {}, query=query or {}, body=body or {}, actor=staff
    )


def blob_files(gw: FakeGateway) -> list[Any]:
    root = gw.blobs.root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


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


# --- handlers against a fake gateway --------------------------------------------------


def test_list_names_customers_in_one_query_and_dumps_with_the_schema(tmp_path):
    items = [
        quote_item(id=str(uuid.uuid4()), customer_id=cid)
        for cid in (CUSTOMER, OTHER_CUSTOMER, CUSTOMER, str(uuid.uuid4()))
    ]
    gw = FakeGateway(
        tmp_path,
        {CUSTOMER: "Acme Fleet", OTHER_CUSTOMER: "Bolt Haulage"},
        list_quote_requests={"items": items, "next_cursor": "abc"},
    )
    query = parse_input(
        c.QuoteListQuery,
        {"customer_id": CUSTOMER, "created_by_customer": "true", "limit": "10"},
        "query",
    )
    page = q.list_quote_requests(make_call(gw, query=query))
    assert len(gw.db.statements) == 1
    assert gw.quotes.calls == [
        (
            "list_quote_requests",
            ({"customer_id": CUSTOMER, "created_by_customer": True, "limit": 10},),
        )
    ]
    dumped = c.QuoteRequestSchema().dump(page["items"], many=True)  # what dispatch does
    assert [d["customer_name"] for d in dumped] == [
        "Acme Fleet",
        "Bolt Haulage",
        "Acme Fleet",
        None,
    ]
    assert dumped[0]["updated_at"] == "2025-03-02T11:30:00.123456+00:00"
    assert page["next_cursor"] == "abc"


def test_an_empty_list_runs_no_directory_query(tmp_path):
    gw = FakeGateway(tmp_path, list_quote_requests={"items": [], "next_cursor": None})
    page = q.list_quote_requests(make_call(gw, query={"limit": 50}))
    assert page == {"items": [], "next_cursor": None}
    assert gw.db.statements == []


def test_detail_carries_customer_name_and_etag(tmp_path):
    gw = FakeGateway(
        tmp_path, {CUSTOMER: "Acme Fleet"}, get_quote_request=quote_item(attachment_count=2)
    )
    response = q.get_quote_request(make_call(gw, path={"id": QID}))
    body = json.loads(response.get_data())
    assert response.status_code == 200
    assert response.headers["ETag"] == '"3"'
    assert body["customer_name"] == "Acme Fleet"
    assert body["attachment_count"] == 2
    assert body["created_at"] == "2025-03-01T10:00:00+00:00"


def test_create_sends_uuids_as_text_and_answers_201_with_location(tmp_path):
    gw = FakeGateway(tmp_path, {CUSTOMER: "Acme Fleet"}, create_quote_request=quote_item())
    body = parse_input(
        c.CreateQuoteRequest,
        {"description": "Need tyres", "customer_id": CUSTOMER, "unit_id": None},
        "request body",
    )
    response = q.create_quote_request(make_call(gw, "POST", body=body))
    assert gw.quotes.calls == [
        (
            "create_quote_request",
            ({"description": "Need tyres", "customer_id": CUSTOMER, "unit_id": None},),
        )
    ]
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/v1/quote-requests/{QID}"


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
    tmp_path, handler, method, body, if_match, sent
):
    gw = FakeGateway(tmp_path, **{method: quote_item(version=4)})
    headers = {"If-Match": if_match} if if_match else {}
    response = handler(make_call(gw, "POST", path={"id": QID}, body=body, headers=headers))
    assert gw.quotes.calls == [(method, (QID, sent))]
    assert response.headers["ETag"] == '"4"'


def test_export_is_csv_attachment_with_names_in_one_query(tmp_path):
    rows = [
        quote_item(customer_id=CUSTOMER, description="-cmd|' /C calc'!A0"),
        quote_item(customer_id=OTHER_CUSTOMER),
    ]
    gw = FakeGateway(
        tmp_path,
        {CUSTOMER: "Acme, Inc.", OTHER_CUSTOMER: "=Bolt"},
        export_quote_requests={"items": rows, "next_cursor": None},
    )
    query = parse_input(c.QuoteFilters, {"status": "pending"}, "query")
    response = q.export_quote_requests(make_call(gw, query=query))
    assert gw.quotes.calls == [
        ("export_quote_requests", ({"status": "pending", "limit": c.EXPORT_PAGE_MAX},))
    ]
    assert len(gw.db.statements) == 1
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="quote-requests.csv"'
    parsed = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert parsed[0][3] == "customer"
    assert [r[3] for r in parsed[1:]] == ["Acme, Inc.", "'=Bolt"]
    assert parsed[1][4] == "'-cmd|' /C calc'!A0"


def test_export_streams_every_page_fetching_each_only_when_needed(tmp_path):
    """Three pages: the first is fetched before the response starts (a refusal is
    still a problem+json), the others only as the body is read."""
    pages = {
        None: {"items": [quote_item(number="Q-000003")], "next_cursor": "c1"},
        "c1": {"items": [quote_item(number="Q-000002")], "next_cursor": "c2"},
        "c2": {"items": [quote_item(number="Q-000001")], "next_cursor": None},
    }
    gw = FakeGateway(
        tmp_path, {CUSTOMER: "Acme"}, export_quote_requests=lambda f: pages[f.get("cursor")]
    )
    response = q.export_quote_requests(make_call(gw, query={}))
    assert response.is_streamed
    assert [args[0].get("cursor") for _, args in gw.quotes.calls] == [None]
    body = b"".join(response.iter_encoded()).decode()
    assert [args[0].get("cursor") for _, args in gw.quotes.calls] == [None, "c1", "c2"]
    assert [row[0] for row in csv.reader(io.StringIO(body))] == [
        "number", "Q-000003", "Q-000002", "Q-000001"
    ]  # fmt: skip
    assert {args[0]["limit"] for _, args in gw.quotes.calls} == {c.EXPORT_PAGE_MAX}


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


@pytest.mark.parametrize(
    ("handler", "method"),
    [
        (q.discussion.list_comments, "list_comments"),
        (q.discussion.list_attachments, "list_attachments"),
    ],
)
def test_comment_and_attachment_lists_are_pages(tmp_path, handler, method):
    comment = {
        "id": str(uuid.uuid4()),
        "quote_request_id": QID,
        "author_kind": "staff",
        "author_id": str(uuid.uuid4()),
        "author_name": "Sam",
        "body": "Hi",
        "created_at": "2025-03-01T10:00:00+00:00",
    }
    replies: dict[str, Any] = {method: {"items": [comment], "next_cursor": "abc"}}
    gw = FakeGateway(tmp_path, **replies)
    cursor = "1-" + "0" * 32  # a cursor as kit.pagination writes it
    query = parse_input(c.OldestFirstPage, {"limit": "2", "cursor": cursor}, "query")
    page = handler(make_call(gw, path={"id": QID}, query=query))
    assert gw.quotes.calls == [(method, (QID, {"limit": 2, "cursor": cursor}))]
    assert page["next_cursor"] == "abc"
    if method == "list_comments":
        assert c.CommentSchema().dump(page["items"], many=True) == [comment]


# --- uploads --------------------------------------------------------------------------


def upload_call(gw: FakeGateway, data: dict[str, Any], **builder: Any) -> Call:
    return make_call(gw, "POST", path={"id": QID}, data=data, **builder)


def attachment_reply(quote_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "quote_request_id": quote_id,
        "uploaded_by_name": "Sam",
        "created_at": "2025-03-01T10:00:00+00:00",
        **meta,
    }


def test_upload_authorises_then_stores_by_hash_then_records(tmp_path):
    gw = FakeGateway(tmp_path, authorize_upload="quote_document", add_attachment=attachment_reply)
    call = upload_call(
        gw,
        {
            "file": (io.BytesIO(PDF), "Quote: final?.pdf", "application/pdf"),
            "kind": "quote_document",
        },
    )
    result = q.discussion.add_attachment(call)
    digest = hashlib.sha256(PDF).hexdigest()
    assert gw.quotes.names() == ["authorize_upload", "add_attachment"]
    assert gw.quotes.calls[0] == ("authorize_upload", (QID, "quote_document"))
    assert gw.quotes.calls[1] == (
        "add_attachment",
        (
            QID,
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
    assert c.AttachmentSchema().dump(result)["sha256"] == digest


def test_kind_defaults_to_attachment(tmp_path):
    gw = FakeGateway(tmp_path, authorize_upload="attachment", add_attachment=attachment_reply)
    q.discussion.add_attachment(upload_call(gw, {"file": (io.BytesIO(PDF), "a.pdf")}))
    assert gw.quotes.calls[0] == ("authorize_upload", (QID, "attachment"))


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


def test_download_streams_the_blob_with_safe_headers(tmp_path):
    gw = FakeGateway(tmp_path)
    digest = gw.blobs.put(PDF)
    meta = attachment_reply(
        QID,
        {
            "kind": "attachment",
            "filename": "Devis n°1.pdf",
            "content_type": "application/pdf",
            "size": len(PDF),
            "sha256": digest,
        },
    )
    gw.quotes.replies["get_attachment"] = meta
    response = q.discussion.download_attachment(make_call(gw, path={"id": QID, "aid": meta["id"]}))
    assert gw.quotes.calls == [("get_attachment", (QID, meta["id"]))]
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Length"] == str(len(PDF))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    disposition = response.headers["Content-Disposition"]
    assert parse_options_header(disposition) == ("attachment", {"filename": "Devis n°1.pdf"})
    assert b"".join(response.response) == PDF
    response.close()


def test_download_of_a_missing_blob_is_not_found(tmp_path):
    from kit.errors import NotFound

    gw = FakeGateway(tmp_path)
    gw.quotes.replies["get_attachment"] = {
        "sha256": hashlib.sha256(b"gone").hexdigest(),
        "filename": "x.pdf",
        "content_type": "application/pdf",
    }
    with pytest.raises(NotFound):
        q.discussion.download_attachment(make_call(gw, path={"id": QID, "aid": "a"}))
