"""nameko's ``@http``, with Nagle's algorithm off on every connection and every answer
in problem+json, including the ones the web server gives by itself.

A response larger than the server's write buffer leaves in two segments; with Nagle on,
the second waits for the client's delayed ACK of the first (40 ms on Linux): every
list page paid that. Every service uses this ``http`` so they share one listener.

Some requests never reach a service's code: eventlet's WSGI server refuses a request
line or header that is too long, a malformed request line or Content-Length, and
nameko's URL map refuses a method or path no entrypoint declares (``TRACE``,
``CONNECT``, ``FOO``). Those answers were empty bodies, HTML pages or Python's
``http.server`` error page; here they are problem+json with a stable code like every
other error (kit.errors' one table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import sys
from typing import Any

import eventlet
import eventlet.event
import eventlet.semaphore
from nameko.containers import WorkerContext
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import HttpOnlyProtocol, WebServer, WsgiApp
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.wrappers import Request, Response

from kit.errors import STATUS_BY_CODE, problem

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

# What the web server refuses by itself, by status: the stable code and what to say.
PROTOCOL_ERRORS: dict[int, tuple[str, str]] = {
    400: ("malformed_request", "The request could not be read."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "Method not allowed on this resource."),
    414: ("uri_too_long", "The request line (method, path and query) is too long."),
    431: ("headers_too_large", "A request header, or the headers together, are too large."),
    505: ("http_version_not_supported", "Use HTTP/1.0 or HTTP/1.1."),
}


def protocol_error(status: int) -> tuple[str, str]:
    if status in PROTOCOL_ERRORS:
        return PROTOCOL_ERRORS[status]
    code = next((c for c, s in STATUS_BY_CODE.items() if s == status), "malformed_request")
    return code, ""


def problem_bytes(code: str, detail: str, *, head: bool = False) -> bytes:
    """A complete HTTP/1.1 problem+json answer that closes the connection."""
    body = json.dumps(problem(code, detail)).encode()
    status = problem(code)["status"]
    lines = [
        f"HTTP/1.1 {status} {problem(code)['title']}",
        f"Content-Type: {PROBLEM_TYPE}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (b"" if head else body)


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")


class _CannedAnswers:
    """The connection's output while eventlet reads a request: its canned refusals
    (``HTTP/1.0 414 Request URI Too Long``, ``400 Header Line Too Long``, ``400 Headers
    Too Large``, ``400 Bad Request`` for a bad Content-Length...) leave as problem+json.
    Taken away again before the application runs (``get_environ``)."""

    def __init__(self, wfile: Any) -> None:
        self.wfile = wfile

    def write(self, data: bytes) -> Any:
        match = _STATUS_LINE.match(data)
        if match is not None and int(match[1]) >= 400:
            status = int(match[1])
            if status == 400 and b"Header" in match[2]:  # eventlet says 400; it is a 431
                status = 431
            code, detail = protocol_error(status)
            log.info("refused before routing: %d %s", status, match[2].decode("latin-1"))
            data = problem_bytes(code, detail)
        return self.wfile.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wfile, name)


class ProblemProtocol(HttpOnlyProtocol):
    """eventlet's HTTP protocol whose own refusals are problem+json (see module doc)."""

    wfile: Any

    def handle_one_request(self) -> None:
        real = self.wfile
        self.wfile = _CannedAnswers(real)
        try:
            super().handle_one_request()
        finally:
            self.wfile = real

    def get_environ(self) -> Any:
        # The request was read and accepted: the application writes its own answers.
        if isinstance(self.wfile, _CannedAnswers):
            self.wfile = self.wfile.wfile
        return super().get_environ()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Python's ``http.server`` refusals (bad request line, bad version, more than
        100 headers): problem+json, never its HTML page, and logged as JSON, not
        written to stderr."""
        problem_code, detail = protocol_error(code)
        log.info("refused before routing: %d %s", code, message or "")
        self.close_connection = True
        wfile = self.wfile.wfile if isinstance(self.wfile, _CannedAnswers) else self.wfile
        wfile.write(
            problem_bytes(problem_code, detail, head=getattr(self, "command", "") == "HEAD")
        )

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        # http.server writes these to stderr; logs are JSON lines.
        log.info("http: " + format, *args)


class ProblemWsgiApp(WsgiApp):
    """nameko's WSGI app, except that a path or method no entrypoint declares is a
    problem+json answer (nameko returned werkzeug's HTML page)."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ, shallow=True)  # as nameko: the body stays unread
        adapter = self.url_map.bind_to_environ(environ)
        try:
            provider, values = adapter.match()
        except HTTPException as exc:
            return _problem_response(exc)(environ, start_response)
        request.path_values = values  # type: ignore[attr-defined]  # nameko reads it
        try:
            response = provider.handle_request(request)
        except HTTPException as exc:
            response = exc
        return response(environ, start_response)


def _problem_response(exc: HTTPException) -> Response:
    status = exc.code or 400
    code, detail = protocol_error(status)
    response = Response(json.dumps(problem(code, detail)), status=status, mimetype=PROBLEM_TYPE)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


class NoDelayWebServer(WebServer):
    def process_request(self, sock: Any, address: Any) -> None:
        with contextlib.suppress(OSError):  # not a TCP socket: nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(sock, address)

    def get_wsgi_app(self) -> Any:
        return ProblemWsgiApp(self)

    def get_wsgi_server(
        self, sock: Any, wsgi_app: Any, protocol: Any = None, debug: bool = False
    ) -> Any:
        return super().get_wsgi_server(sock, wsgi_app, protocol=ProblemProtocol, debug=debug)


class HttpEntrypoint(HttpRequestHandler):
    server = NoDelayWebServer()


http = HttpEntrypoint.decorator


class InlineHttpEntrypoint(HttpEntrypoint):
    """``@inline_http``: the method runs in the web server's own green thread for the
    connection, on a service instance with the dependencies injected as for a worker,
    but without a nameko worker: no worker pool, no spawned green thread, no event to
    wait on. That machinery cost more than half of a plain process's throughput before
    any work was done.

    The dependencies' worker hooks (``worker_setup``, ``worker_result``,
    ``worker_teardown``) still run, so metrics and the request context behave as
    before. At most ``max_workers`` requests of the service run their method at once
    (as with workers: the database pool is sized for that), but a response body the
    method returns as a generator (a stream) is sent after the slot is given back, so
    any number of streams may stay open. Stopping the service waits for the methods
    that are running (not for open streams), as nameko waits for its workers.
    """

    def setup(self) -> None:
        super().setup()
        self._running = 0
        self._idle = eventlet.event.Event()
        self._idle.send(None)

    def _limit(self) -> Any:
        """One limit for every inline entrypoint of the service (its web server is
        shared by them, one per container)."""
        limit = getattr(self.server, "inline_limit", None)
        if limit is None:
            limit = eventlet.semaphore.Semaphore(self.container.max_workers)
            self.server.inline_limit = limit
        return limit

    def handle_request(self, request: Request) -> Any:
        request.shallow = False
        try:
            args, kwargs = self.get_entrypoint_parameters(request)
            self.check_signature(args, kwargs)
            with self._limit():
                return self._run(request, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - what a worker would have turned into a 500
            log.exception("unhandled error in %s", self.method_name, exc_info=exc)
            return Response(
                json.dumps(problem("internal_error", "Something went wrong on our side.")),
                status=500,
                mimetype=PROBLEM_TYPE,
            )

    def _run(self, request: Request, args: Any, kwargs: Any) -> Any:
        container = self.container
        data = self.server.context_data_from_headers(request)
        worker_ctx = WorkerContext(container, None, self, args, kwargs, data=data)
        service = container.service_cls()
        worker_ctx.service = service
        providers = container.dependencies
        for provider in providers:
            setattr(service, provider.attr_name, provider.get_dependency(worker_ctx))
        self._begin()
        try:
            for provider in providers:
                provider.worker_setup(worker_ctx)
            result = exc_info = None
            try:
                result = getattr(service, self.method_name)(*args, **kwargs)
            except Exception:
                exc_info = sys.exc_info()
                raise
            finally:
                for provider in providers:
                    provider.worker_result(worker_ctx, result, exc_info)
                for provider in providers:
                    provider.worker_teardown(worker_ctx)
                del exc_info
            return self.response_from_result(result)
        finally:
            self._end()

    def _begin(self) -> None:
        if self._running == 0:
            self._idle.reset()
        self._running += 1

    def _end(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.send(None)

    def stop(self) -> None:
        super().stop()  # no new requests reach this entrypoint
        with eventlet.Timeout(STOP_GRACE_SECONDS, False):
            self._idle.wait()


STOP_GRACE_SECONDS = 30.0

inline_http = InlineHttpEntrypoint.decorator
