"""Pure rules for files attached to email: which an event asks for, and how much fits.

An event asks for attachments with an optional ``attachments`` list in its data, each
``{"sha256", "filename", "content_type"}`` naming a file in the blob store
(contracts.notify.Attachment is the schema event contracts include). Notify passes the
list to the event's email deliveries only (an SMS or an in-app item carries no file),
and reads the bytes from the blob store when it sends. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

FIELD: Final = "attachments"
MAX_ATTACHMENTS: Final = 10
MAX_MESSAGE_BYTES: Final = 15 * 1024 * 1024
"""All attachments of one message together (before base64): what mail servers accept."""
MAX_FILENAME_CHARS: Final = 200

SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
CONTENT_TYPE_RE: Final = re.compile(
    r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$"
)
_UNSAFE_IN_NAME: Final = re.compile(r"[\x00-\x1f\x7f/\\]")


class AttachmentError(ValueError):
    """An attachment that can never be sent (the delivery fails for good)."""


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """A file in the blob store, as the email shows it."""

    sha256: str
    filename: str
    content_type: str

    def __post_init__(self) -> None:
        if not SHA256_RE.fullmatch(self.sha256):
            raise AttachmentError("an attachment's sha256 is 64 lowercase hex digits")
        if not self.filename.strip() or len(self.filename) > MAX_FILENAME_CHARS:
            raise AttachmentError(
                f"an attachment needs a file name of 1-{MAX_FILENAME_CHARS} characters"
            )
        if _UNSAFE_IN_NAME.search(self.filename):
            raise AttachmentError("an attachment's file name has no path or control characters")
        if not CONTENT_TYPE_RE.fullmatch(self.content_type):
            raise AttachmentError(f"not a content type: {self.content_type!r}")

    @property
    def maintype(self) -> str:
        return self.content_type.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.content_type.split("/", 1)[1]

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def requested(data: Mapping[str, Any]) -> tuple[AttachmentRef, ...]:
    """The attachments an event's data asks for (none when it has no list).

    ``AttachmentError`` for a malformed list: a producer's bug, never guessed around.
    """
    raw = data.get(FIELD)
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise AttachmentError(f"{FIELD} must be a list")
    if len(raw) > MAX_ATTACHMENTS:
        raise AttachmentError(f"at most {MAX_ATTACHMENTS} attachments per message")
    refs = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise AttachmentError("each attachment is an object")
        try:
            refs.append(
                AttachmentRef(
                    str(item["sha256"]), str(item["filename"]), str(item["content_type"]).lower()
                )
            )
        except KeyError as exc:
            raise AttachmentError(f"an attachment needs {exc.args[0]}") from exc
    return tuple(refs)


def stored(rows: Iterable[Mapping[str, Any]] | None) -> tuple[AttachmentRef, ...]:
    """The references kept on a delivery row (JSON), back as values."""
    return tuple(AttachmentRef(r["sha256"], r["filename"], r["content_type"]) for r in rows or ())


def check_size(sizes: Iterable[int]) -> None:
    """``AttachmentError`` when the files together exceed :data:`MAX_MESSAGE_BYTES`."""
    total = sum(sizes)
    if total > MAX_MESSAGE_BYTES:
        raise AttachmentError(
            f"attachments total {total} bytes, more than the {MAX_MESSAGE_BYTES} a message may carry"
        )
