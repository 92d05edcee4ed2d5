"""OpenAPI 3.1 document generated from the route table and its marshmallow schemas:
the same schemas that validate requests describe them, so the two cannot drift.

The document states exactly what the server accepts, so that a client generated from
it works (and a fuzzer finds no request it declares valid that the server refuses, nor
the reverse). Besides what apispec derives from fields and validators, this module adds
the rules the gateway's loader applies to every input:

- every string passes :mod:`kit.text` (``kit.schemas.text_errors``): a ``pattern``
  refuses the characters it refuses, single-line unless the field is ``multiline``;
  lone surrogates cannot be written in a JSON Schema pattern, so the 422 says so;
- a field that trims surrounding whitespace (``Text``, ``strips = True``) and must not
  be empty must contain a character that is not whitespace;
- a dict whose keys are one of a fixed set (feature switches) lists them as properties;
- a schema's cross-field rules (``OPENAPI_RULES``, e.g. "at least one of") are merged
  into its component;
- every response carries ``X-Request-Id``; 401 ``WWW-Authenticate``, 429 and 503
  ``Retry-After``; errors are ``application/problem+json``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from marshmallow import Schema, fields, validate

from kit.errors import STATUS_BY_CODE
from kit.text import BIDI_CONTROLS
from services.gateway.web import API_PREFIX, ROUTES, Route

# What kit.text refuses, as a JSON Schema (ECMA 262) character class body. Lone
# surrogates are left out: a pattern cannot name them (they are not Unicode scalar
# values), they are refused as a documented 422 instead.
_ALWAYS_BAD = (
    "\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f"
    + BIDI_CONTROLS.encode("unicode_escape").decode()
    + "\\u2028\\u2029"
)
# What single-line text refuses, as a character class body.
TEXT_REFUSED = f"{_ALWAYS_BAD}\\t\\n"
SINGLE_LINE_CHAR = f"[^{TEXT_REFUSED}]"
MULTI_LINE_CHAR = f"[^{_ALWAYS_BAD}]"
SINGLE_LINE = f"^{SINGLE_LINE_CHAR}*$"
# CRLF is accepted (stored as LF); a lone CR is not.
MULTI_LINE = f"^(?:{MULTI_LINE_CHAR}|\\r\\n)*$"


def _whitespace_class() -> str:
    """What str.strip() removes that kit.text allows (spaces of every script)."""
    bad = re.compile(f"[{_ALWAYS_BAD}\\t\\n]".encode().decode("unicode_escape"))
    chars = [c for c in map(chr, range(0x3001)) if c.isspace() and not bad.match(c)]
    return "".join(f"\\u{ord(c):04x}" for c in chars)


WHITESPACE = _whitespace_class()
# A character that is neither refused nor whitespace (str.strip() keeps it).
VISIBLE_CHAR = f"[^{_ALWAYS_BAD}\\t\\n{WHITESPACE}]"
# A single-line text that is not only whitespace.
NOT_BLANK = f"^{SINGLE_LINE_CHAR}*{VISIBLE_CHAR}{SINGLE_LINE_CHAR}*$"
# A multi-line text that is not only whitespace (line breaks and tabs are whitespace).
MULTI_LINE_NOT_BLANK = f"^(?:{MULTI_LINE_CHAR}|\\r\\n)*{VISIBLE_CHAR}(?:{MULTI_LINE_CHAR}|\\r\\n)*$"
# Whitespace a trimmed field may have around its value.
PADDING = f"[{WHITESPACE}]*"


def padded(pattern: str) -> str:
    """The pattern ``^X$`` of a trimmed value, as the text sent may read: X with any
    whitespace around it (X must neither start nor end with whitespace)."""
    assert pattern.startswith("^") and pattern.endswith("$"), pattern
    return f"^{PADDING}(?:{pattern[1:-1]}){PADDING}$"


UNPROCESSABLE = (
    "Validation failed: `errors` names each field and what is wrong with it. Besides the "
    "schema, every string is refused that contains an unpaired UTF-16 surrogate (such as "
    '`"\\ud800"`), NUL or another control character, or a bidirectional override; single-line '
    "fields also refuse line breaks and tabs."
)


class ProblemSchema(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    code = fields.String(
        required=True,
        metadata={
            "description": "Stable error code; each error response lists the codes its status"
            " carries. A 422 may also carry a rule of the domain, e.g. quote_document_required."
        },
    )
    detail = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


def _resolver(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[:-6] if name.endswith("Schema") and len(name) > 6 else name


COMMON_ERRORS = {400: "Malformed request", 422: UNPROCESSABLE, 503: "Service unavailable"}
AUTH_ERRORS = {401: "Not authenticated", 403: "Not allowed", 429: "Rate limited"}
REQUEST_ID = {
    "description": "The request's id: the client's X-Request-Id if it was sane, else a new one",
    "schema": {"type": "string", "minLength": 1},
}
RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
RESPONSE_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}


# --- what marshmallow fields say beyond apispec's conversion ----------------------------
# Schema classes that read input (bodies, queries): only their strings get the text rules
# (a response may well hold a line break the field does not declare multi-line).
_INPUT: set[type[Schema]] = set()


def _is_input(field: fields.Field) -> bool:
    parent: Any = field
    while parent is not None and not isinstance(parent, Schema):
        parent = parent.parent
    return parent is not None and type(parent) in _INPUT


def _strips(field: fields.Field) -> bool:
    """The value is trimmed of surrounding whitespace before it is checked: a gateway
    ``Text`` field, or one a service trims (``metadata={"strips": True}``)."""
    return bool(getattr(field, "strips", False) or field.metadata.get("strips"))


def _min_length(field: fields.Field) -> int:
    return max((v.min or 0 for v in field.validators if isinstance(v, validate.Length)), default=0)


def text_rules(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """The kit.text pattern of a string field (apispec attribute function)."""
    if not isinstance(field, fields.String) or "format" in ret or "enum" in ret:
        return {}
    if not _is_input(field):
        return {}
    if "pattern" in ret:
        # The field's own pattern is stricter (checked by the tests); a trimmed field's
        # is checked after trimming, so the text sent may have whitespace around it.
        return {"pattern": padded(ret["pattern"])} if _strips(field) else {}
    required = _strips(field) and _min_length(field) > 0
    if field.metadata.get("multiline"):
        return {"pattern": MULTI_LINE_NOT_BLANK if required else MULTI_LINE}
    return {"pattern": NOT_BLANK if required else SINGLE_LINE}


def dict_rules(self: Any, field: fields.Field, ret: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Dict keys: a fixed set becomes properties; free keys are single-line text."""
    if not isinstance(field, fields.Dict) or not _is_input(field):
        return {}
    keys = field.key_field
    choices = [v for v in (keys.validators if keys else []) if isinstance(v, validate.OneOf)]
    values = ret.get("additionalProperties", {})
    if choices:
        return {
            "properties": {str(name): values for name in choices[0].choices},
            "additionalProperties": False,
        }
    return {"propertyNames": {"pattern": SINGLE_LINE}}


# --- operations ------------------------------------------------------------------------
# services.gateway.idempotency: the same key and request answer as the first time.
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "description": "A key of the client's choosing (a UUID, say): sent again with the same "
    "request, the first answer is returned and nothing runs twice; with another request, 409 "
    "idempotency_key_reused. Answers below 500 (except 429) are kept 24 hours.",
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}
IDEMPOTENT_REPLAYED = {
    "description": "true when this is the stored answer to an earlier request with the "
    "same Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}


def _codes(status: int) -> str:
    """The stable codes an error status carries, from kit.errors' one table."""
    codes = sorted(code for code, s in STATUS_BY_CODE.items() if s == status)
    return f" (code: {', '.join(codes)})" if codes else ""


def _problem(description: str, status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description + _codes(status),
        "headers": {"X-Request-Id": REQUEST_ID, **RESPONSE_HEADERS.get(status, {})},
        "content": {"application/problem+json": {"schema": ProblemSchema}},
    }
    return out


def operation_id(route: Route) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method.lower()}{route.path}").strip("_")


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {
                "in": "path",
                "name": name,
                "required": True,
                "schema": {"type": "string", "format": "uuid"},
            }
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        + [
            {
                "in": "header",
                "name": "X-Request-Id",
                "required": False,
                "description": "Echoed back when it is 8-128 letters, digits, '-', '_' or '.'",
                "schema": {"type": "string"},
            }
        ],
        "responses": {},
    }
    if route.query is not None:
        op["parameters"].append({"in": "query", "schema": route.query})
    if route.idempotency:
        op["parameters"].append(IDEMPOTENCY_KEY | {"required": route.idempotency == "required"})
    if route.callers:
        # ``{}``: the bearer token is optional (see Route.token_optional).
        op["security"] = [{"bearer": []}, {}] if route.token_optional else [{"bearer": []}]
    else:
        op["security"] = []
    if route.body is not None:
        # No body reads as {} (web.read_json): it is required only if a field is.
        op["requestBody"] = {
            "required": any(f.required for f in route.body().fields.values()),
            "content": {"application/json": {"schema": route.body}},
        }
    if route.multipart:
        op["requestBody"] = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "The file: its bytes must be of an allowed "
                                "type (PDF, PNG, JPEG, GIF, WebP, ZIP, DOCX, XLSX, plain text "
                                "or CSV); anything else is 415",
                            },
                            "kind": {"type": "string", "enum": ["attachment", "quote_document"]},
                        },
                        "additionalProperties": False,
                    }
                }
            },
        }
    ok: dict[str, Any] = {
        "description": route.summary,
        "headers": {"X-Request-Id": REQUEST_ID},
    }
    if route.status != 204:
        if route.content != "application/json":
            media = (route.content,) if isinstance(route.content, str) else route.content
            ok["content"] = {m: {"schema": {"type": "string"}} for m in media}
        elif route.response is not None and route.many:
            ok["content"] = {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["items", "next_cursor"],
                        "properties": {
                            # the schema itself (not a hand-made $ref): apispec registers it
                            "items": {"type": "array", "items": route.response},
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    }
                }
            }
        elif route.response is not None:
            ok["content"] = {"application/json": {"schema": route.response}}
        else:
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    if route.idempotency:
        ok["headers"] = {**ok["headers"], "Idempotent-Replayed": IDEMPOTENT_REPLAYED}
    op["responses"][str(route.status)] = ok
    errors = dict(COMMON_ERRORS)
    if route.callers:
        errors.update(AUTH_ERRORS)
    if "{" in route.path or route.callers:
        errors[404] = "Not found (or outside the caller's scope)"
    if route.method in ("POST", "PATCH", "PUT", "DELETE"):
        errors[409] = (
            "Conflict with the resource's current state: an invalid transition, a stale "
            "version, or a change its stored values do not allow"
        )
        errors[415] = "Unsupported media type"
    if route.idempotency:
        errors[409] += (
            "; an Idempotency-Key used with another request (idempotency_key_reused), "
            "or one whose first request is still running (retry after Retry-After)"
        )
    if route.multipart:
        errors[413] = "Upload too large"
    for status in route.errors:
        errors.setdefault(status, "Error")
    for status, text in sorted(errors.items()):
        op["responses"][str(status)] = _problem(text, status)
    return op


def _schemas_in_use() -> dict[str, type[Schema]]:
    """Every schema class a route names, by component name (for OPENAPI_RULES)."""
    found: dict[str, type[Schema]] = {}
    for route in ROUTES:
        for cls in (route.body, route.query, route.response):
            if cls is not None:
                found[_resolver(cls)] = cls
    return found


def _input_schemas() -> set[type[Schema]]:
    """Body and query schemas, and the schemas nested in them."""
    found: set[type[Schema]] = set()
    todo = [cls for r in ROUTES for cls in (r.body, r.query) if cls is not None]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.add(cls)
        for field in cls().fields.values():
            inner = getattr(field, "inner", field)
            if isinstance(inner, fields.Nested) and isinstance(inner.nested, type):
                todo.append(inner.nested)
    return found


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    # imported on first use: every gateway process pays its memory only if asked
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    _INPUT.update(_input_schemas())
    plugin = MarshmallowPlugin(schema_name_resolver=_resolver)
    spec = APISpec(
        title="Portico API",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "Customer portal for service shops. Errors are application/problem+json,"
            " also those the web server gives before any route: 400 malformed_request,"
            " 405 method_not_allowed, 414 uri_too_long, 431 headers_too_large,"
            " 505 http_version_not_supported."
        },
        servers=[{"url": API_PREFIX}],
    )
    assert plugin.converter is not None
    plugin.converter.add_attribute_function(text_rules)
    plugin.converter.add_attribute_function(dict_rules)
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    components = document.get("components", {}).get("schemas", {})
    for name, cls in _schemas_in_use().items():
        rules = getattr(cls, "OPENAPI_RULES", None)
        if rules and name in components:
            components[name].update(rules)
    return document
