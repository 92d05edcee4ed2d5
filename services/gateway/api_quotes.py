"""Quote requests: the HTTP face of the quotes service.

Handlers validate with the contract schemas (the route's body/query), call the quotes
service over RPC with JSON-safe payloads, and add what only the gateway knows: customer
names from its directory (one query per response), the CSV export (streamed page by
page), and the file bytes of attachments (stored here by content hash, described in
the quotes service).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from marshmallow import Schema
from sqlalchemy import select
from werkzeug.wrappers import Response

from contracts import quotes as c
from kit.csvout import iter_csv, to_csv
from kit.schemas import shared
from services.gateway.discussion import STAFF_OR_PORTAL, discussion_routes
from services.gateway.models import Customer
from services.gateway.web import (
    ANY_CALLER,
    API_PREFIX,
    STAFF,
    Call,
    expected_version,
    json_response,
    json_safe,
    revive,
    route,
)

TAG = "quote requests"

CSV_COLUMNS = (
    "number", "status", "created_by_customer", "customer", "description", "assigned_to",
    "po_number", "created_at", "updated_at",
)  # fmt: skip
CSV_FILENAME = "quote-requests.csv"


# --- pure helpers ---------------------------------------------------------------------


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


# --- comments and files: the kit's discussion, declared ----------------------------

discussion = discussion_routes(
    "/quote-requests/{id}",
    rpc="quotes",
    label="quote request",
    tag=TAG,
    comment_schema=c.CommentSchema,
    attachment_schema=c.AttachmentSchema,
    kinds=c.ATTACHMENT_KINDS,
)
