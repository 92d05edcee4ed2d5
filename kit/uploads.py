"""Uploaded files: size cap, content-type allow-list by magic bytes, safe names, hashes.

Pure helpers (no I/O): a service calls :func:`check_upload` and
:func:`sanitize_filename` before storing the bytes under :func:`content_hash`.
The type a client declares is never trusted on its own; the bytes decide, and a
declaration that disagrees with them is refused.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile

from kit.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

MAX_UPLOAD_BYTES = 25 * 1024 * 1024

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
GIF = "image/gif"
WEBP = "image/webp"
ZIP = "application/zip"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TEXT = "text/plain"
CSV = "text/csv"

ALLOWED_TYPES: frozenset[str] = frozenset({PDF, PNG, JPEG, GIF, WEBP, ZIP, DOCX, XLSX, TEXT, CSV})

# Recognised only to be refused with a precise message.
HTML = "text/html"
XML = "application/xml"
SVG = "image/svg+xml"
EXECUTABLE = "application/x-msdownload"
ELF = "application/x-executable"
SCRIPT = "text/x-shellscript"

# Names browsers and OSes really send for the allowed types.
_ALIASES: dict[str, str] = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "application/x-pdf": PDF,
    "application/x-zip-compressed": ZIP,
    "application/zip-compressed": ZIP,
    "application/csv": CSV,
    "text/comma-separated-values": CSV,
    "text/x-csv": CSV,
}
# Windows labels .csv files as Excel; accepted for text bytes in a .csv file only.
_EXCEL_LABEL = "application/vnd.ms-excel"

_BLOCKED_EXTENSIONS = frozenset(
    {
        "htm", "html", "xhtml", "shtml", "svg", "svgz", "xml", "xsl", "js", "mjs", "jse",
        "vbs", "vbe", "wsf", "hta", "ps1", "psm1", "bat", "cmd", "com", "exe", "dll", "scr",
        "msi", "msp", "cpl", "jar", "sh", "bash", "php", "phtml", "py", "pl", "rb", "cgi",
        "lnk", "reg", "swf", "app", "apk", "dmg", "pif",
    }
)  # fmt: skip

_MARKUP_PREFIXES = (
    "<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<style", "<title",
    "<table", "<div", "<font", "<h1", "<br", "<p", "<a", "<b", "<!--", "<svg", "<?xml",
    "<object", "<embed", "<img", "<meta", "<link", "<form",
)  # fmt: skip
# Control characters that make bytes binary rather than text (tab, LF, FF, CR are fine).
_BAD_TEXT_CONTROLS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def sniff(data: bytes) -> str | None:
    """The content type the bytes show, or None when not recognised.

    Besides the allowed types it recognises HTML/SVG/XML, Windows and ELF executables
    and ``#!`` scripts, so that they can be refused by name. Text is ``text/plain``
    (valid UTF-8, no NUL or other control characters); ``text/csv`` is a declaration
    :func:`check_upload` accepts for it.
    """
    if data.startswith(b"%PDF-"):
        return PDF
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _sniff_zip(data)
    if data.startswith(b"MZ"):
        return EXECUTABLE
    if data.startswith(b"\x7fELF"):
        return ELF
    return _sniff_text(data)


def _sniff_zip(data: bytes) -> str | None:
    """Tell OOXML documents from plain zips by their central directory (never inflated)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except Exception:  # a broken or hostile archive fails in many ways: not recognised
        return None
    if "[Content_Types].xml" in names:
        if any(name.startswith("word/") for name in names):
            return DOCX
        if any(name.startswith("xl/") for name in names):
            return XLSX
    return ZIP


def _sniff_text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if _BAD_TEXT_CONTROLS.search(text):
        return None
    head = text[:1024].lstrip().lower()
    if head.startswith("#!"):
        return SCRIPT
    for prefix in _MARKUP_PREFIXES:
        if head.startswith(prefix):
            rest = head[len(prefix) : len(prefix) + 1]
            if prefix in ("<!--", "<?xml") or rest in ("", " ", ">", "\t", "\n", "\r", "/"):
                return SVG if prefix == "<svg" else XML if prefix == "<?xml" else HTML
    return TEXT


def _media_type(declared: str | None) -> str | None:
    """``'Text/CSV; charset=utf-8'`` -> ``'text/csv'``; blank -> None."""
    if declared is None:
        return None
    base = declared.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base) or None


def _extension(filename: str) -> str:
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip().rstrip(". ")
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def check_upload(data: bytes, declared_type: str | None, filename: str) -> str:
    """The effective content type of an upload, or the reason it is refused.

    ``PayloadTooLarge`` over :data:`MAX_UPLOAD_BYTES`; ``ValidationFailed`` for an
    empty file; ``UnsupportedMediaType`` when the bytes are not an allowed type, the
    file name has an executable/markup extension, or the declared type (parameters
    ignored; missing or ``application/octet-stream`` means "trust the bytes")
    disagrees with the bytes. ``text/plain`` and ``text/csv`` are interchangeable.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            detail=f"files are limited to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB",
        )
    if not data:
        raise ValidationFailed(detail="the file is empty", errors={"file": ["must not be empty"]})
    extension = _extension(filename)
    if extension in _BLOCKED_EXTENSIONS:
        raise UnsupportedMediaType(detail=f".{extension} files are not accepted")
    sniffed = sniff(data)
    if sniffed is None or sniffed not in ALLOWED_TYPES:
        shown = sniffed or "an unrecognised format"
        raise UnsupportedMediaType(detail=f"the file is {shown}, which is not accepted")
    declared = _media_type(declared_type)
    if declared is None or declared == "application/octet-stream":
        return CSV if sniffed == TEXT and extension == "csv" else sniffed
    if sniffed == TEXT:
        if declared in (TEXT, CSV):
            return declared
        if declared == _EXCEL_LABEL and extension == "csv":
            return CSV
    elif declared == sniffed or (declared == ZIP and sniffed in (DOCX, XLSX)):
        return sniffed
    raise UnsupportedMediaType(detail=f"the file was sent as {declared} but is {sniffed}")


_RESERVED_CHARS = re.compile(r'[<>:"|?*]')
_WHITESPACE = re.compile(r"\s+")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)
MAX_FILENAME_BYTES = 200
_MAX_EXTENSION_BYTES = 16


def sanitize_filename(name: str) -> str:
    """A name safe to store and to put in ``Content-Disposition``; never empty.

    Drops directories (``/`` and ``\\``), control/format characters and ``<>:"|?*``,
    collapses whitespace, strips leading dots and trailing dots/spaces, NFC-normalises
    and caps the UTF-8 length at 200 bytes keeping the extension.
    """
    text = unicodedata.normalize("NFC", name)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _WHITESPACE.sub(" ", text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    text = _RESERVED_CHARS.sub("", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = text.lstrip(". ").rstrip(". ")
    if text.split(".", 1)[0].strip().lower() in _WINDOWS_DEVICES:
        text = "_" + text
    text = _cap_bytes(text, MAX_FILENAME_BYTES)
    return text or "file"


def _cap_bytes(text: str, limit: int) -> str:
    if len(text.encode("utf-8")) <= limit:
        return text
    stem, dot, ext = text.rpartition(".")
    suffix = dot + ext
    if not stem or len(suffix.encode("utf-8")) > _MAX_EXTENSION_BYTES:
        stem, suffix = text, ""
    room = limit - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip(". ")
    return (cut or "file") + suffix


def content_hash(data: bytes) -> str:
    """Storage key: SHA-256 of the bytes, hex."""
    return hashlib.sha256(data).hexdigest()
