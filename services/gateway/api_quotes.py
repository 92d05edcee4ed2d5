"""Quote requests: the HTTP face of the quotes service.

Handlers validate with the contract schemas (the route's body/query), call the quotes
service over RPC with JSON-safe payloads, and add what only the gateway knows: customer
names from its directory (one query per response), the CSV export (streamed page by
page), and the file bytes of attachments (stored here by content hash, described in
the quotes service).
"""

from __future__ import annotations

import os
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote as percent_encode

from marshmallow import Schema
from sqlalchemy import select
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from contracts import quotes as c
from kit.csvout import iter_csv, to_csv
from kit.schemas import shared
from kit.uploads import ALLOWED_TYPES, MAX_UPLOAD_BYTES, check_upload, sanitize_filename
from services.gateway.models import Customer
from services.gateway.web import (
    ANY_CALLER,
    API_PREFIX,
    STAFF,
    ApiError,
    Call,
    expected_version,
    json_response,
    refuse_chunked,
    revive,
    route,
)

TAG = "quote requests"
STAFF_OR_PORTAL = ("staff", "portal")
ATTACHMENT_KINDS = ("attachment", "quote_document")
MULTIPART_OVERHEAD = 64 * 1024
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD
DOWNLOAD_CHUNK = 64 * 1024
# A download is served as the type its bytes were accepted as (octet-stream if unknown).
DOWNLOAD_TYPES = (*sorted(ALLOWED_TYPES), "application/octet-stream")

CSV_COLUMNS = (
    "number", "status", "created_by_customer", "customer", "description", "assigned_to",
    "po_number", "created_at", "updated_at",
)  # fmt: skip
CSV_FILENAME = "quote-requests.csv"


# --- pure helpers ---------------------------------------------------------------------


def ascii_filename(name: str) -> str:
    """A plain-ASCII stand-in for ``name`` for clients that ignore ``filename*``."""
    decomposed = unicodedata.normalize("NFKD", name)
    out = []
    for ch in decomposed:
        if unicodedata.combining(ch):
            continue
        if " " <= ch <= "~" and ch not in '"\\%':
            out.append(ch)
        else:
            out.append("_")
    text = "".join(out).strip()
    return text or "file"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback and the exact UTF-8 name (RFC 6266/8187)."""
    safe = sanitize_filename(filename)
    encoded = percent_encode(safe.encode("utf-8"), safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{ascii_filename(safe)}\"; filename*=UTF-8''{encoded}"


def csv_row(item: Mapping[str, Any]) -> list[object]:
    """One quote request as the export's cells (neutralised later by ``to_csv``)."""
    created_by_customer = item.get("created_by_customer")
    return [
        item.get("number"),
        item.get("status"),
        None if created_by_customer is None else ("true" if created_by_customer else "false"),
        item.get("customer_name") or item.get("customer_id"),
        item.get("description"),
        item.get("assigned_to"),
        item.get("po_number"),
        item.get("created_at"),
        item.get("updated_at"),
    ]


def export_csv(items: Iterable[Mapping[str, Any]]) -> str:
    return to_csv(CSV_COLUMNS, (csv_row(item) for item in items))


def follow_pages(
    fetch: Callable[[str | None], Mapping[str, Any]], first: Mapping[str, Any]
) -> Iterator[Mapping[str, Any]]:
    """Every item of a keyset-paged list, fetching the next page only when the one
    before is used up: one page in memory at a time, however many rows there are."""
    page = first
    while True:
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return
        page = fetch(cursor)


def json_safe(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a schema loaded, ready for RPC: UUIDs and datetimes as text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, uuid.UUID):
            out[key] = str(value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _page(
    schema_cls: type[Schema], items: Iterable[Mapping[str, Any]], next_cursor: str | None = None
) -> dict[str, Any]:
    return {"items": [revive(schema_cls, x) for x in items], "next_cursor": next_cursor}


# --- gateway-side enrichment ----------------------------------------------------------


def customer_names(call: Call, customer_ids: Iterable[str | None]) -> dict[str, str]:
    """Names of the given customers from the directory, in one query."""
    ids = sorted({str(i) for i in customer_ids if i})
    if not ids:
        return {}
    actor = call.require_actor()
    rows = call.gw.db.core.read(
        actor.tenant_id, Customer, select(Customer.id, Customer.name).where(Customer.id.in_(ids))
    )
    return {str(row_id): name for row_id, name in rows}


def with_customer_names(call: Call, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = customer_names(call, (item.get("customer_id") for item in items))
    for item in items:
        item["customer_name"] = names.get(str(item.get("customer_id")))
    return items


def quote_response(call: Call, item: Mapping[str, Any], status: int = 200) -> Response:
    """One quote request with its customer's name and an ``ETag`` of its version."""
    (enriched,) = with_customer_names(call, [dict(item)])
    body = shared(c.QuoteRequestSchema).dump(revive(c.QuoteRequestSchema, enriched))
    response = json_response(body, status)
    if body.get("version") is not None:
        response.headers["ETag"] = f'"{body["version"]}"'
    if status == 201 and body.get("id"):
        response.headers["Location"] = f"{API_PREFIX}/quote-requests/{body['id']}"
    return response


# --- quote requests -------------------------------------------------------------------


@route(
    "POST",
    "/quote-requests",
    callers=STAFF_OR_PORTAL,
    summary="Request a quote",
    tag=TAG,
    body=c.CreateQuoteRequest,
    response=c.QuoteRequestSchema,
    status=201,
    errors=(403,),
    idempotency="optional",
)
def create_quote_request(call: Call) -> Any:
    created = call.gw.quotes.create_quote_request(json_safe(call.body))
    return quote_response(call, created, 201)


@route(
    "GET",
    "/quote-requests",
    callers=ANY_CALLER,
    summary="List quote requests",
    tag=TAG,
    query=c.QuoteListQuery,
    response=c.QuoteRequestSchema,
    many=True,
)
def list_quote_requests(call: Call) -> Any:
    page = call.gw.quotes.list_quote_requests(json_safe(call.query))
    items = with_customer_names(call, [dict(x) for x in page["items"]])
    return _page(c.QuoteRequestSchema, items, page.get("next_cursor"))


@route(
    "GET",
    "/quote-requests/summary",
    callers=ANY_CALLER,
    summary="Count quote requests per status (the tabs)",
    tag=TAG,
    query=c.QuoteFilters,
    response=c.SummarySchema,
)
def summarize_quote_requests(call: Call) -> Any:
    return call.gw.quotes.summarize_quote_requests(json_safe(call.query))


@route(
    "GET",
    "/quote-requests/export.csv",
    callers=STAFF_OR_PORTAL,
    summary="Export the filtered quote requests as CSV (every row the caller may see)",
    tag=TAG,
    query=c.QuoteFilters,
    content="text/csv",
)
def export_quote_requests(call: Call) -> Any:
    """Streams every matching row, newest first, within the caller's scope (a portal
    user: its customer's visible requests, narrowed to its units if restricted). Pages
    are fetched as the client reads, so memory stays flat. The first page is fetched
    before the response starts, so a refused query is still a problem+json; a failure
    after that breaks the connection (the file is visibly incomplete, never short)."""
    query = json_safe(call.query)

    def fetch(cursor: str | None) -> Mapping[str, Any]:
        page_query = {**query, "limit": c.EXPORT_PAGE_MAX}
        if cursor:
            page_query["cursor"] = cursor
        page = call.gw.quotes.export_quote_requests(page_query)
        return {**page, "items": with_customer_names(call, [dict(x) for x in page["items"]])}

    rows = (csv_row(item) for item in follow_pages(fetch, fetch(None)))
    response = Response(
        iter_csv(CSV_COLUMNS, rows), status=200, content_type="text/csv; charset=utf-8"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{CSV_FILENAME}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@route(
    "GET",
    "/quote-requests/{id}",
    callers=ANY_CALLER,
    summary="One quote request",
    tag=TAG,
    response=c.QuoteRequestSchema,
)
def get_quote_request(call: Call) -> Any:
    return quote_response(call, call.gw.quotes.get_quote_request(call.path["id"]))


@route(
    "PATCH",
    "/quote-requests/{id}",
    callers=STAFF,
    summary="Edit a quote request (assignee, status, details)",
    tag=TAG,
    body=c.PatchQuoteRequest,
    response=c.QuoteRequestSchema,
    errors=(403,),
)
def update_quote_request(call: Call) -> Any:
    payload = json_safe(call.body)
    version = expected_version(call)
    if version is not None:
        payload["version"] = version
    updated = call.gw.quotes.update_quote_request(call.path["id"], payload)
    return quote_response(call, updated)


def _decision_payload(call: Call) -> dict[str, Any]:
    payload = json_safe(call.body)
    version = expected_version(call)
    if version is not None:
        payload["version"] = version
    return payload


@route(
    "POST",
    "/quote-requests/{id}/approve",
    callers=STAFF_OR_PORTAL,
    summary="Approve a quote (quotes.approve, or a manager on the customer's behalf)",
    tag=TAG,
    body=c.ApproveRequest,
    response=c.QuoteRequestSchema,
    errors=(403,),
    idempotency="optional",
)
def approve_quote_request(call: Call) -> Any:
    decided = call.gw.quotes.approve_quote_request(call.path["id"], _decision_payload(call))
    return quote_response(call, decided)


@route(
    "POST",
    "/quote-requests/{id}/deny",
    callers=STAFF_OR_PORTAL,
    summary="Deny a quote",
    tag=TAG,
    body=c.DenyRequest,
    response=c.QuoteRequestSchema,
    errors=(403,),
    idempotency="optional",
)
def deny_quote_request(call: Call) -> Any:
    decided = call.gw.quotes.deny_quote_request(call.path["id"], _decision_payload(call))
    return quote_response(call, decided)


@route(
    "POST",
    "/quote-requests/{id}/cancel",
    callers=STAFF_OR_PORTAL,
    summary="Cancel a quote request",
    tag=TAG,
    body=c.VersionOnly,
    response=c.QuoteRequestSchema,
    errors=(403,),
    idempotency="optional",
)
def cancel_quote_request(call: Call) -> Any:
    decided = call.gw.quotes.cancel_quote_request(call.path["id"], _decision_payload(call))
    return quote_response(call, decided)


# --- comments -------------------------------------------------------------------------


@route(
    "GET",
    "/quote-requests/{id}/comments",
    callers=ANY_CALLER,
    summary="Comments on a quote request, oldest first",
    tag=TAG,
    query=c.OldestFirstPage,
    response=c.CommentSchema,
    many=True,
)
def list_comments(call: Call) -> Any:
    page = call.gw.quotes.list_comments(call.path["id"], json_safe(call.query))
    return _page(c.CommentSchema, page["items"], page.get("next_cursor"))


@route(
    "POST",
    "/quote-requests/{id}/comments",
    callers=STAFF_OR_PORTAL,
    summary="Comment on a quote request",
    tag=TAG,
    body=c.CommentRequest,
    response=c.CommentSchema,
    status=201,
    errors=(403,),
    idempotency="optional",
)
def add_comment(call: Call) -> Any:
    added = call.gw.quotes.add_comment(call.path["id"], json_safe(call.body))
    return revive(c.CommentSchema, added)


@route(
    "DELETE",
    "/quote-requests/{id}/comments/{cid}",
    callers=STAFF,
    summary="Delete a comment (manager)",
    tag=TAG,
    status=204,
    errors=(403,),
)
def delete_comment(call: Call) -> Any:
    call.gw.quotes.delete_comment(call.path["id"], call.path["cid"])
    return None


# --- attachments ----------------------------------------------------------------------


def upload_form(request: Request) -> tuple[Any, Any]:
    """(files, form) of a multipart upload, size-capped before a byte of the body is
    read. Parsed once per request (werkzeug keeps them): the idempotency fingerprint
    reads the same parts the handler does."""
    refuse_chunked(request)
    length = request.content_length
    if length is not None and length > MAX_UPLOAD_REQUEST_BYTES:
        raise ApiError(
            "payload_too_large", f"Files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
        )
    if request.mimetype != "multipart/form-data":
        raise ApiError("unsupported_media_type", "Send the file as multipart/form-data.")
    request.max_content_length = MAX_UPLOAD_REQUEST_BYTES
    try:
        files = request.files
        form = request.form
    except RequestEntityTooLarge as exc:
        raise ApiError(
            "payload_too_large", f"Files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
        ) from exc
    except ClientDisconnected as exc:
        raise ApiError("malformed_request", "The upload ended early.") from exc
    return files, form


def _read_upload(call: Call) -> tuple[bytes, str | None, str, str]:
    """(bytes, declared type, file name, kind) of a multipart upload."""
    files, form = upload_form(call.request)
    uploads = files.getlist("file")
    errors: dict[str, list[str]] = {}
    if not uploads:
        errors["file"] = ["a file is required (a multipart part named file, with a filename)"]
    elif len(uploads) > 1:
        errors["file"] = ["send one file per request"]
    kinds = form.getlist("kind")
    kind = kinds[0] if kinds else "attachment"
    if len(kinds) > 1 or kind not in ATTACHMENT_KINDS:
        errors["kind"] = [f"must be one of {', '.join(ATTACHMENT_KINDS)}"]
    # As in JSON bodies, a part the upload does not have is refused, not ignored.
    for name in sorted((set(files) | set(form)) - {"file", "kind"}):
        errors[name] = ["Unknown field."]
    if errors:
        raise ApiError("validation_failed", "The upload is not valid.", errors)
    storage = uploads[0]
    try:
        data = storage.stream.read(MAX_UPLOAD_BYTES + 1)
    finally:
        storage.close()
    return data, storage.content_type, storage.filename or "", kind


@route(
    "POST",
    "/quote-requests/{id}/attachments",
    callers=STAFF_OR_PORTAL,
    summary="Attach a file (kind attachment or quote_document)",
    tag=TAG,
    multipart=True,
    response=c.AttachmentSchema,
    status=201,
    errors=(403, 413, 415),
    idempotency="optional",
)
def add_attachment(call: Call) -> Any:
    quote_id = call.path["id"]
    data, declared_type, raw_name, kind = _read_upload(call)
    # Refused callers (scope, role, read-only preview) leave no bytes behind.
    kind = call.gw.quotes.authorize_upload(quote_id, kind)
    filename = sanitize_filename(raw_name)
    content_type = check_upload(data, declared_type, filename)
    sha256 = call.gw.blobs.put(data)
    added = call.gw.quotes.add_attachment(
        quote_id,
        {
            "kind": kind,
            "filename": filename,
            "content_type": content_type,
            "size": len(data),
            "sha256": sha256,
        },
    )
    return revive(c.AttachmentSchema, added)


@route(
    "GET",
    "/quote-requests/{id}/attachments",
    callers=ANY_CALLER,
    summary="Files attached to a quote request, oldest first",
    tag=TAG,
    query=c.OldestFirstPage,
    response=c.AttachmentSchema,
    many=True,
)
def list_attachments(call: Call) -> Any:
    page = call.gw.quotes.list_attachments(call.path["id"], json_safe(call.query))
    return _page(c.AttachmentSchema, page["items"], page.get("next_cursor"))


@route(
    "GET",
    "/quote-requests/{id}/attachments/{aid}",
    callers=ANY_CALLER,
    summary="Download an attached file",
    tag=TAG,
    content=DOWNLOAD_TYPES,
)
def download_attachment(call: Call) -> Any:
    meta = call.gw.quotes.get_attachment(call.path["id"], call.path["aid"])
    fh = call.gw.blobs.open(meta["sha256"])
    try:
        size = os.fstat(fh.fileno()).st_size
        body = wrap_file(call.request.environ, fh, DOWNLOAD_CHUNK)
    except BaseException:
        fh.close()
        raise
    response = Response(body, status=200, direct_passthrough=True)
    response.headers["Content-Type"] = meta.get("content_type") or "application/octet-stream"
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = content_disposition(meta.get("filename") or "")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response
