"""Quote requests: the HTTP face of the quotes service.

Reads come from the gateway's views (services.gateway.views), kept from the quotes
service's events, with customer names from the gateway's own directory; commands go by
RPC to the quotes service, and their replies are applied to the views before the
answer, so a caller reads its own writes at once. Also here: the CSV export (streamed
page by page); comments and files are the kit's discussion (services.gateway.discussion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sqlalchemy import select
from werkzeug.wrappers import Response

from contracts import quotes as c
from kit import pagination
from kit.csvout import iter_csv, to_csv
from kit.schemas import shared
from services.gateway import views
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


# --- from the views -------------------------------------------------------------------


def _customer_name(uow: Any, customer_id: str) -> str | None:
    return uow.session.scalar(select(Customer.name).where(Customer.id == customer_id))


def quote_response(item: Mapping[str, Any], status: int = 200) -> Response:
    """One quote request (with its customer's name) and an ``ETag`` of its version."""
    body = shared(c.QuoteRequestSchema).dump(revive(c.QuoteRequestSchema, dict(item)))
    response = json_response(body, status)
    if body.get("version") is not None:
        response.headers["ETag"] = f'"{body["version"]}"'
    if status == 201 and body.get("id"):
        response.headers["Location"] = f"{API_PREFIX}/quote-requests/{body['id']}"
    return response


def applied(call: Call, reply: Mapping[str, Any], status: int = 200) -> Response:
    """A command's reply into the view before the answer (the caller reads its own
    write at once; the event that follows is then a no-op), answered with it."""
    with call.gw.db.unit_of_work() as uow:
        views.apply_quote_reply(uow, reply)
        name = _customer_name(uow, str(reply["customer_id"]))
    return quote_response({**reply, "customer_name": name}, status)


def named_page(call: Call, query: Mapping[str, Any], max_limit: int) -> dict[str, Any]:
    """A page of the caller's requests under ``query``, each with its customer's name."""
    with call.gw.db.unit_of_work() as uow:
        rows, next_cursor = views.quote_page(uow, call.require_actor(), query, max_limit)
        names = (
            dict(
                uow.session.execute(
                    select(Customer.id, Customer.name).where(
                        Customer.id.in_(sorted({r.customer_id for r in rows}))
                    )
                ).all()
            )
            if rows
            else {}
        )
        items = [{**views.quote_dict(r), "customer_name": names.get(r.customer_id)} for r in rows]
    return {"items": items, "next_cursor": next_cursor}


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
    return applied(call, call.gw.quotes.create_quote_request(json_safe(call.body)), 201)


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
    return named_page(call, call.query, pagination.MAX_LIMIT)


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
    with call.gw.db.unit_of_work() as uow:
        found = views.quote_counts(uow, call.require_actor(), call.query)
    counts = {status: found.get(status, 0) for status in c.STATUSES}
    return {"counts": counts, "total": sum(counts.values())}


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
    are read as the client reads, each in its own short transaction, so memory stays
    flat. The first page is read before the response starts, so a refused query is
    still a problem+json; a failure after that breaks the connection (the file is
    visibly incomplete, never short)."""
    dump = shared(c.QuoteRequestSchema).dump

    def fetch(cursor: str | None) -> Mapping[str, Any]:
        query = {**call.query, "limit": c.EXPORT_PAGE_MAX, "cursor": cursor}
        page = named_page(call, query, c.EXPORT_PAGE_MAX)
        return {**page, "items": [dump(item) for item in page["items"]]}

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
    with call.gw.db.unit_of_work() as uow:
        item = views.quote_detail(uow, call.require_actor(), call.path["id"])
    return quote_response(item)


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
    return applied(call, call.gw.quotes.update_quote_request(call.path["id"], _versioned(call)))


def _versioned(call: Call) -> dict[str, Any]:
    """The body for RPC, with the ``If-Match`` version when the client sent one."""
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
    return applied(call, call.gw.quotes.approve_quote_request(call.path["id"], _versioned(call)))


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
    return applied(call, call.gw.quotes.deny_quote_request(call.path["id"], _versioned(call)))


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
    return applied(call, call.gw.quotes.cancel_quote_request(call.path["id"], _versioned(call)))


# --- comments and files: the kit's discussion, declared ----------------------------

discussion = discussion_routes(
    "/quote-requests/{id}",
    rpc="quotes",
    record=views.QUOTE_REQUEST,
    record_key="quote_request_id",
    load_record=views.visible_quote,
    label="quote request",
    tag=TAG,
    comment_schema=c.CommentSchema,
    attachment_schema=c.AttachmentSchema,
    kinds=c.ATTACHMENT_KINDS,
)
