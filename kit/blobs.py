"""The blob store: content-addressed files that every service process can reach.

One interface for all services: ``put`` (bytes in, SHA-256 hex digest out), ``get``,
``open``, ``exists`` and ``size`` by that digest. Any process builds it with
:func:`store_from_settings` (nameko services inject it with :class:`Blobs`); all of
them point ``BLOB_DIR`` at the same directory (one volume mounted by every service pod
in Kubernetes), so a file stored by the gateway is read by notify or estimates.

Files live at ``<root>/<aa>/<bb>/<sha256>``: the name is the SHA-256 of the bytes, so
the same content is stored once and a name can never point outside the root (only
64 lowercase hex characters are accepted as a name). Writes go to a temporary file in
the target directory, are fsynced and then renamed into place, so a reader never sees
a half-written file and a crash leaves at most a stray temporary file behind.

The root is a plain directory: it must not be inside anything a web server serves.
A store refuses anything larger than its ``max_bytes`` (``PayloadTooLarge``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from nameko.extensions import DependencyProvider

from kit.config import Settings, read_settings
from kit.errors import NotFound, PayloadTooLarge
from kit.uploads import MAX_UPLOAD_BYTES, content_hash

FILE_MODE = 0o640
DIR_MODE = 0o750
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_BLOB_BYTES = MAX_UPLOAD_BYTES
"""The default cap on one blob: the largest file the gateway accepts."""


class InvalidBlobId(ValueError):
    """Not a SHA-256 hex digest: refused before any path is built from it."""


class BlobStore:
    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = MAX_BLOB_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes

    # --- public -----------------------------------------------------------------------
    def put(self, data: bytes) -> str:
        """Store ``data`` (once) and return its SHA-256 hex digest.

        ``PayloadTooLarge`` over ``max_bytes``; nothing is written then.
        """
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(detail=f"files are limited to {self.max_bytes} bytes")
        digest = content_hash(data)
        target = self._path(digest)
        if target.is_file():
            return digest
        directory = target.parent
        self._make_dirs(directory)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
                os.fchmod(fh.fileno(), FILE_MODE)
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(directory)
        return digest

    def open(self, sha256: str) -> BinaryIO:
        """The stored bytes for reading; ``NotFound`` when there are none."""
        try:
            return open(self._path(sha256), "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound("The file is no longer available.") from exc

    def get(self, sha256: str) -> bytes:
        """The stored bytes; ``NotFound`` when there are none."""
        with self.open(sha256) as fh:
            return fh.read()

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        """The stored size in bytes; ``NotFound`` when there is no such blob."""
        try:
            return self._path(sha256).stat().st_size
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound("The file is no longer available.") from exc

    def ensure_root(self) -> None:
        """Create the root (mode 0750) if it is missing."""
        self._make_dirs(self.root)

    def path_of(self, sha256: str) -> Path:
        """Where a digest is (or would be) stored."""
        return self._path(sha256)

    # --- internals --------------------------------------------------------------------
    def _path(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise InvalidBlobId("a blob id is a SHA-256 digest in lowercase hex")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def _make_dirs(self, directory: Path) -> None:
        # Created level by level so that each new directory gets DIR_MODE whatever the
        # umask; existing directories are left as they are.
        missing = []
        current = directory
        while not current.exists():
            missing.append(current)
            if current == current.parent:
                break
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(path, DIR_MODE)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def store_from_settings(settings: Settings | None = None) -> BlobStore:
    """The process's store, rooted at ``BLOB_DIR`` (``Settings.blob_dir``), root created."""
    store = BlobStore((settings or read_settings()).blob_dir)
    store.ensure_root()
    return store


class Blobs(DependencyProvider):
    """One :class:`BlobStore` per process, rooted at ``BLOB_DIR`` (``Settings.blob_dir``)."""

    def __init__(self) -> None:
        self.store: BlobStore | None = None

    def setup(self) -> None:
        self.store = store_from_settings()

    def get_dependency(self, worker_ctx: Any) -> BlobStore:
        assert self.store is not None
        return self.store
