"""Schema-driven fuzzing: every operation of the OpenAPI document, sent to the running
gateway with generated (valid and invalid) path, query, header and body values, once as
the demo admin and once as the demo portal user.

The assertions are schemathesis's, every one of its checks (the CLI's ``--checks all``):
no 5xx; every response as documented (status code, media type, headers, body schema);
every request the document calls valid is accepted (positive data) and every request
it calls invalid is refused (negative data); undocumented methods are 405 with Allow;
and, in the stateful run that chains operations through the document's links (inferred
from the responses), what was created can be read and what was deleted is gone.
Strings with lone surrogates and control characters are sent on purpose as well.

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
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from kit.pagination import encode_cursor
from services.gateway import service as _gateway  # noqa: F401 - registers every route
from services.gateway.openapi import MULTI_LINE, NOT_BLANK, SINGLE_LINE, openapi_document
from tests.support import Client

ROLES = ("admin", "portal")
MAX_EXAMPLES = 12
LOGOUT = ("POST", "/auth/logout")

STATEFUL_EXAMPLES = 12
SEED = 20240601

# Every check schemathesis has, positive and negative data, every phase (examples,
# coverage, fuzzing), derandomized from a fixed seed: the same requests on every run.
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(openapi_document()),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "mode": "all"},
        }
    ),
)
ALL_CHECKS = sorted(checks.CHECKS.get_all_names())

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


# --- the document on its own -----------------------------------------------------------
def _walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """(key, value) of every mapping entry in the document, depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def test_every_reference_resolves():
    document = openapi_document()
    refs = {value for key, value in _walk(document) if key == "$ref"}
    assert refs  # ActionItem and Delivery were named but never defined
    for ref in refs:
        assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"], ref


def test_patterns_refuse_what_the_server_refuses():
    """Every pattern a request may meet refuses every character kit.text refuses (a
    field's own pattern, e.g. a currency or a cursor, must be as strict)."""
    patterns = {value for key, value in _walk(openapi_document()) if key == "pattern"}
    refused = ["\x00", "\x1b", "\x7f", "\x85", "\u202e", "\u2066", "\u2028", "\r"]
    for pattern in patterns:
        compiled = re.compile(pattern)
        for char in refused:
            for text in (char, f"a{char}", f"{char}a", f"a{char}b"):
                assert not compiled.search(text), (pattern, text)
    for pattern in (SINGLE_LINE, NOT_BLANK):
        assert not re.search(pattern, "a\nb") and re.search(pattern, "a b")
    assert re.search(MULTI_LINE, "a\r\nb\n\tc")
    assert not re.search(NOT_BLANK, " \u3000\u00a0 ")


def test_cursors_match_their_documented_pattern():
    cursor = encode_cursor(datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=UTC), str(uuid.uuid4()))
    parameters = openapi_document()["paths"]["/customers"]["get"]["parameters"]
    documented = next(p for p in parameters if p["name"] == "cursor")["schema"]["pattern"]
    assert re.fullmatch(documented, cursor)


def test_feature_maps_list_their_keys():
    component = openapi_document()["components"]["schemas"]["SettingsPatch"]
    features = component["properties"]["features"]
    assert features["additionalProperties"] is False
    assert set(features["properties"]) == {"quotes", "bookings", "payments", "history"}


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


@schema.hook
def map_case(context: Any, case: Any) -> Any:
    """A file the document calls valid is one whose bytes are of an allowed type, which
    JSON Schema cannot state about binary: positive cases upload a real PDF."""
    meta = case.meta
    if (
        case.operation.path.endswith("/attachments")
        and case.method.upper() == "POST"
        and isinstance(case.body, dict)
        and meta is not None
        and meta.generation.mode.is_positive
    ):
        case.body = {**case.body, "file": PDF}
    return case


def _token(world: dict[str, Any], system: Any, role: str, method: str, path: str) -> str:
    if (method.upper(), path) == LOGOUT:
        # A session of its own each time: logging out must not end the fuzzer's.
        return (system.staff("admin") if role == "admin" else system.portal()).token
    return world["tokens"][role]


def _count(world: dict[str, Any], role: str, case: Any, response: Any) -> None:
    stats = world["stats"]
    stats.calls[(role, case.operation.label)] += 1
    stats.undeclared += case.method.upper() != case.operation.method.upper()
    stats.statuses[response.status_code] += 1


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
    token = _token(world, system, role, case.method, case.path)
    # no `checks=`: every check schemathesis has runs
    response = case.call_and_validate(
        base_url=f"{system.base}/api/v1", headers={"Authorization": f"Bearer {token}"}
    )
    _count(world, role, case, response)


@pytest.mark.parametrize("role", ROLES)
def test_stateful(role, world, system):
    """Sequences of calls along the links between operations (an id a POST returned,
    used by the GETs, PATCHes and DELETEs of that resource), with every check."""
    base = f"{system.base}/api/v1"

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            token = _token(world, system, role, case.method, case.path)
            return {"base_url": base, "headers": {"Authorization": f"Bearer {token}"}}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            _count(world, role, case, response)

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )


# --- strings no generator sends: lone surrogates and control characters ----------------
BAD_TEXT = {
    "surrogate": "a\ud800b",  # valid JSON ("\\ud800"), not Unicode
    "control": "a\x1bb",  # ESC
    "line break": "a\r\nBcc: x@example.com",
    "bidi override": "a\u202eb",
}


def _string_targets(operation: Any) -> list[tuple[str, str, bool]]:
    """(location, name, multi-line) of each free-text string of the operation's JSON
    body (top level) or query."""
    raw = operation.definition.raw
    found = [
        ("query", p["name"], p["schema"]) for p in raw.get("parameters", []) if p["in"] == "query"
    ]
    body = raw.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        name = body["schema"]["$ref"].rsplit("/", 1)[-1]
        component = openapi_document()["components"]["schemas"][name]
        found += [("body", n, p) for n, p in component.get("properties", {}).items()]
    return [
        (where, name, prop.get("pattern") == MULTI_LINE)
        for where, name, prop in found
        if prop.get("pattern") in (SINGLE_LINE, MULTI_LINE, NOT_BLANK)
    ]


def _text_cases() -> Iterator[Any]:
    """Every body string gets a lone surrogate, and every string one of the other kinds
    in turn (all four for all of them would take minutes). A URL cannot carry a lone
    surrogate (it has no UTF-8 encoding): those go in bodies only."""
    others = sorted(set(BAD_TEXT) - {"surrogate"})
    targets = [
        (op, where, name, multiline)
        for op in (result.ok() for result in schema.get_all_operations())
        for where, name, multiline in _string_targets(op)
    ]
    for i, (op, where, name, multiline) in enumerate(targets):
        kinds = [others[i % len(others)]] + (["surrogate"] if where == "body" else [])
        for kind in kinds:
            yield pytest.param(
                op.method.upper(),
                op.path,
                where,
                name,
                multiline,
                kind,
                id=f"{op.label} {where}.{name} {kind}",
            )


TEXT_TARGETS = list(_text_cases())


@pytest.mark.parametrize(("method", "path", "where", "name", "multiline", "kind"), TEXT_TARGETS)
def test_bad_text_is_a_documented_422(method, path, where, name, multiline, kind, world, system):
    """Each free-text string of each body and query, the rest of the request valid: a
    422 naming it, which the document declares for the operation."""
    operation = schema[path][method]
    value = "a\rb" if kind == "line break" and multiline else BAD_TEXT[kind]

    @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @hypothesis.settings(
        max_examples=1,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def check(case: Any) -> None:
        if where == "query":
            case.query = {**(case.query or {}), name: value}
        else:
            case.body = {**(case.body or {}), name: value}
        for role in ROLES:  # the first role the operation is for
            token = _token(world, system, role, method, path)
            # sent by hand: schemathesis cannot encode a lone surrogate (JSON can, escaped)
            response = requests.request(
                method,
                f"{system.base}/api/v1{case.formatted_path}",
                params=case.query,
                data=json.dumps(case.body) if isinstance(case.body, dict) else None,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=20,
            )
            if response.status_code != 403:
                break
        assert response.status_code == 422, response.text
        assert response.headers["Content-Type"] == "application/problem+json"
        assert name in response.json().get("errors", {}), response.text
        assert "422" in operation.definition.raw["responses"]

    check()


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
