"""The delivery log (every email and SMS sent, with status and retries) and the in-app
feed (``/notifications``), from notify."""

from __future__ import annotations

from typing import Any

from contracts.notify import (
    DeliveryListQuery,
    DeliverySchema,
    NotificationListQuery,
    NotificationPage,
    NotificationSchema,
)
from services.gateway.web import STAFF, Call, revive, route

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
    page = call.gw.notify.list_notifications(call.query)
    return {**page, "items": [revive(NotificationSchema, item) for item in page["items"]]}


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
    call.gw.notify.mark_read(call.path["id"])


@route(
    "POST",
    "/notifications/read-all",
    callers=FEED_CALLERS,
    summary="Mark every item of the caller's feed read",
    tag=TAG,
    status=204,
)
def mark_all_read(call: Call) -> Any:
    call.gw.notify.mark_all_read()
