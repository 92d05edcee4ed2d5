"""The HTTP edge, hosted by nameko: every ``/api/v1`` request enters through
:meth:`GatewayService.api`, is authenticated here, and is routed to a handler that
either works on the gateway's own directory or calls a service over RPC.

The HTTP entrypoints are ``inline_http`` (kit.http): each request runs in the web
server's green thread for its connection with this class's dependencies injected, not
in a nameko worker; event consumers, RPC clients, the outbox relay and health stay
nameko's. Session liveness and feature switches are cached per process and invalidated
across replicas with the change (services.gateway.edgecache)."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Request, Response

from kit.blobs import Blobs
from kit.context import new_request_id
from kit.health import HealthEndpoints
from kit.http import inline_http
from kit.observability import Metrics
from kit.providers import Database, RequestContext, RpcClient
from kit.schemas import shared
from services.gateway import (  # noqa: F401
    api_accounts,
    api_auth,
    api_directory,
    api_events,
    api_links,
    api_notify,
    api_quotes,
    api_staff,
    domain,
    events,
    idempotency,
)
from services.gateway.auth import Authenticator
from services.gateway.features import require_feature
from services.gateway.models import metadata
from services.gateway.openapi import openapi_document
from services.gateway.rebuild import ViewCatchUp
from services.gateway.web import (
    API_PREFIX,
    ApiError,
    Call,
    Route,
    build_map,
    error_response,
    json_response,
    query_dict,
    read_json,
    revive,
)
from services.gateway.web import (
    parse_input as load_schema,
)

log = logging.getLogger(__name__)
URLS, ROUTES_BY_ENDPOINT = build_map()
METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"


class GatewayService(HealthEndpoints):
    name = "gateway"

    db = Database("gateway", metadata)
    ctx = RequestContext()
    quotes = RpcClient("quotes")
    notify = RpcClient("notify")
    auth = Authenticator()
    blobs = Blobs()
    metrics = Metrics()
    on_event = events.handlers.consumer()
    views_catch_up = ViewCatchUp()  # views never built are rebuilt from their owners

    @inline_http("GET", OPENAPI_PATH)
    def openapi(self, request: Request) -> Response:
        return json_response(openapi_document())

    @inline_http(METHODS, "/api/v1/<path:path>")
    def api(self, request: Request, path: str) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request)
        self.ctx.bind(request_id=request_id)
        try:
            response = self._dispatch(request)
        except (ApiError, HTTPException, Exception) as exc:  # noqa: BLE001 - one error table
            response = error_response(exc)
        response.headers["X-Request-Id"] = request_id
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            request.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    @inline_http(METHODS, "/")
    @inline_http(METHODS, "/<path:path>")
    def outside_api(self, request: Request, path: str = "") -> Response:
        """Anything outside ``/api/v1`` and the health endpoints: a problem+json 404
        like any other, never the web server's HTML page."""
        return self.api(request, path)

    def _dispatch(self, request: Request) -> Response:
        if request.path == OPENAPI_PATH:  # GET is served by `openapi` above
            raise MethodNotAllowed(valid_methods=["GET", "HEAD"])
        adapter = URLS.bind("", url_scheme="http")
        endpoint, path_args = adapter.match(request.path, method=request.method)
        route = ROUTES_BY_ENDPOINT[endpoint]
        actor, claims = None, {}
        if route.callers and not (route.token_optional and "Authorization" not in request.headers):
            actor, claims = self.auth.authenticate(request, self.db)
            if actor.kind not in route.callers:
                # Existence of staff-only resources is no secret; the role is.
                raise ApiError("forbidden", "This operation is not available to you.")
            self.ctx.bind(actor=actor)
            if route.feature:
                # The one place feature switches are enforced (staff are never gated).
                require_feature(self.db.core, actor, route.feature)
        query = load_schema(route.query, query_dict(request), "query") if route.query else {}
        body: dict[str, Any] = {}
        if route.body is not None:
            body = load_schema(route.body, read_json(request), "request body")
        elif request.method in ("POST", "PUT", "PATCH") and not route.multipart:
            read_json(request)  # still refuse malformed JSON and wrong content types
        call = Call(
            request=request,
            gw=self,
            # werkzeug types match() as Mapping[str, Any]; the only converter (IdConverter) yields str
            path=cast(dict[str, str], path_args),
            query=query,
            body=body,
            actor=actor,
            claims=claims,
        )
        if route.idempotency:
            return idempotency.run(self, route, call, lambda: _respond(route, route.handler(call)))
        return _respond(route, route.handler(call))


def _respond(route: Route, result: Any) -> Response:
    """The HTTP answer for what a handler returned, dumped with the route's schema."""
    if isinstance(result, Response):
        return result
    if route.status == 204:
        return Response(status=204)
    if route.response is not None:
        schema = shared(route.response)
        if route.many:
            result = {
                "items": schema.dump(
                    [revive(route.response, x) for x in result["items"]], many=True
                ),
                "next_cursor": result.get("next_cursor"),
            }
        else:
            result = schema.dump(revive(route.response, result))
    return json_response(result, route.status)


def _request_id(request: Request) -> str:
    supplied = request.headers.get("X-Request-Id", "")
    # Echo a sane client id; replace anything that could pollute logs.
    if 8 <= len(supplied) <= 128 and all(c.isalnum() or c in "-_." for c in supplied):
        return supplied
    return new_request_id()
