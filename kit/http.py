"""nameko's ``@http``, with Nagle's algorithm off on every connection.

A response larger than the server's write buffer leaves in two segments; with Nagle on,
the second waits for the client's delayed ACK of the first (40 ms on Linux): every
list page paid that. Every service uses this ``http`` so they share one listener.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer


class NoDelayWebServer(WebServer):
    def process_request(self, sock: Any, address: Any) -> None:
        with contextlib.suppress(OSError):  # not a TCP socket: nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(sock, address)


class HttpEntrypoint(HttpRequestHandler):
    server = NoDelayWebServer()


http = HttpEntrypoint.decorator
