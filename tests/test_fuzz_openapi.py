"""Schema-driven fuzzing: every operation of the OpenAPI document, sent to the running
gateway with generated (valid and invalid) path, query, header and body values, once as
the demo admin and once as the demo portal user.

The only assertions are the document's own: no 5xx, and every response matches what the
document declares for its operation (status code, media type, headers, body schema).

The document is built from the route table at collection time, so that every operation
is its own test, and checked equal to the one the gateway serves. (schemathesis's
fixture loader, ``schemathesis.pytest.from_fixture``, does not run under pytest 9: it
sets ``Function._nodeid``, which pytest 9 no longer has.) Path ids are drawn
either from the generator or from a pool of real resources this module creates for
itself, so handlers run past their 404s; the pool never holds a demo resource a write
could damage (an admin changing the demo logins would break the tests after this one).
``POST /auth/logout`` gets a fresh session per call (successful sign-ins are not rate
limited); settings and the two demo profiles are put back afterwards.
"""

from __future__ import annotations

import copy
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks

from services.gateway import service as _gateway  # noqa: F401 - registers every route
from services.gateway.openapi import openapi_document
from tests.support import Client

ROLES = ("admin", "portal")
MAX_EXAMPLES = 12
LOGOUT = ("POST", "/auth/logout")

# No 5xx, and every response as documented. (negative_data_rejection is left out: the
# gateway ignores unknown headers and multipart fields, and marshmallow reads 0/1 as
# booleans, all of which it counts as accepting invalid data.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.unsupported_method,  # undocumented methods: 405 with an Allow header
    checks.allow_header_conformance,
]

schema = schemathesis.openapi.from_dict(
    copy.deepcopy(openapi_document()),
    config=schemathesis.Config.from_dict(
        {"seed": 20240601, "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True}}
    ),
)

# --- real ids for path parameters ---------------------------------------------------------
# kind of resource each path parameter names, by the path's first segment
KIND = {
    ("quote-requests", "id"): "quotes",
    ("quote-requests", "cid"): "comments",
    ("quote-requests", "aid"): "attachments",
    ("customers", "id"): "customers",
    ("contacts", "id"): "contacts",
    ("users", "id"): "users",
    ("portal-accounts", "id"): "portal_accounts",
}
POOL: dict[str, list[str]] = {}  # filled by the `world` fixture, read while drawing


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy:
    """Each id is the generated value or one of the pool's, Hypothesis's choice."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    segment = context.operation.path.strip("/").split("/")[0]
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *POOL.get(KIND.get((segment, name), ""), [])])
            for name, value in path_parameters.items()
        }
    )


# --- the world the fuzzer works in --------------------------------------------------------
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
SETTINGS_FIELDS = (
    "features",
    "approval_terms",
    "work_order_token_hours",
    "tax_rate_bp",
    "currency",
    "reason_codes",
)


def _ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def _quote_with_comment_and_file(client: Client, body: dict[str, Any]) -> dict[str, str]:
    quote = _ok(client.post("/quote-requests", body), 201)
    comment = _ok(client.post(f"/quote-requests/{quote['id']}/comments", {"body": "fuzz"}), 201)
    attachment = _ok(
        client.post(
            f"/quote-requests/{quote['id']}/attachments",
            files={"file": ("fuzz.pdf", io.BytesIO(PDF), "application/pdf")},
        ),
        201,
    )
    return {"quote": quote["id"], "comment": comment["id"], "attachment": attachment["id"]}


class Stats:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()  # (caller, operation) -> requests
        self.undeclared = 0  # requests with a method the path does not declare (-> 405)
        self.statuses: Counter[int] = Counter()
        self.started = time.monotonic()

    def summary(self) -> str:
        operations = {op for _role, op in self.calls}
        callers = {role for role, _op in self.calls}
        return (
            f"fuzz: {sum(self.calls.values())} requests ({self.undeclared} with undeclared "
            f"methods) over {len(operations)} operations x {len(callers)} callers in "
            f"{time.monotonic() - self.started:.0f}s; statuses {dict(sorted(self.statuses.items()))}"
        )


@pytest.fixture(scope="module")
def world(system, request) -> Iterator[dict[str, Any]]:
    """Callers' tokens, the id pool, and the state restored afterwards."""
    admin, portal = system.staff("admin"), system.portal()
    assert admin.token and portal.token
    suffix = uuid.uuid4().hex[:8]

    customer = _ok(admin.post("/customers", {"name": f"Fuzz {suffix}"}), 201)
    cid = customer["id"]
    contact = _ok(
        admin.post(
            f"/customers/{cid}/contacts",
            {"first_name": "Fuzz", "last_name": "Contact", "email": f"c-{suffix}@fuzz.example"},
        ),
        201,
    )
    unit = _ok(admin.post(f"/customers/{cid}/units", {"make": "Fuzz", "serial": suffix}), 201)
    account = _ok(
        admin.post(
            f"/customers/{cid}/portal-accounts",
            {
                "email": f"p-{suffix}@fuzz.example",
                "first_name": "Fuzz",
                "last_name": "Portal",
            },
        ),
        201,
    )
    user = _ok(
        admin.post(
            "/users",
            {
                "email": f"s-{suffix}@fuzz.example",
                "first_name": "Fuzz",
                "last_name": "Staff",
                "roles": ["advisor"],
            },
        ),
        201,
    )
    staff_quote = _quote_with_comment_and_file(
        admin, {"description": "Fuzz quote", "customer_id": cid, "unit_id": unit["id"]}
    )
    # The demo customer's own quote, created by the portal user: its scope, fuzz-owned.
    portal_quote = _quote_with_comment_and_file(portal, {"description": "Fuzz portal quote"})
    POOL.update(
        quotes=[staff_quote["quote"], portal_quote["quote"]],
        comments=[staff_quote["comment"], portal_quote["comment"]],
        attachments=[staff_quote["attachment"], portal_quote["attachment"]],
        customers=[cid],
        contacts=[contact["id"]],
        users=[user["id"]],
        portal_accounts=[account["id"]],
    )

    settings = _ok(admin.get("/settings"))
    profiles = {role: _ok(c.get("/me")) for role, c in (("admin", admin), ("portal", portal))}
    stats = Stats()
    yield {
        "tokens": {"admin": admin.token, "portal": portal.token},
        "stats": stats,
    }

    POOL.clear()
    restorer = system.staff("admin")
    _ok(restorer.patch("/settings", {k: settings[k] for k in SETTINGS_FIELDS}))
    for role, profile in profiles.items():
        client = restorer if role == "admin" else system.portal()
        names = {k: profile[k] for k in ("first_name", "last_name", "time_zone")}
        _ok(client.patch("/me", names))
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(stats.summary())


def test_served_document_is_the_generated_one(system):
    served = requests.get(f"{system.base}/api/v1/openapi.json", timeout=20)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == json.loads(json.dumps(openapi_document()))


@pytest.mark.parametrize("role", ROLES)
@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_operation(case, role, world, system):
    token = world["tokens"][role]
    if (case.method.upper(), case.path) == LOGOUT:
        # A session of its own each time: logging out must not end the fuzzer's.
        token = (system.staff("admin") if role == "admin" else system.portal()).token
    response = case.call_and_validate(
        base_url=f"{system.base}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
    )
    stats = world["stats"]
    stats.calls[(role, case.operation.label)] += 1
    stats.undeclared += case.method.upper() != case.operation.method.upper()
    stats.statuses[response.status_code] += 1


# --- the edges a generator does not reach, by hand ----------------------------------------
def _problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    return body


def test_malformed_bodies_and_routes_are_problems(system):
    admin = system.staff("admin")
    api, auth = f"{system.base}/api/v1", {"Authorization": f"Bearer {admin.token}"}
    as_json = {**auth, "Content-Type": "application/json"}

    def post(path: str, data: Any, headers: dict[str, str] = as_json) -> requests.Response:
        return requests.post(api + path, data=data, headers=headers, timeout=20)

    _problem(post("/customers", b'{"name": "x"'), 400, "malformed_request")
    _problem(post("/customers", b'{"name": "\xff"}'), 400, "malformed_request")
    _problem(post("/customers", b"[" * 100_000), 400, "malformed_request")  # was a 500
    _problem(
        post("/customers", b'{"name": "x"}', {**auth, "Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    huge = b'{"name": "' + b"a" * (1024 * 1024) + b'"}'
    _problem(post("/customers", huge), 413, "payload_too_large")
    chunked = post("/customers", iter([b'{"name": ', b'"chunked"}']))
    _problem(chunked, 400, "malformed_request")  # was read as an empty body

    # NUL cannot be stored in PostgreSQL text: a 422 naming the field, not a 500
    body = _problem(post("/customers", b'{"name": "a\\u0000b"}'), 422, "validation_failed")
    assert body["errors"] == {"name": ["must not contain NUL characters"]}
    for path in ("/customers", "/quote-requests"):
        r = requests.get(api + path, params={"q": "a\x00b"}, headers=auth, timeout=20)
        assert _problem(r, 422, "validation_failed")["errors"] == {
            "q": ["must not contain NUL characters"]
        }

    for url in (f"{api}/no-such-thing", f"{api}/customers/x/y/z", f"{system.base}/no-such-page"):
        _problem(requests.get(url, headers=auth, timeout=20), 404, "not_found")
    wrong = requests.delete(f"{api}/settings", headers=auth, timeout=20)
    _problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, HEAD, PATCH"
    wrong = requests.post(f"{api}/openapi.json", timeout=20)
    _problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, HEAD"
