"""Tenant-written templates, rendered with hard limits on time, memory and size.

A tenant's template override is code: Jinja's sandbox stops it from reaching Python
internals or mutating data, but not from spending CPU or memory (``~`` doubling a
string, ``center(10**7)``, loops nested three deep ran for seconds). Under eventlet
a CPU-bound render freezes every greenthread of the process, so no in-process check
can bound it: each override is rendered in a separate worker process instead, which
the caller kills when the time is up. The worker also has an address-space limit (a
huge allocation fails inside it with ``MemoryError``) and stops any output that grows
past ``max_chars``. The caller then falls back to the built-in template.

The worker is one long-lived child (``python -m services.notify.sandbox``) speaking
JSON lines on stdin/stdout, started on the first override and replaced after a kill.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from kit.config import env_float, env_int

log = logging.getLogger(__name__)

RENDER_TIMEOUT_SECONDS = env_float("NOTIFY_RENDER_TIMEOUT_SECONDS", 1.0)
RENDER_MEMORY_MB = env_int("NOTIFY_RENDER_MEMORY_MB", 512)
MAX_OUTPUT_CHARS = env_int("NOTIFY_RENDER_MAX_CHARS", 100000)
STARTUP_TIMEOUT_SECONDS = 20.0
_READY = "ready"


class TemplateLimitError(Exception):
    """A tenant template failed, broke a limit or was refused by the sandbox."""


class TenantSandbox(ImmutableSandboxedEnvironment):
    """Sandbox for tenant-written templates.

    On top of Jinja's sandbox (no private/dunder attributes, no mutation of data),
    refuses string/list repetition and powers that would allocate huge values, and
    keeps ``range`` small. Cheap first line only: the worker process holds the limits.
    """

    intercepted_binops = frozenset({"*", "**"})
    max_repeat_size = 10_000
    max_exponent = 100

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _small_range

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > self.max_repeat_size
                ):
                    raise SecurityError("sequence repetition is too large")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(right) > self.max_exponent
        ):
            raise SecurityError("exponent is too large")
        return super().call_binop(context, operator, left, right)


_MAX_RANGE = 1000


def _small_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > _MAX_RANGE:
        raise SecurityError(f"range is limited to {_MAX_RANGE} items")
    return rng


def sandboxes() -> dict[bool, TenantSandbox]:
    """One environment per escaping mode (html parts are autoescaped)."""
    return {
        escape: TenantSandbox(
            autoescape=escape, undefined=jinja2.Undefined, trim_blocks=True, lstrip_blocks=True
        )
        for escape in (False, True)
    }


def render_limited(template: jinja2.Template, ctx: dict[str, Any], max_chars: int) -> str:
    """Render while streaming, refusing output longer than ``max_chars``."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(ctx):
        size += len(chunk)
        if size > max_chars:
            raise TemplateLimitError(f"output is longer than {max_chars} characters")
        parts.append(chunk)
    return "".join(parts)


# ----------------------------------------------------------------------- the worker


def _limit_memory(megabytes: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX: the time limit still holds
        return
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def serve(stdin: Any = None, stdout: Any = None) -> None:
    """The worker's loop: one JSON request a line in, one JSON reply a line out."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    envs = sandboxes()
    compiled: OrderedDict[tuple[bool, str], jinja2.Template] = OrderedDict()
    stdout.write(_READY + "\n")
    stdout.flush()
    for line in stdin:
        try:
            request = json.loads(line)
            key = (bool(request["html"]), str(request["source"]))
            template = compiled.get(key)
            if template is None:
                template = envs[key[0]].from_string(key[1])
                compiled[key] = template
                while len(compiled) > 256:
                    compiled.popitem(last=False)
            out = render_limited(template, request["ctx"], int(request["max_chars"]))
            reply: dict[str, str] = {"out": out}
        except MemoryError:
            reply = {"error": "MemoryError: the template needs too much memory"}
        except Exception as exc:  # noqa: BLE001 - tenant code: every failure is a reply
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """The worker: its memory limit in MB is its one argument (the caller's setting)."""
    args = sys.argv[1:] if argv is None else argv
    _limit_memory(int(args[0]) if args else RENDER_MEMORY_MB)
    serve()


# ----------------------------------------------------------------------- the caller


class SandboxProcess:
    """Client of one worker process; renders one template at a time.

    Waits with ``select`` (green under eventlet), so the caller's process keeps
    serving while the worker computes, and kills the worker when ``timeout`` passes.
    A source that broke a limit is remembered and refused at once next time.
    """

    def __init__(
        self,
        timeout: float = RENDER_TIMEOUT_SECONDS,
        memory_mb: int = RENDER_MEMORY_MB,
        max_chars: int = MAX_OUTPUT_CHARS,
    ) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_chars = max_chars
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._refused: OrderedDict[tuple[bool, str], str] = OrderedDict()
        self.started = 0  # how many workers were started (tests, metrics)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def render(self, source: str, html: bool, ctx: dict[str, Any]) -> str:
        """The rendered text, or :class:`TemplateLimitError` saying what went wrong."""
        key = (html, source)
        with self._lock:
            refused = self._refused.get(key)
            if refused is not None:
                raise TemplateLimitError(refused)
            request = {"source": source, "html": html, "ctx": ctx, "max_chars": self.max_chars}
            try:
                reply = self._ask(json.dumps(request, default=str).encode() + b"\n")
            except TemplateLimitError as exc:
                self._remember(key, str(exc))
                raise
        if "error" in reply:
            if reply["error"].startswith(("MemoryError", "TemplateLimitError")):
                with self._lock:
                    self._remember(key, reply["error"])
            raise TemplateLimitError(reply["error"])
        return str(reply["out"])

    def close(self) -> None:
        with self._lock:
            self._kill()

    # -- internals (called with the lock held) ---------------------------------------

    def _remember(self, key: tuple[bool, str], reason: str) -> None:
        self._refused[key] = reason
        while len(self._refused) > 256:
            self._refused.popitem(last=False)

    def _ask(self, request: bytes) -> dict[str, Any]:
        proc = self._ensure_started()
        deadline = time.monotonic() + self.timeout
        try:
            self._write(proc, request, deadline)
            line = self._read_line(proc, deadline)
        except TimeoutError as exc:
            self._kill()
            raise TemplateLimitError(f"rendering took longer than {self.timeout:g}s") from exc
        except OSError as exc:  # the worker died (e.g. killed by the kernel)
            self._kill()
            raise TemplateLimitError(f"the template worker failed: {exc}") from exc
        return dict(json.loads(line))

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._kill()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "services.notify.sandbox", str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.started += 1
        try:
            ready = self._read_line(self._proc, time.monotonic() + STARTUP_TIMEOUT_SECONDS)
        except (TimeoutError, OSError) as exc:
            self._kill()
            raise TemplateLimitError(f"the template worker did not start: {exc}") from exc
        if ready.strip() != _READY:
            self._kill()
            raise TemplateLimitError("the template worker did not start")
        return self._proc

    def _write(self, proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> None:
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            _, writable, _ = select.select([], [fd], [], remaining)
            if not writable:
                raise TimeoutError
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue

    def _read_line(self, proc: subprocess.Popen[bytes], deadline: float) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise TimeoutError
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise OSError("the template worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8")

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not refused
            log.warning("template worker %s did not exit", proc.pid)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


_shared: SandboxProcess | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> SandboxProcess:
    """The process-wide worker client (started lazily, on the first override)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SandboxProcess()
        return _shared


if __name__ == "__main__":
    main()
