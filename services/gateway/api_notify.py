"""The delivery log (every email and SMS sent, with status and retries), from notify."""

from __future__ import annotations

from typing import Any

from contracts.notify import DeliveryListQuery, DeliverySchema
from services.gateway.web import STAFF, Call, route


@route(
    "GET",
    "/deliveries",
    callers=STAFF,
    summary="Every email and SMS sent, with status",
    tag="notifications",
    query=DeliveryListQuery,
    response=DeliverySchema,
    many=True,
)
def list_deliveries(call: Call) -> Any:
    return call.gw.notify.list_deliveries(call.query)
