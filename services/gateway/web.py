"""The gateway's HTTP plumbing: a route table, request parsing, problem+json errors
and the OpenAPI document, all generated from the same marshmallow schemas.

Handlers are plain functions ``handler(call: Call) -> Any`` registered with
:func:`route`. They parse nothing themselves: the route's schemas already validated
the path, query and body, and whatever they return is dumped with the response schema.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from werkzeug.exceptions import BadRequest, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from kit.context import Actor
from kit.db import unavailable
from kit.errors import DomainError, problem, status_for
from kit.pagination import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from kit.pagination import decode_cursor as decode_cursor  # re-exported for route modules
from kit.pagination import encode_cursor as encode_cursor
from kit.pagination import read_page as read_page
from kit.providers import broker_unavailable
from kit.schemas import shared, text_errors, validation_errors

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
ANY_CALLER = ("staff", "portal", "token")
STAFF = ("staff",)
PORTAL = ("portal",)
PUBLIC: tuple[str, ...] = ()
MAX_JSON_BYTES = 1024 * 1024
# The feature switch (tenant ``features``, customer ``portal_features``) each tag's routes
# belong to: portal users and token holders get ``403 feature_disabled`` when it is off.
# A route may also name its feature itself (``feature=``).
FEATURE_BY_TAG = {
    "quote requests": "quotes",
    "bookings": "bookings",
    "payments": "payments",
    "history": "history",
}


@dataclass
class Route:
    method: str
    path: str  # OpenAPI style: /quote-requests/{id}
    handler: Callable[[Call], Any]
    callers: tuple[str, ...]
    summary: str
    tag: str
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    response: type[Schema] | None = None
    many: bool = False  # response is a list page {items, next_cursor}
    status: int = 200
    content: str | tuple[str, ...] = "application/json"  # response media type(s)
    multipart: bool = False
    errors: tuple[int, ...] = ()
    # The callers may also come without a bearer token (no Authorization header): the
    # handler then gets ``actor=None`` and must find out who it is talking to itself
    # (POST /auth/logout by a refresh token). A token that is sent is checked as usual.
    token_optional: bool = False
    feature: str | None = None
    # A write with an outside effect takes an ``Idempotency-Key`` header
    # (services.gateway.idempotency): "optional", or "required" (a missing key is 422).
    idempotency: str | None = None

    def __post_init__(self) -> None:
        if self.feature is None:
            self.feature = FEATURE_BY_TAG.get(self.tag)
        assert self.idempotency in (None, "optional", "required"), self.idempotency

    @property
    def werkzeug_path(self) -> str:
        # Every path parameter is an id (a UUID, as the OpenAPI document says), so
        # /quote-requests/summary can never be taken for /quote-requests/{id}.
        return re.sub(r"{(\w+)}", r"<id:\1>", self.path)

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Call:
    """One request as a handler sees it."""

    request: Request
    gw: Any  # the GatewayService worker instance
    path: dict[str, str]
    query: dict[str, Any]
    body: dict[str, Any]
    actor: Actor | None
    claims: dict[str, Any] = field(default_factory=dict)

    def require_actor(self) -> Actor:
        assert self.actor is not None, "route declared callers but none was resolved"
        return self.actor


ROUTES: list[Route] = []


def route(
    method: str, path: str, *, callers: tuple[str, ...], summary: str, tag: str, **options: Any
) -> Callable[[Callable[[Call], Any]], Callable[[Call], Any]]:
    def register(fn: Callable[[Call], Any]) -> Callable[[Call], Any]:
        ROUTES.append(Route(method, path, fn, callers, summary, tag, **options))
        return fn

    return register


class IdConverter(BaseConverter):
    """A path segment that is a UUID, passed on as the text it was sent as."""

    regex = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"


def build_map() -> tuple[Map, dict[str, Route]]:
    rules = []
    by_endpoint = {}
    for r in ROUTES:
        rules.append(Rule(API_PREFIX + r.werkzeug_path, methods=[r.method], endpoint=r.endpoint))
        by_endpoint[r.endpoint] = r
    urls = Map(rules, strict_slashes=False, merge_slashes=False, converters={"id": IdConverter})
    return urls, by_endpoint


class ApiError(Exception):
    """An HTTP-level refusal raised before any domain code runs."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(
    code: str, detail: str = "", errors: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body = problem(code, detail, errors)
    response = Response(
        json.dumps(body), status=status_for(code), mimetype="application/problem+json"
    )
    for k, v in (headers or {}).items():
        response.headers[k] = v
    if code in ("rate_limited", "service_unavailable") and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = "5"
    if status_for(code) == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="portico"'
    return response


def error_response(exc: BaseException) -> Response:
    if isinstance(exc, ApiError):
        return problem_response(exc.code, exc.detail, exc.errors, exc.headers)
    if isinstance(exc, DomainError):
        return problem_response(exc.code, exc.detail, exc.errors)
    if unavailable(exc):
        return problem_response(
            "service_unavailable", "The database is unreachable; retry shortly."
        )
    if broker_unavailable(exc):
        return problem_response(
            "service_unavailable", "The message broker is unreachable; retry shortly."
        )
    if isinstance(exc, NotFound):
        return problem_response("not_found", "No such resource.")
    if isinstance(exc, MethodNotAllowed):
        allowed = {"Allow": ", ".join(sorted(exc.valid_methods))} if exc.valid_methods else {}
        return problem_response(
            "method_not_allowed", "Method not allowed on this resource.", headers=allowed
        )
    if isinstance(exc, RequestEntityTooLarge):
        return problem_response("payload_too_large", "The request body is too large.")
    if isinstance(exc, BadRequest):  # werkzeug's parsing errors, e.g. ClientDisconnected
        return problem_response("malformed_request", "The request could not be read.")
    log.exception("unhandled error in gateway", exc_info=exc)
    return problem_response("internal_error", "Something went wrong on our side.")


def json_type_errors(schema: Schema, data: Any) -> dict[str, list[str]]:
    """JSON values of the wrong JSON type: a boolean field takes only true/false and a
    number field only numbers, as the OpenAPI document says (marshmallow alone would
    read "yes", 1 or "5" too). Query strings are text and are not checked here."""
    errors: dict[str, list[str]] = {}
    stack: list[tuple[str, Any, Any]] = [("", schema, data)]
    while stack:
        where, spec, value = stack.pop()
        if value is None:
            continue
        if isinstance(spec, Schema) and isinstance(value, dict):
            for name, declared in spec.fields.items():
                key = declared.data_key or name
                if key in value:
                    stack.append((f"{where}.{key}" if where else key, declared, value[key]))
        elif isinstance(spec, fields.Nested):
            items = value if spec.many and isinstance(value, list) else [value]
            stack.extend((where, spec.schema, item) for item in items)
        elif isinstance(spec, fields.List) and isinstance(value, list):
            stack.extend((f"{where}.{i}", spec.inner, item) for i, item in enumerate(value))
        elif isinstance(spec, fields.Dict) and isinstance(value, dict) and spec.value_field:
            stack.extend((f"{where}.{k}", spec.value_field, v) for k, v in value.items())
        elif isinstance(spec, fields.Boolean) and not isinstance(value, bool):
            errors[where] = ["Not a valid boolean."]
        elif isinstance(spec, fields.Number) and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            errors[where] = ["Not a valid number."]
    return errors


def parse_input(schema_cls: type[Schema], data: Any, where: str) -> dict[str, Any]:
    """Load a body or query with its route's schema. Every string also passes
    :mod:`kit.text` (``kit.schemas.text_errors``): NUL, lone surrogates, controls and
    bidi overrides are a 422 naming the field, never a database or encoding error."""
    schema = shared(schema_cls)
    if where == "request body":
        wrong = json_type_errors(schema, data)
        if wrong:
            raise ApiError("validation_failed", f"The {where} is not valid.", wrong)
    try:
        loaded = schema.load(data)
    except ValidationError as err:
        raise ApiError(
            "validation_failed", f"The {where} is not valid.", validation_errors(err)
        ) from err
    errors = text_errors(schema, loaded)
    if errors:
        raise ApiError("validation_failed", f"The {where} is not valid.", errors)
    return loaded


def refuse_chunked(request: Request) -> None:
    """A body without a Content-Length (chunked) is refused: the WSGI server does not
    mark such input as terminated, so werkzeug would read it as empty and the request
    would be handled as if no body had been sent."""
    if (
        request.content_length is None
        and "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    ):
        raise ApiError("malformed_request", "Send the body with a Content-Length header.")


def read_json(request: Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise ApiError("payload_too_large", "JSON bodies are limited to 1 MiB.")
    refuse_chunked(request)
    request.max_content_length = MAX_JSON_BYTES  # also enforced while reading
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge as exc:
        raise ApiError("payload_too_large", "JSON bodies are limited to 1 MiB.") from exc
    if not raw:
        return {}
    if request.mimetype != "application/json":
        raise ApiError("unsupported_media_type", "Send the body as application/json.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser goes, e.g. 100 000 "[".
        raise ApiError("malformed_request", "The body is not valid JSON.") from exc


def query_dict(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        out[key] = values if len(values) > 1 else values[0]
    return out


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str), status=status, mimetype="application/json")


class PageQuery(Schema):
    """``?limit=&cursor=`` of every list; a list's filters subclass it."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )
    cursor = fields.String(
        validate=validate.Regexp(CURSOR_PATTERN, error="not a cursor"),
        metadata={"description": "The next_cursor of the previous page"},
    )


_IF_MATCH = re.compile(r'(?:W/)?"?([0-9]{1,9})"?')


def parse_if_match(header: str | None) -> int | None:
    """The version an ``If-Match`` header names: ``3``, ``"3"`` or ``W/"3"``.

    Absent, blank or ``*`` (any version) is None. Anything else (an unbalanced quote,
    a list of several entity tags, a version below 1) is a 422 naming the header.
    """
    if header is None:
        return None
    value = header.strip()
    if not value or value == "*":
        return None
    match = _IF_MATCH.fullmatch(value)
    if match is None or value.count('"') not in (0, 2) or int(match.group(1)) < 1:
        raise ApiError(
            "validation_failed",
            "If-Match must carry one version number.",
            {"If-Match": ['one version as an entity tag, e.g. "3"']},
        )
    return int(match.group(1))


def expected_version(call: Call) -> int | None:
    """The version a write was based on: the body's ``version`` wins, else ``If-Match``.
    The one reading of the header for every route."""
    if call.body.get("version") is not None:
        return int(call.body["version"])
    return parse_if_match(call.request.headers.get("If-Match"))


def revive(schema_cls: type[Schema], item: Any) -> Any:
    """Make an RPC result (already dumped by its service, timestamps as ISO text)
    dumpable again by ``schema_cls``; ORM objects and other values pass unchanged.
    The response schema is then the single definition of what the client gets."""
    if not isinstance(item, Mapping):
        return item
    out = dict(item)
    for name, declared in shared(schema_cls).fields.items():
        value = out.get(name)
        if isinstance(declared, fields.DateTime) and isinstance(value, str):
            out[name] = datetime.fromisoformat(value)
    return out


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
