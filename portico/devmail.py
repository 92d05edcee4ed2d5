"""Local SMTP catcher for development and tests.

    python -m portico.devmail --host 127.0.0.1 --port 1025 --dir var/mail

Every message received is stored as ``<utc timestamp>-<counter>-<short uuid>.eml``
in the directory, written to a temporary file first and moved into place with
``os.replace`` so readers never see a partial message. The SMTP envelope is kept
in ``X-Devmail-*`` headers prepended to the stored message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import tempfile
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller

log = logging.getLogger("portico.devmail")

SERVER_HOSTNAME = "portico-devmail"


def _header_safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


class MailboxHandler:
    """aiosmtpd handler that stores each message as an ``.eml`` file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def _next_name(self) -> str:
        with self._lock:
            number = next(self._counter)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}-{number:06d}-{uuid.uuid4().hex[:8]}.eml"

    def store(self, content: bytes, mail_from: str, rcpt_tos: Sequence[str], peer: Any) -> Path:
        """Write one message atomically and return its path."""
        envelope = (
            f"X-Devmail-Peer: {_header_safe(str(peer))}\r\n"
            f"X-Devmail-Mail-From: {_header_safe(mail_from)}\r\n"
            f"X-Devmail-Rcpt-To: {_header_safe(', '.join(rcpt_tos))}\r\n"
        ).encode()
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / self._next_name()
        fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(envelope)
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return final

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        mail_from = envelope.mail_from or ""
        rcpt_tos = list(envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        try:
            path = await loop.run_in_executor(
                None, self.store, content, mail_from, rcpt_tos, session.peer
            )
        except OSError as exc:
            log.error("could not store message from %s: %s", mail_from, exc)
            return "451 Requested action aborted: local error in processing"
        subject = BytesHeaderParser(policy=policy.default).parsebytes(content).get("Subject", "")
        log.info(
            "stored %s from=%s to=%s subject=%r bytes=%d",
            path.name,
            mail_from,
            ",".join(rcpt_tos),
            str(subject),
            len(content),
        )
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """Controller that supports ``port=0`` (learns the bound port before its self-check)."""

    def _trigger_server(self) -> None:
        sockets = getattr(self.server, "sockets", None)
        if self.port == 0 and sockets:
            self.port = sockets[0].getsockname()[1]
        super()._trigger_server()


class DevMailServer:
    """An SMTP server on ``host:port`` that stores every message in ``directory``.

    ``port=0`` picks a free port; read :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1025,
        directory: str | os.PathLike[str] = "var/mail",
    ) -> None:
        self.host = host
        self.directory = Path(directory)
        self._requested_port = port
        self._handler = MailboxHandler(self.directory)
        self._controller: _Controller | None = None

    @property
    def port(self) -> int:
        if self._controller is not None:
            return int(self._controller.port)
        return self._requested_port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is not None:
            raise RuntimeError("devmail server already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        controller = _Controller(
            self._handler,
            hostname=self.host,
            port=self._requested_port,
            server_hostname=SERVER_HOSTNAME,
        )
        controller.start()
        self._controller = controller
        log.info("listening on %s:%d, storing mail in %s", self.host, self.port, self.directory)

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
            log.info("stopped")

    def messages(self) -> list[EmailMessage]:
        return read_mailbox(self.directory)

    def __enter__(self) -> DevMailServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def read_mailbox(directory: str | os.PathLike[str]) -> list[EmailMessage]:
    """Every stored message in ``directory``, oldest first (empty if it does not exist).

    Files keep the bytes as received (CRLF line ends); they are parsed with
    ``\n`` line ends so text parts read back the way they were written.
    """
    path = Path(directory)
    if not path.is_dir():
        return []
    parser = BytesParser(policy=policy.default)
    return [
        cast(EmailMessage, parser.parsebytes(eml.read_bytes().replace(b"\r\n", b"\n")))
        for eml in sorted(path.glob("*.eml"))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portico.devmail", description="Local SMTP catcher for development."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=1025, help="port to listen on (0: any)")
    parser.add_argument("--dir", default="var/mail", help="where to store .eml files")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s devmail %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's per-command chatter
    stopping = threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = DevMailServer(args.host, args.port, args.dir)
    try:
        try:
            server.start()
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
            return 1
        while not stopping.wait(0.5):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
