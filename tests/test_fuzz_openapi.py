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
from typing import Any, cast

import hypothesis
import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from kit import text as kit_text
from kit.context import Actor
from kit.errors import DomainError
from kit.pagination import encode_cursor
from services.gateway import domain as gateway_domain
from services.gateway import service as _gateway  # noqa: F401 - registers every route
from services.gateway.api_directory import contact_values
from services.gateway.openapi import (
    MULTI_LINE,
    MULTI_LINE_NOT_BLANK,
    NOT_BLANK,
    SINGLE_LINE,
    openapi_document,
    operation_id,
)
from services.gateway.web import ROUTES, ApiError, parse_input
from services.quotes import domain as quotes_domain
from tests.support import Client, wait_for

ROLES = ("admin", "portal")
MAX_EXAMPLES = 6
LOGOUT = ("POST", "/auth/logout")

STATEFUL_EXAMPLES = 12
STATEFUL_STEPS = 6
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
).exclude(
    # A Server-Sent Events stream answers 200 and never ends: schemathesis reads every
    # body to the end, so it cannot call it. Its refusals (401, 422) and its events are
    # tested in tests/test_event_stream.py; POST /events/tickets is fuzzed as usual.
    path="/events/stream",
    method="GET",
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


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy:
    """Each well-formed id is the generated value or one of the pool's, Hypothesis's
    choice; a malformed one (a negative case) stays what it is."""
    if not isinstance(path_parameters, dict):
        return st.just(path_parameters)
    segment = context.operation.path.strip("/").split("/")[0]
    return st.fixed_dictionaries(
        {
            name: st.sampled_from(
                [value, *(POOL.get(KIND.get((segment, name), ""), []) if _is_uuid(value) else [])]
            )
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
    "notify_new_request_roles",
)


def _ok(response: requests.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def _quote_with_comment_and_file(client: Client, body: dict[str, Any]) -> dict[str, str]:
    # The quotes service learns of a new customer and unit by event: 404 until it has.
    created = wait_for(
        lambda: (r := client.post("/quote-requests", body)).status_code != 404 and r,
        timeout=15,
        interval=0.05,
    )
    quote = _ok(created, 201)
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


# Bodies at the edges of rules the server applied after the schema (time zones, emails,
# phones, roles, permissions, trimming, "at least one of", "a channel needs an address"):
# the document must call each valid exactly when the server accepts it.
PAD = " " * 5
AGREEMENT = [
    ("MePatch", {"first_name": "A", "last_name": "B", "time_zone": "Europe/Oslo"}, True),
    ("MePatch", {"first_name": "A", "last_name": "B", "time_zone": "Mars/Olympus"}, False),
    ("MePatch", {"first_name": " ", "last_name": "B"}, False),
    ("UserCreate", {"email": "a@b.cc", "first_name": "A", "last_name": "B", "roles": ["admin"]}, True),
    ("UserCreate", {"email": f"{PAD}a@b.cc ", "first_name": "A", "last_name": "B", "roles": ["advisor"]}, True),
    ("UserCreate", {"email": "a@b", "first_name": "A", "last_name": "B", "roles": ["admin"]}, False),
    ("UserCreate", {"email": "a\ufeff@b.cc", "first_name": "A", "last_name": "B", "roles": ["admin"]}, True),
    ("UserCreate", {"email": "a@b.cc", "first_name": "A", "last_name": "B", "roles": ["boss"]}, False),
    ("UserPatch", {"roles": []}, False),
    ("AccountPatch", {"permissions": ["quotes.request"], "time_zone": "UTC"}, True),
    ("AccountPatch", {"permissions": ["quotes.rule"]}, False),
    ("AccountPatch", {"first_name": "a" * 99 + PAD}, False),  # 104 sent: too long
    ("AccountPatch", {"first_name": PAD + "a" * 95}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "phone": "+1 555 0100"}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "phone": "12345 "}, False),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "phone": "+ 12345"}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "phone": "+ 1234 "}, False),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "phone": " +1234567 "}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "email": " ", "phone": ""}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "notify_by": "sms"}, False),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "notify_by": "sms", "phone": " "}, False),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "notify_by": "both", "phone": "123456", "email": "a@b.cc"}, True),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "notify_by": "email", "email": None}, False),
    ("ContactCreate", {"first_name": "A", "last_name": "B", "notify_by": "none"}, True),
    ("UnitCreate", {}, False),
    ("UnitCreate", {"make": " ", "model": "\u3000"}, False),
    ("UnitCreate", {"serial": " x "}, True),
    ("CreateQuoteRequest", {"description": " \n\t"}, False),
    ("CreateQuoteRequest", {"description": " \r\nBrakes"}, True),
    ("SettingsPatch", {"reason_codes": [" "]}, False),
    ("SettingsPatch", {"reason_codes": [" late "]}, True),
]  # fmt: skip


PORTAL_ACTOR = Actor(
    kind="portal",
    id=str(uuid.uuid4()),
    tenant_id=str(uuid.uuid4()),
    customer_id=str(uuid.uuid4()),
    permissions=("quotes.request",),
)


def _document_accepts(component: str, body: dict[str, Any]) -> bool:
    document = openapi_document()
    root = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(root).is_valid(body)


def _server_accepts(component: str, body: dict[str, Any]) -> bool:
    """What the handler checks before it touches the database."""
    route = next(r for r in ROUTES if r.body is not None and r.body.__name__ == component)
    assert route.body is not None  # chosen for having one
    try:
        loaded = parse_input(route.body, body, "request body")
        if component == "UnitCreate":
            fields = ("make", "model", "serial", "fleet_number")
            gateway_domain.raise_if(gateway_domain.check_unit(*(loaded[f] for f in fields)))
        if component == "ContactCreate":
            contact_values(loaded, None)
        if component == "CreateQuoteRequest":
            quotes_domain.prepare_create(PORTAL_ACTOR, **loaded)
        if component == "SettingsPatch":
            gateway_domain.clean_reason_codes(loaded["reason_codes"])
    except (ApiError, DomainError):
        return False
    return True


@pytest.mark.parametrize(("component", "body", "valid"), AGREEMENT)
def test_the_document_and_the_server_agree(component, body, valid):
    assert _document_accepts(component, body) is valid
    assert _server_accepts(component, body) is valid


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


def _auth_negated(case: Any) -> bool:
    """The case is invalid because of its Authorization header (missing or not a
    bearer token): it is sent as generated, not with the caller's token."""
    data = case.meta.phase.data if case.meta is not None else None
    named = [getattr(data, "parameter", None)]
    named += [m.parameter for m in getattr(data, "mutations", None) or ()]
    return (
        case.meta is not None and case.meta.generation.mode.is_negative and "Authorization" in named
    )


def _headers(world: dict[str, Any], system: Any, role: str, case: Any) -> dict[str, str]:
    if _auth_negated(case):
        return {}
    token = _token(world, system, role, case.method, case.path)
    return {"Authorization": f"Bearer {token}"}


def _count(world: dict[str, Any], role: str, case: Any, response: Any) -> None:
    stats = world["stats"]
    stats.calls[(role, case.operation.label)] += 1
    stats.undeclared += case.method.upper() != case.operation.method.upper()
    stats.statuses[response.status_code] += 1


# Valid requests the document cannot tell from refused ones, answered 422 on purpose.
# Only positive_data_acceptance is set aside for them, and the answer is checked here.
def _link_refusal(role: str, case: Any, response: Any) -> bool:
    """Accepting an invitation or a reset: whether a token is live is known only to the
    person it was mailed to (unknown, used and expired look alike: 422 invalid_link, as
    API.md says), and the password policy (zxcvbn strength) is no JSON Schema."""
    body = response.json() if response.status_code == 422 else {}
    return body.get("code") == "invalid_link" or "password" in body.get("errors", {})


def _staff_quote_without_customer(role: str, case: Any, response: Any) -> bool:
    """POST /quote-requests: staff must name the customer, a portal user's is its own.
    The schema serves both callers, so customer_id is optional there (its description
    says so); from staff, leaving it out is 422 naming it."""
    body = case.body if isinstance(case.body, dict) else {}
    return (
        role == "admin"
        and "customer_id" not in body
        and response.status_code == 422
        and set(response.json().get("errors", {})) == {"customer_id"}
    )


SET_ASIDE = {
    ("POST", "/auth/invitations/accept"): _link_refusal,
    ("POST", "/auth/password-reset/confirm"): _link_refusal,
    ("POST", "/quote-requests"): _staff_quote_without_customer,
}


def _nothing_negated(case: Any) -> bool:
    """A case schemathesis labels negative while recording no invalid component (its
    description is "Positive test case"): seen on uploads, where the negated file part
    was overwritten by a real file it had drawn before. There is nothing to refuse."""
    meta = case.meta
    return (
        meta is not None
        and meta.generation.mode.is_negative
        and meta.phase.data.description == "Positive test case"
        and not getattr(meta.phase.data, "mutations", None)
    )


def _set_aside(role: str, case: Any, response: Any) -> list[Any]:
    """The checks not to run on this answer: none, but for the SET_ASIDE cases and the
    negative cases without a negation."""
    if _nothing_negated(case):
        return [checks.negative_data_rejection]
    explained = SET_ASIDE.get((case.method.upper(), case.operation.path))
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if explained is not None and positive and response.status_code == 422:
        return [checks.positive_data_acceptance] if explained(role, case, response) else []
    return []


def _call(case: Any, role: str, world: dict[str, Any], system: Any) -> None:
    """Send the case as ``role`` and run every check on the answer (no ``checks=``:
    every check schemathesis has)."""
    sent = {"base_url": f"{system.base}/api/v1", "headers": _headers(world, system, role, case)}
    response = case.call(**sent)
    _count(world, role, case, response)
    case.validate_response(
        response,
        headers=sent["headers"],
        excluded_checks=_set_aside(role, case, response),
        transport_kwargs=sent,
    )


# Every operation as the demo admin; as the demo portal user, the operations a portal
# user may call (the others answer it 403 whatever the input; the security matrix tests
# cover that, and the fuzzer's minutes go where the input matters).
PORTAL_OPERATIONS = [operation_id(r) for r in ROUTES if "portal" in r.callers]
portal_schema = schema.include(operation_id=PORTAL_OPERATIONS)
SETTINGS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@schema.parametrize()
@SETTINGS
def test_operation_as_staff(case, world, system):
    _call(case, "admin", world, system)


@portal_schema.parametrize()
@SETTINGS
def test_operation_as_portal_user(case, world, system):
    _call(case, "portal", world, system)


@pytest.mark.parametrize("role", ROLES)
def test_stateful(role, world, system):
    """Sequences of calls along the links between operations (an id a POST returned,
    used by the GETs, PATCHes and DELETEs of that resource), with every check."""
    base = f"{system.base}/api/v1"
    machine_schema = schema if role == "admin" else portal_schema

    class Machine(machine_schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base, "headers": _headers(world, system, role, case)}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            _count(world, role, case, response)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(
                response,
                excluded_checks=_set_aside(role, case, response),
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
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
    multi = (MULTI_LINE, MULTI_LINE_NOT_BLANK)
    return [
        (where, name, prop.get("pattern") in multi)
        for where, name, prop in found
        if prop.get("pattern") in (SINGLE_LINE, NOT_BLANK, *multi)
    ]


def _text_cases() -> Iterator[Any]:
    """Every body string gets a lone surrogate, and every string one of the other kinds
    in turn (all four for all of them would take minutes). A URL cannot carry a lone
    surrogate (it has no UTF-8 encoding): those go in bodies only."""
    others = sorted(set(BAD_TEXT) - {"surrogate"})
    targets = [
        (op, where, name, multiline)
        # our document has no invalid operation (an Err would fail here, on .ok())
        for op in (cast(Ok[Any], result).ok() for result in schema.get_all_operations())
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
    assert body["errors"] == {"name": [kit_text.problem("a\x00b")]}
    for path in ("/customers", "/quote-requests"):
        r = requests.get(api + path, params={"q": "a\x00b"}, headers=auth, timeout=20)
        assert _problem(r, 422, "validation_failed")["errors"] == {
            "q": [kit_text.problem("a\x00b")]
        }

    for url in (f"{api}/no-such-thing", f"{api}/customers/x/y/z", f"{system.base}/no-such-page"):
        _problem(requests.get(url, headers=auth, timeout=20), 404, "not_found")
    wrong = requests.delete(f"{api}/settings", headers=auth, timeout=20)
    _problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, HEAD, PATCH"
    wrong = requests.post(f"{api}/openapi.json", timeout=20)
    _problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET, HEAD"


def test_state_conflicts_are_409_and_foreign_references_404(system):
    """What the document cannot know: a change the stored contact does not allow is 409
    (the same change stating both the channel and no address is 422, as documented);
    a unit or contact of another customer in a portal account is 404, like any record
    outside the caller's scope."""
    admin = system.staff("admin")
    suffix = uuid.uuid4().hex[:8]
    mine = _ok(admin.post("/customers", {"name": f"Mine {suffix}"}), 201)
    theirs = _ok(admin.post("/customers", {"name": f"Theirs {suffix}"}), 201)
    contact = _ok(
        admin.post(
            f"/customers/{mine['id']}/contacts",
            {"first_name": "A", "last_name": "B", "email": f"a-{suffix}@x.example"},
        ),
        201,
    )
    assert contact["notify_by"] == "email"
    r = admin.patch(f"/contacts/{contact['id']}", {"notify_by": "sms"})
    assert _problem(r, 409, "conflict")["errors"] == {
        "phone": ["A phone number is needed to notify by SMS."]
    }
    r = admin.patch(f"/contacts/{contact['id']}", {"email": None})
    assert set(_problem(r, 409, "conflict")["errors"]) == {"email"}
    r = admin.patch(f"/contacts/{contact['id']}", {"notify_by": "sms", "phone": None})
    assert set(_problem(r, 422, "validation_failed")["errors"]) == {"phone"}
    done = _ok(admin.patch(f"/contacts/{contact['id']}", {"notify_by": "sms", "phone": "555 0100"}))
    assert (done["notify_by"], done["phone"]) == ("sms", "555 0100")

    their_unit = _ok(admin.post(f"/customers/{theirs['id']}/units", {"make": "X"}), 201)
    their_contact = _ok(
        admin.post(f"/customers/{theirs['id']}/contacts", {"first_name": "C", "last_name": "D"}),
        201,
    )
    base = {"email": f"p-{suffix}@x.example", "first_name": "P", "last_name": "Q"}
    for field, value in (("unit_ids", [their_unit["id"]]), ("contact_id", their_contact["id"])):
        r = admin.post(f"/customers/{mine['id']}/portal-accounts", {**base, field: value})
        assert set(_problem(r, 404, "not_found")["errors"]) == {field}
