"""``inline_http`` (kit.http): no nameko worker per request, the dependencies still
injected, at most ``max_workers`` methods at once, and open streams hold no slot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import eventlet
import eventlet.event
from eventlet.green import socket
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from kit.http import inline_http

RELEASE = eventlet.event.Event()
SEEN: list[str] = []


class Hooked(DependencyProvider):
    def get_dependency(self, worker_ctx: Any) -> str:
        return f"dep-for-{worker_ctx.entrypoint.method_name}"

    def worker_setup(self, worker_ctx: Any) -> None:
        SEEN.append("setup")

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        SEEN.append("result" if exc_info is None else f"error {type(exc_info[1]).__name__}")

    def worker_teardown(self, worker_ctx: Any) -> None:
        SEEN.append("teardown")


class Streams:
    name = "streams"
    dep = Hooked()

    @inline_http("GET", "/stream")
    def stream(self, request: Request) -> Response:
        def body() -> Iterator[bytes]:
            yield b"open\n"
            RELEASE.wait()
            yield b"done\n"

        request.environ["eventlet.minimum_write_chunk_size"] = 0
        return Response(body(), mimetype="text/plain", direct_passthrough=True)

    @inline_http("GET", "/ping")
    def ping(self, request: Request) -> Response:
        return Response(self.dep, mimetype="text/plain")

    @inline_http("GET", "/boom")
    def boom(self, request: Request) -> Response:
        raise RuntimeError("boom")


def _get(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def test_streams_hold_no_slot_and_dependencies_are_injected(
    container_factory: Any, web_config: Any
) -> None:
    container = container_factory(Streams, {**web_config, "max_workers": 2})
    container.start()
    port = int(web_config["WEB_SERVER_ADDRESS"].rsplit(":", 1)[1])
    streams = [_get(port, "/stream") for _ in range(50)]  # 25 x max_workers
    try:
        for sock in streams:
            assert b"open" in _read_until(sock, b"open\n")
        SEEN.clear()
        with _get(port, "/ping") as ping:
            answer = _read_until(ping, b"dep-for-ping")
        assert answer.startswith(b"HTTP/1.1 200")
        assert SEEN == ["setup", "result", "teardown"]
        SEEN.clear()
        with _get(port, "/boom") as boom:
            answer = _read_until(boom, b"internal_error")
        assert answer.startswith(b"HTTP/1.1 500") and b"application/problem+json" in answer
        assert SEEN == ["setup", "error RuntimeError", "teardown"]
        RELEASE.send(None)
        for sock in streams:
            assert b"done" in _read_until(sock, b"done\n")
    finally:
        for sock in streams:
            sock.close()
