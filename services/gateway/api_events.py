"""Live updates: ``GET /events/stream`` (Server-Sent Events of everything the caller may
see, as it happens) and ``POST /events/tickets`` (a single-use ticket for browsers,
whose ``EventSource`` cannot send an Authorization header). The stream itself, its
scope rule and its fan-out are in :mod:`services.gateway.stream`."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from werkzeug.wrappers import Response

from services.gateway import stream
from services.gateway.web import ANY_CALLER, ApiError, Call, route

TAG = "live updates"
TICKET_PATTERN = (
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[A-Za-z0-9_-]{43}$"
)
MAX_EVENT_ID = 2**63 - 1


class StreamQuery(Schema):
    ticket = fields.String(
        validate=validate.Regexp(TICKET_PATTERN, error="not a stream ticket"),
        metadata={
            "description": "A ticket from POST /events/tickets, instead of a bearer token "
            "(single use, short-lived)"
        },
    )
    last_event_id = fields.Integer(
        validate=validate.Range(min=0, max=MAX_EVENT_ID),
        metadata={
            "description": "Resume after this stream id (the last `id:` received); the "
            "Last-Event-ID header, which EventSource sends when it reconnects, takes "
            "precedence. Within the retention window nothing is lost; older, the stream "
            "starts with a `stream.reset` event and goes on live"
        },
    )


class StreamTicketSchema(Schema):
    ticket = fields.String(required=True)
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds"})


def _last_event_id(call: Call) -> int | None:
    header = call.request.headers.get("Last-Event-ID")
    if header is None or header.strip() == "":
        return call.query.get("last_event_id")
    value = header.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_EVENT_ID:
        raise ApiError(
            "validation_failed",
            "The Last-Event-ID header is not valid.",
            {"Last-Event-ID": ["Not a stream id."]},
        )
    return int(value)


@route(
    "GET",
    "/events/stream",
    callers=ANY_CALLER,
    token_optional=True,
    summary="Server-Sent Events of every change the caller may see (staff: the tenant's; "
    "portal users: their customer's visible records, within their units; token holders: "
    "their work order's), with `: keep-alive` heartbeats; a bearer token or a `ticket`",
    tag=TAG,
    query=StreamQuery,
    content="text/event-stream",
)
def open_stream(call: Call) -> Any:
    last_event_id = _last_event_id(call)
    core, auth = call.gw.db.core, call.gw.auth.core
    if call.actor is not None:
        actor, session_id = call.actor, str(call.claims["sid"])
    elif call.query.get("ticket"):
        actor, claims = stream.redeem_ticket(core, call.query["ticket"])
        session_id = str(claims["sid"])
        # A ticket stands for a session: it must still stand now.
        if not stream.session_alive(auth, core, actor, session_id):
            raise ApiError("unauthenticated", "This session has ended.")
    else:
        raise ApiError(
            "unauthenticated", "Send a bearer token in the Authorization header, or a ticket."
        )
    # Each chunk goes out as it is yielded (eventlet's server buffers 4 KiB otherwise).
    call.request.environ["eventlet.minimum_write_chunk_size"] = 0
    opened = stream.Opened(actor=actor, session_id=session_id, last_event_id=last_event_id)
    response = Response(
        stream.events(core, auth, opened),
        status=200,
        mimetype="text/event-stream",
        direct_passthrough=True,
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # proxies (ingress-nginx): do not buffer
    return response


@route(
    "POST",
    "/events/tickets",
    callers=ANY_CALLER,
    summary="A single-use ticket (60 s) to open the event stream without headers: "
    "GET /events/stream?ticket=...",
    tag=TAG,
    response=StreamTicketSchema,
    status=201,
)
def create_ticket(call: Call) -> Any:
    return stream.issue_ticket(call.gw.db.core, call.require_actor(), call.claims)
