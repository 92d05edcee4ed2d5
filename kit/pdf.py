"""Printable documents (estimates, invoices, summaries) as real PDF bytes.

A service describes *what* to print with :class:`Document` (a title, a key/value header
block, a table of lines whose money columns are right-aligned, paragraphs, a signature
block and a footer reference); :func:`render` lays it out with ReportLab. Text is drawn
in the Bitstream Vera TrueType fonts that ReportLab ships (embedded in the file, so
accents, ``€``, ``£`` and typographic dashes print without any network or system font).
Cells are strings the caller formats (money through the kit's money type), so this
module decides layout only. Output is byte-for-byte reproducible for the same
document, which lets a caller store it by content hash and print that hash in the
footer of a later copy.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

import reportlab
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

Align = Literal["left", "right"]
PAGE_SIZES = {"A4": A4, "letter": LETTER}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_SIGNATURE_BYTES = 512 * 1024
FONT = "PorticoSans"
FONT_BOLD = "PorticoSans-Bold"
_FONT_DIR = Path(reportlab.__file__).resolve().parent / "fonts"
_MARGIN = 18 * mm


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the lines table; ``align="right"`` for money and quantities."""

    title: str
    align: Align = "left"
    weight: float = 1.0  # share of the table width

    def __post_init__(self) -> None:
        if self.align not in ("left", "right"):
            raise ValueError(f"unknown alignment {self.align!r}")
        if not self.weight > 0:
            raise ValueError("a column weight must be positive")


@dataclass(frozen=True, slots=True)
class Signature:
    """Who signs (or signed): a PNG of the signature, or a line to sign on paper."""

    label: str = "Signature"
    name: str = ""
    signed_at: str = ""
    image_png: bytes | None = None

    def __post_init__(self) -> None:
        if self.image_png is not None:
            if not self.image_png.startswith(PNG_MAGIC):
                raise ValueError("a signature image must be a PNG")
            if len(self.image_png) > MAX_SIGNATURE_BYTES:
                raise ValueError(f"a signature image is limited to {MAX_SIGNATURE_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Document:
    title: str
    header: Sequence[tuple[str, str]] = ()
    columns: Sequence[Column] = ()
    lines: Sequence[Sequence[str]] = ()
    totals: Sequence[tuple[str, str]] = ()  # label, amount: under the last column
    paragraphs: Sequence[str] = ()
    signature: Signature | None = None
    footer: str = ""  # a reference or content hash, printed on every page
    page_size: str = "A4"
    metadata: dict[str, str] = field(default_factory=dict)  # author, subject

    def __post_init__(self) -> None:
        if not self.title.strip():
            raise ValueError("a document needs a title")
        if self.page_size not in PAGE_SIZES:
            raise ValueError(f"unknown page size {self.page_size!r}")
        width = len(self.columns)
        if self.lines and not width:
            raise ValueError("lines need columns")
        for number, line in enumerate(self.lines, 1):
            if len(line) != width:
                raise ValueError(f"line {number} has {len(line)} cells, expected {width}")
        if self.totals and not width:
            raise ValueError("totals need columns")


def _register_fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    pdfmetrics.registerFont(TTFont(FONT, str(_FONT_DIR / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont(FONT_BOLD, str(_FONT_DIR / "VeraBd.ttf")))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=FONT_BOLD)


_STYLES = {
    "title": ParagraphStyle("title", fontName=FONT_BOLD, fontSize=18, leading=22, spaceAfter=10),
    "body": ParagraphStyle("body", fontName=FONT, fontSize=10, leading=13, spaceAfter=6),
    "cell": ParagraphStyle("cell", fontName=FONT, fontSize=9, leading=11),
    "cell_right": ParagraphStyle(
        "cell_right", fontName=FONT, fontSize=9, leading=11, alignment=TA_RIGHT
    ),
    "head": ParagraphStyle("head", fontName=FONT_BOLD, fontSize=9, leading=11),
    "head_right": ParagraphStyle(
        "head_right", fontName=FONT_BOLD, fontSize=9, leading=11, alignment=TA_RIGHT
    ),
    "key": ParagraphStyle("key", fontName=FONT_BOLD, fontSize=9, leading=12),
    "value": ParagraphStyle("value", fontName=FONT, fontSize=9, leading=12),
}


def _text(value: str) -> str:
    """Plain text as ReportLab paragraph markup: escaped, line breaks kept."""
    return escape(str(value)).replace("\r\n", "\n").replace("\n", "<br/>")


def _para(value: str, style: str) -> Paragraph:
    return Paragraph(_text(value), _STYLES[style])


def _header_block(doc: Document, width: float) -> list[Any]:
    if not doc.header:
        return []
    rows = [[_para(key, "key"), _para(value, "value")] for key, value in doc.header]
    table = Table(rows, colWidths=[width * 0.3, width * 0.7], hAlign="LEFT")
    table.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)])
    )
    return [table, Spacer(1, 6 * mm)]


def _lines_table(doc: Document, width: float) -> list[Any]:
    if not doc.columns:
        return []
    total_weight = sum(c.weight for c in doc.columns)
    widths = [width * c.weight / total_weight for c in doc.columns]
    right = [c.align == "right" for c in doc.columns]
    rows: list[list[Any]] = [
        [
            _para(c.title, "head_right" if r else "head")
            for c, r in zip(doc.columns, right, strict=True)
        ]
    ]
    for line in doc.lines:
        rows.append(
            [
                _para(cell, "cell_right" if r else "cell")
                for cell, r in zip(line, right, strict=True)
            ]
        )
    last = len(doc.columns) - 1
    for label, amount in doc.totals:
        blank: list[Any] = [""] * len(doc.columns)
        blank[max(last - 1, 0)] = _para(label, "head_right")
        blank[last] = _para(amount, "head_right")
        rows.append(blank)
    style = [
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
        (
            "ROWBACKGROUNDS",
            (0, 1),
            (-1, len(doc.lines)),
            [colors.white, colors.HexColor("#f2f2f2")],
        ),
    ]
    if doc.totals:
        style.append(
            ("LINEABOVE", (0, len(doc.lines) + 1), (-1, len(doc.lines) + 1), 0.8, colors.black)
        )
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(TableStyle(style))
    return [table, Spacer(1, 6 * mm)]


def _signature_block(signature: Signature, width: float) -> list[Any]:
    if signature.image_png is not None:
        mark: Any = Image(
            io.BytesIO(signature.image_png), width=60 * mm, height=20 * mm, kind="proportional"
        )
        mark.hAlign = "LEFT"
    else:
        mark = Spacer(1, 16 * mm)  # room to sign on paper, above the line
    caption = " · ".join(part for part in (signature.name, signature.signed_at) if part)
    rule = Table([[""]], colWidths=[min(80 * mm, width)], rowHeights=[1], hAlign="LEFT")
    rule.setStyle(TableStyle([("LINEABOVE", (0, 0), (-1, -1), 0.6, colors.black)]))
    parts = [_para(signature.label, "key"), mark, rule]
    if caption:
        parts.append(_para(caption, "value"))
    return [Spacer(1, 8 * mm), KeepTogether(parts)]


def render(doc: Document) -> bytes:
    """The document as PDF bytes (PDF 1.4, fonts embedded, reproducible)."""
    _register_fonts()
    buffer = io.BytesIO()
    page_width, _ = PAGE_SIZES[doc.page_size]
    template = SimpleDocTemplate(
        buffer,
        pagesize=PAGE_SIZES[doc.page_size],
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_MARGIN + 6 * mm,
        title=doc.title,
        author=doc.metadata.get("author", ""),
        subject=doc.metadata.get("subject", ""),
        creator="Portico",
        invariant=1,  # no timestamps or random ids: same document, same bytes
    )
    width = page_width - 2 * _MARGIN
    story: list[Any] = [_para(doc.title, "title")]
    story += _header_block(doc, width)
    story += _lines_table(doc, width)
    story += [_para(text, "body") for text in doc.paragraphs]
    if doc.signature is not None:
        story += _signature_block(doc.signature, width)

    def footer(canvas: Any, frame_doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7.5)
        y = _MARGIN - 2 * mm
        if doc.footer:
            canvas.drawString(_MARGIN, y, doc.footer)
        canvas.drawRightString(page_width - _MARGIN, y, f"Page {frame_doc.page}")
        canvas.restoreState()

    template.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()
