"""The edge of the running gateway: what reaches it as bytes (issue 6 items 9, 10, 14).

Every refusal is problem+json with a stable code, including those the web server gives
before any route runs, and text no person writes is a 422, never a 500.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import System

PROBLEM = "application/problem+json"


def raw_exchange(system: System, request: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes, read one answer: (status, headers, body)."""
    host, port = system.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body[:length]


def assert_problem(answer: tuple[int, dict, bytes], status: int, code: str) -> dict:
    got_status, headers, body = answer
    assert got_status == status, answer
    assert headers.get("content-type") == PROBLEM, answer
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (status, code), problem
    return problem


# --- item 14: the web server's own refusals -----------------------------------------------
LONG = 9000  # eventlet reads request and header lines up to 8 KiB


@pytest.mark.parametrize(
    "request_bytes, status, code",
    [
        pytest.param(
            b"GET /api/v1/customers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * LONG + b"\r\n\r\n",
            431,
            "headers_too_large",
            id="header-line-too-long",
        ),
        pytest.param(
            b"GET /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 8000) for i in range(10))
            + b"\r\n",
            431,
            "headers_too_large",
            id="headers-too-large-together",
        ),
        pytest.param(
            b"GET /api/v1/customers HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: v\r\n" % i for i in range(120))
            + b"\r\n",
            431,
            "headers_too_large",
            id="too-many-headers",
        ),
        pytest.param(
            b"GET /api/v1/" + b"a" * LONG + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "uri_too_long",
            id="request-line-too-long",
        ),
        pytest.param(b"garbage\r\n\r\n", 400, "malformed_request", id="garbage-request-line"),
        pytest.param(
            b"GET /api/v1/customers HTTP/1.1 extra\r\n\r\n",
            400,
            "malformed_request",
            id="four-word-request-line",
        ),
        pytest.param(
            b"POST /api/v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            400,
            "malformed_request",
            id="negative-content-length",
        ),
        pytest.param(
            b"GET /api/v1/customers HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            "http_version_not_supported",
            id="http-2-request-line",
        ),
        pytest.param(
            b"TRACE /api/v1/customers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            405,
            "method_not_allowed",
            id="trace",
        ),
        pytest.param(
            b"FOO /api/v1/customers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            405,
            "method_not_allowed",
            id="unknown-method",
        ),
        pytest.param(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
            b"Connection: close\r\n\r\n",
            405,
            "method_not_allowed",
            id="connect",
        ),
    ],
)
def test_the_web_servers_own_refusals_are_problem_json(
    system: System, request_bytes: bytes, status: int, code: str
) -> None:
    answer = assert_problem(raw_exchange(system, request_bytes), status, code)
    assert answer["type"].endswith(code.replace("_", "-"))


def test_trace_names_the_allowed_methods(system: System) -> None:
    _status, headers, _body = raw_exchange(
        system, b"TRACE /api/v1/customers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert "GET" in headers["allow"] and "TRACE" not in headers["allow"]


def test_the_gateway_still_answers_after_refusals(system: System) -> None:
    raw_exchange(system, b"garbage\r\n\r\n")
    assert system.anonymous().get("/openapi.json").status_code == 200


# --- items 9 and 10 on the wire -----------------------------------------------------------
def test_a_lone_surrogate_is_422_not_500(system: System) -> None:
    body = b'{"tenant": "%s", "email": "a\\ud800@x.test", "password": "whatever"}' % (
        system.tenant.encode()
    )
    r = system.anonymous().post(
        "/auth/token", data=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["Content-Type"] == PROBLEM
    assert r.json()["errors"] == {
        "email": ["must be valid Unicode (it contains an unpaired surrogate)"]
    }

    admin = system.staff("admin")
    body = b'{"name": "Acme \\udfff Ltd"}'
    r = admin.post("/customers", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "name" in r.json()["errors"]


@pytest.mark.parametrize("name", ["Casey\r\nBcc: victim@example.com", "Casey \u202egpj.exe"])
def test_names_that_would_spoof_an_email_are_422(system: System, name: str) -> None:
    admin = system.staff("admin")
    r = admin.post("/customers", {"name": name})
    assert r.status_code == 422, r.text
    assert list(r.json()["errors"]) == ["name"]
