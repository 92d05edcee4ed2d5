"""Domain errors with stable codes, and the one table that maps them to HTTP.

Pure (standard library only), so that every ``domain.py`` can raise them. Services
raise these; ``kit.providers.rpc`` sends them across RPC as the base class with their
code (:mod:`kit.rpcerrors` registers it with nameko, which rebuilds it on the caller's
side), and the gateway turns them into ``application/problem+json`` with
:func:`problem`. No other mapping exists.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every rule broken on purpose; ``code`` is stable and documented."""

    code = "domain_error"

    def __init__(
        self,
        code: str | None = None,
        detail: str = "",
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        # nameko's RPC serialiser stringifies every argument that is not a string, dict
        # or list: a missing ``errors`` arrives as the text "None", never as a mapping.
        if not isinstance(errors, dict) or not errors:
            errors = None
        super().__init__(code or self.code, detail, errors)
        self.code = code or self.code
        self.detail = detail
        self.errors = errors


class _FixedCode(DomainError):
    """A DomainError whose code is the class's own.

    ``args`` stay ``(detail, errors)`` so that nameko, which rebuilds a registered
    exception as ``cls(*args)`` on the caller's side, gets back the same error.
    """

    def __init__(self, detail: str = "", errors: dict[str, list[str]] | None = None) -> None:
        DomainError.__init__(self, type(self).code, detail, errors)
        self.args = (detail, errors)


def _fixed(name: str, code: str) -> type[_FixedCode]:
    return type(name, (_FixedCode,), {"code": code})


NotFound = _fixed("NotFound", "not_found")
InvalidTransition = _fixed("InvalidTransition", "invalid_transition")
ValidationFailed = _fixed("ValidationFailed", "validation_failed")
VersionConflict = _fixed("VersionConflict", "version_conflict")
Conflict = _fixed("Conflict", "conflict")
PayloadTooLarge = _fixed("PayloadTooLarge", "payload_too_large")
UnsupportedMediaType = _fixed("UnsupportedMediaType", "unsupported_media_type")
Unauthenticated = _fixed("Unauthenticated", "unauthenticated")
RateLimited = _fixed("RateLimited", "rate_limited")
ServiceUnavailable = _fixed("ServiceUnavailable", "service_unavailable")
IdempotencyKeyReused = _fixed("IdempotencyKeyReused", "idempotency_key_reused")


class Forbidden(DomainError):
    """403: ``forbidden`` (wrong role or caller kind) or ``permission_required``."""

    code = "forbidden"

    def __init__(self, detail: str = "", code: str = "forbidden") -> None:
        DomainError.__init__(self, code, detail)
        self.args = (detail, code)


# The one table: code -> HTTP status. Codes not listed are 422 (domain rule broken).
STATUS_BY_CODE: dict[str, int] = {
    "malformed_request": 400,
    "unauthenticated": 401,
    "token_expired": 401,
    "forbidden": 403,
    "permission_required": 403,
    "feature_disabled": 403,  # the tenant or the customer switched the feature off
    "not_found": 404,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "invalid_transition": 409,
    "version_conflict": 409,
    "idempotency_key_reused": 409,
    "conflict": 409,
    "payload_too_large": 413,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "validation_failed": 422,
    "invalid_link": 422,  # invitation/reset link unknown, used, expired or for another purpose
    "rate_limited": 429,
    "headers_too_large": 431,
    "service_unavailable": 503,
    "internal_error": 500,
    "http_version_not_supported": 505,
}

TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Payload Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 422)


def problem(
    code: str, detail: str = "", errors: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The problem+json body for a code (RFC 9457)."""
    status = status_for(code)
    body: dict[str, Any] = {
        "type": f"https://portico.dev/problems/{code.replace('_', '-')}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail or TITLES.get(status, "Error"),
    }
    if errors:
        body["errors"] = errors
    return body
