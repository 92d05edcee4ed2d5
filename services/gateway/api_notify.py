"""The delivery log (every email and SMS sent, with status and retries), from notify, and
the in-app feed (``/notifications``): read from the gateway's feed view
(:mod:`services.gateway.feed`, kept from notify's events), marked read by RPC to notify,
whose reply is applied to the view before the answer (read-your-writes)."""

from __future__ import annotations

from typing import Any

from contracts.notify import (
    DeliveryListQuery,
    DeliverySchema,
    NotificationListQuery,
    NotificationPage,
)
from services.gateway import feed
from services.gateway.web import STAFF, Call, route

FEED_CALLERS = ("staff", "portal")
TAG = "notifications"


@route(
    "GET",
    "/deliveries",
    callers=STAFF,
    summary="Every email and SMS sent, with status",
    tag=TAG,
    query=DeliveryListQuery,
    response=DeliverySchema,
    many=True,
)
def list_deliveries(call: Call) -> Any:
    return call.gw.notify.list_deliveries(call.query)


@route(
    "GET",
    "/notifications",
    callers=FEED_CALLERS,
    summary="The caller's in-app feed: unread first, then newest first, with the unread count",
    tag=TAG,
    query=NotificationListQuery,
    response=NotificationPage,
)
def list_notifications(call: Call) -> Any:
    with call.gw.db.unit_of_work() as uow:
        return feed.feed_page(uow, call.require_actor(), call.query)


@route(
    "POST",
    "/notifications/{id}/read",
    callers=FEED_CALLERS,
    summary="Mark one item of the caller's feed read",
    tag=TAG,
    status=204,
    errors=(404,),
)
def mark_read(call: Call) -> Any:
    marks = call.gw.notify.mark_read(call.path["id"])  # notify decides: not yours is 404
    with call.gw.db.unit_of_work() as uow:
        feed.apply_marks(uow, marks)


@route(
    "POST",
    "/notifications/read-all",
    callers=FEED_CALLERS,
    summary="Mark every item of the caller's feed read",
    tag=TAG,
    status=204,
)
def mark_all_read(call: Call) -> Any:
    marks = call.gw.notify.mark_all_read()
    with call.gw.db.unit_of_work() as uow:
        feed.apply_marks(uow, marks)
