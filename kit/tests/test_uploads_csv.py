"""Unit tests of upload checking, file-name sanitising and CSV export."""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
import zipfile
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from kit import csvout, uploads
from kit.errors import DomainError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed


def make_zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.writestr(name, "<xml/>" if name.endswith(".xml") else "data")
    return buffer.getvalue()


PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00;"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8 \x0e\x00\x00\x000\x01\x00\x9d\x01*\x01\x00\x01\x00"
DOCX = make_zip("[Content_Types].xml", "_rels/.rels", "word/document.xml")
XLSX = make_zip("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml")
ZIP = make_zip("notes.txt", "photos/a.jpg")
EMPTY_ZIP = b"PK\x05\x06" + b"\x00" * 18
TEXT = "Brake pads: front and rear\nCost approved by Jürgen\n".encode()
CSV = b"unit,hours\r\nT-100,3.5\r\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PDF, "application/pdf"),
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (b"GIF87a" + GIF[6:], "image/gif"),
        (WEBP, "image/webp"),
        (DOCX, DOCX_TYPE),
        (XLSX, XLSX_TYPE),
        (ZIP, "application/zip"),
        (EMPTY_ZIP, "application/zip"),
        (make_zip("word/document.xml"), "application/zip"),  # no [Content_Types].xml
        (TEXT, "text/plain"),
        (CSV, "text/plain"),
        (b"\xef\xbb\xbfwith a BOM", "text/plain"),
        (HTML, "text/html"),
        (b"  \n<HTML lang=en>", "text/html"),
        (b"<p>hi</p>", "text/html"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"<?xml version='1.0'?><a/>", "application/xml"),
        (b"#!/bin/sh\nrm -rf /\n", "text/x-shellscript"),
        (EXE, "application/x-msdownload"),
        (ELF, "application/x-executable"),
        (b"<paragraph> is not a tag we know", "text/plain"),
        (b"a < b and c > d", "text/plain"),
        (b"caf\xe9", None),  # Latin-1, not UTF-8
        (b"nul\x00inside", None),
        (b"bell\x07", None),
        (b"PK\x03\x04truncated archive", None),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"\x00\x01\x02\x03", None),
    ],
)
def test_sniff(data, expected):
    assert uploads.sniff(data) == expected


def test_allow_list_has_no_active_content():
    assert {"text/html", "image/svg+xml", "application/xml", "application/x-msdownload"}.isdisjoint(
        uploads.ALLOWED_TYPES
    )
    assert {"application/pdf", "image/png", "text/csv", DOCX_TYPE} <= uploads.ALLOWED_TYPES


@pytest.mark.parametrize(
    ("data", "declared", "filename", "effective"),
    [
        (PDF, "application/pdf", "quote.pdf", "application/pdf"),
        (PNG, "image/png", "photo.png", "image/png"),
        (PNG, "IMAGE/PNG; charset=binary", "photo.PNG", "image/png"),
        (JPEG, "image/jpg", "photo.jpg", "image/jpeg"),
        (JPEG, None, "photo.jpeg", "image/jpeg"),
        (GIF, "application/octet-stream", "anim.gif", "image/gif"),
        (WEBP, "", "pic.webp", "image/webp"),
        (DOCX, DOCX_TYPE, "quote.docx", DOCX_TYPE),
        (DOCX, "application/zip", "quote.docx", DOCX_TYPE),
        (XLSX, None, "parts.xlsx", XLSX_TYPE),
        (ZIP, "application/x-zip-compressed", "photos.zip", "application/zip"),
        (TEXT, "text/plain; charset=utf-8", "notes.txt", "text/plain"),
        (TEXT, "text/csv", "notes.txt", "text/csv"),
        (CSV, "text/csv", "hours.csv", "text/csv"),
        (CSV, "text/plain", "hours.csv", "text/plain"),
        (CSV, None, "hours.csv", "text/csv"),
        (CSV, "application/octet-stream", "hours.CSV", "text/csv"),
        (CSV, "application/vnd.ms-excel", "hours.csv", "text/csv"),
        (TEXT, None, "README", "text/plain"),
    ],
)
def test_accepted_uploads(data, declared, filename, effective):
    assert uploads.check_upload(data, declared, filename) == effective


@pytest.mark.parametrize(
    ("data", "declared", "filename"),
    [
        (PNG, "application/pdf", "quote.pdf"),  # bytes say PNG
        (PDF, "image/png", "photo.png"),
        (ZIP, DOCX_TYPE, "quote.docx"),
        (DOCX, XLSX_TYPE, "sheet.xlsx"),
        (TEXT, "application/pdf", "quote.pdf"),
        (TEXT, "application/vnd.ms-excel", "notes.txt"),
        (HTML, "text/html", "page.html"),
        (HTML, "text/plain", "page.txt"),
        (HTML, None, "page"),
        (b"<svg onload=alert(1)>", "image/svg+xml", "logo.svg"),
        (b"<svg onload=alert(1)>", "text/plain", "logo.txt"),
        (EXE, "application/x-msdownload", "setup.exe"),
        (EXE, "application/octet-stream", "setup.bin"),
        (EXE, "application/pdf", "setup.pdf"),
        (ELF, None, "tool"),
        (b"#!/usr/bin/env python\nprint(1)\n", "text/plain", "run.txt"),
        (b"caf\xe9", "text/plain", "latin1.txt"),
        (b"\x00\x01binary", None, "blob.bin"),
        (PNG, "image/png", "photo.html"),  # dangerous extension
        (TEXT, "text/plain", "notes.js"),
        (PDF, "application/pdf", "quote.exe."),
        (PDF, "application/pdf", "dir\\quote.bat"),
        (PDF, "text/html", "quote.pdf"),
    ],
)
def test_refused_uploads(data, declared, filename):
    with pytest.raises(UnsupportedMediaType) as err:
        uploads.check_upload(data, declared, filename)
    assert err.value.code == "unsupported_media_type"


def test_size_cap():
    assert uploads.MAX_UPLOAD_BYTES == 25 * 1024 * 1024
    at_cap = b"a" * uploads.MAX_UPLOAD_BYTES
    assert uploads.check_upload(at_cap, "text/plain", "big.txt") == "text/plain"
    with pytest.raises(PayloadTooLarge) as err:
        uploads.check_upload(at_cap + b"a", "text/plain", "big.txt")
    assert err.value.code == "payload_too_large"
    with pytest.raises(PayloadTooLarge):
        uploads.check_upload(PDF + b"\x00" * uploads.MAX_UPLOAD_BYTES, None, "big.pdf")


def test_empty_file_is_invalid():
    with pytest.raises(ValidationFailed) as err:
        uploads.check_upload(b"", "text/plain", "empty.txt")
    assert err.value.errors == {"file": ["must not be empty"]}


@given(st.binary(max_size=512))
@example(b"PK\x03\x04")
@example(b"PK\x05\x06" + b"\xff" * 18)
@example(b"RIFF")
def test_sniff_never_raises(data):
    result = uploads.sniff(data)
    assert result is None or isinstance(result, str)
    result = uploads.sniff(b"PK\x03\x04" + data)
    assert result in (None, "application/zip", DOCX_TYPE, XLSX_TYPE)
    uploads.sniff(data + EMPTY_ZIP)


@given(
    st.binary(max_size=256),
    st.one_of(st.none(), st.text(max_size=40), st.sampled_from(sorted(uploads.ALLOWED_TYPES))),
    st.text(max_size=60),
)
def test_check_upload_only_accepts_allowed_types_and_only_raises_domain_errors(
    data, declared, filename
):
    try:
        effective = uploads.check_upload(data, declared, filename)
    except DomainError:
        return
    assert effective in uploads.ALLOWED_TYPES


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\System32\\cmd.exe", "cmd.exe"),
        ("C:\\Users\\ann\\Quote 12.pdf", "Quote 12.pdf"),
        ("/var/tmp/", "file"),
        ("a\x00b.txt", "ab.txt"),
        ("line\nbreak\r\n.txt", "line break .txt"),
        (".htaccess", "htaccess"),
        ("...hidden.txt", "hidden.txt"),
        (".", "file"),
        ("..", "file"),
        ("", "file"),
        ("   ", "file"),
        ("\x00\x01\x02", "file"),
        ('what<>:"|?*.txt', "what.txt"),
        ("my   report \t 2024.pdf", "my report 2024.pdf"),
        ("e\u0301te\u0301.txt", "\u00e9t\u00e9.txt"),  # NFC
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override removed
        ("zero\u200bwidth.png", "zerowidth.png"),
        ("📄 Angebot für Müller.pdf", "📄 Angebot für Müller.pdf"),
        ("trailing dots...", "trailing dots"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("console.txt", "console.txt"),
    ],
)
def test_sanitize_filename(raw, clean):
    assert uploads.sanitize_filename(raw) == clean


def test_long_names_are_capped_keeping_the_extension():
    long_ascii = uploads.sanitize_filename("a" * 300 + ".pdf")
    assert long_ascii == "a" * 196 + ".pdf"
    long_multibyte = uploads.sanitize_filename("é" * 300 + ".docx")
    assert long_multibyte.endswith(".docx")
    assert len(long_multibyte.encode()) <= 200
    assert set(long_multibyte[: -len(".docx")]) == {"é"}
    long_extension = uploads.sanitize_filename("a." + "b" * 300)
    assert len(long_extension.encode()) == 200
    assert long_extension.startswith("a.b")


@given(st.text(max_size=400))
@example("../" * 100)
@example("\\..\\.." + "é" * 250 + ".pdf")
@example("a" * 199 + ".." + "b")
def test_sanitized_names_are_always_safe(raw):
    name = uploads.sanitize_filename(raw)
    assert name
    assert name not in (".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in name)
    assert not set('<>:"|?*') & set(name)
    assert len(name.encode("utf-8")) <= 200
    assert name == name.strip()
    assert uploads.sanitize_filename(name) == name


def test_content_hash():
    assert uploads.content_hash(b"") == hashlib.sha256(b"").hexdigest()
    assert uploads.content_hash(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


# ------------------------------------------------------------------------------------
# CSV


@pytest.mark.parametrize(
    ("cell", "out"),
    [
        (None, ""),
        ("", ""),
        ("plain", "plain"),
        (42, "42"),
        (-7, "'-7"),
        (Decimal("-1.50"), "'-1.50"),
        (True, "True"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("a=b", "a=b"),
        ("'quoted", "'quoted"),
    ],
)
def test_neutralize(cell, out):
    assert csvout.neutralize(cell) == out


def test_to_csv_is_rfc4180():
    text = csvout.to_csv(
        ["id", "description", "po"],
        [
            ["q1", 'Hose, "hydraulic"', None],
            ["q2", "two\nlines", "=cmd|' /C calc'!A0"],
        ],
    )
    assert text == (
        "id,description,po\r\n"
        'q1,"Hose, ""hydraulic""",\r\n'
        "q2,\"two\nlines\",'=cmd|' /C calc'!A0\r\n"
    )


def test_to_csv_neutralizes_the_header_and_accepts_any_iterable():
    rows = (("=1", n) for n in range(2))
    assert csvout.to_csv(["@who"], rows) == "'@who\r\n'=1,0\r\n'=1,1\r\n"


cells = st.one_of(st.none(), st.text(), st.integers(), st.booleans())


@given(
    st.lists(st.text(max_size=10), max_size=4), st.lists(st.lists(cells, max_size=5), max_size=6)
)
@example(["=a"], [["-1", "+2", "@3", "\t4", "\r5", "\n6"]])
def test_csv_round_trip_never_yields_a_formula(header, rows):
    text = csvout.to_csv(header, rows)
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [[csvout.neutralize(c) for c in row] for row in [header, *rows]]
    for row in parsed:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert text.count("\r\n") >= len(rows) + 1
    assert text.endswith("\r\n")
