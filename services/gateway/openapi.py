"""OpenAPI 3.1 document generated from the route table and its marshmallow schemas:
the same schemas that validate requests describe them, so the two cannot drift."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from marshmallow import Schema, fields

from services.gateway.web import API_PREFIX, ROUTES, Route


class ProblemSchema(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    code = fields.String(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


def _resolver(schema: Any) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[:-6] if name.endswith("Schema") and len(name) > 6 else name


COMMON_ERRORS = {400: "Malformed request", 422: "Validation failed", 503: "Service unavailable"}
AUTH_ERRORS = {401: "Not authenticated", 403: "Not allowed", 429: "Rate limited"}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{route.method.lower()}{route.path}").strip(
            "_"
        ),
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
                "schema": {"type": "string"},
            }
        ],
        "responses": {},
    }
    if route.query is not None:
        op["parameters"].append({"in": "query", "schema": route.query})
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
                                "contentMediaType": "application/octet-stream",
                            },
                            "kind": {"type": "string", "enum": ["attachment", "quote_document"]},
                        },
                    }
                }
            },
        }
    ok: dict[str, Any] = {"description": route.summary}
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
                            "items": {
                                "type": "array",
                                "items": {
                                    "$ref": f"#/components/schemas/{_resolver(route.response)}"
                                },
                            },
                            "next_cursor": {"type": ["string", "null"]},
                        },
                    }
                }
            }
        elif route.response is not None:
            ok["content"] = {"application/json": {"schema": route.response}}
        else:
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    op["responses"][str(route.status)] = ok
    errors = dict(COMMON_ERRORS)
    if route.callers:
        errors.update(AUTH_ERRORS)
    if "{" in route.path or route.callers:
        errors[404] = "Not found (or outside the caller's scope)"
    if route.method in ("POST", "PATCH", "PUT", "DELETE"):
        errors[409] = "Conflict: invalid transition or stale version"
        errors[415] = "Unsupported media type"
    if route.multipart:
        errors[413] = "Upload too large"
    for status in route.errors:
        errors.setdefault(status, "Error")
    for status, text in sorted(errors.items()):
        op["responses"][str(status)] = {
            "description": text,
            "content": {"application/problem+json": {"schema": ProblemSchema}},
        }
    return op


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    # imported on first use: every gateway process pays its memory only if asked
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    spec = APISpec(
        title="Portico API",
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin(schema_name_resolver=_resolver)],
        info={
            "description": "Customer portal for service shops. Errors are application/problem+json."
        },
        servers=[{"url": API_PREFIX}],
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
