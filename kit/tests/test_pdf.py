"""The PDF renderer: the output parses as PDF, holds the text, and draws a real page."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pypdfium2 as pdfium
import pytest
from PIL import Image as PILImage
from pypdf import PdfReader

from kit.pdf import Column, Document, Signature, render

MONEY = (Column("Description", weight=4), Column("Qty", "right"), Column("Amount", "right"))


def estimate(**changes: Any) -> Document:
    values: dict[str, Any] = {
        "title": "Estimate E-1001",
        "header": [("Customer", "Zoë Müller GmbH"), ("Unit", "Truck 7 — Straße 5")],
        "columns": MONEY,
        "lines": [
            ("Brake pads <front> & rotors", "2", "1,234.56 €"),
            ("Labour", "1.5", "1.00 €"),
        ],
        "totals": [("Total", "1,235.56 €")],
        "paragraphs": ["Valid for 30 days.\nPrices include VAT at 20 %."],
        "signature": Signature(name="Zoë Müller", signed_at="2026-12-01"),
        "footer": "Ref E-1001 · sha256 " + "ab" * 32,
    }
    values.update(changes)
    return Document(**values)


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


def signature_png() -> bytes:
    image = PILImage.new("RGB", (300, 100), "white")
    for x in range(20, 280):
        image.putpixel((x, 50 + (x % 20) - 10), (0, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_output_is_a_pdf_with_every_part_of_the_document_as_text():
    pdf = render(estimate())
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = text_of(pdf)
    for expected in (
        "Estimate E-1001",
        "Zoë Müller GmbH",
        "Truck 7 — Straße 5",
        "Brake pads <front> & rotors",  # markup characters are text, not markup
        "1,234.56 €",
        "Total",
        "1,235.56 €",
        "Valid for 30 days.",
        "Prices include VAT at 20 %.",
        "Signature",
        "Zoë Müller · 2026-12-01",
        "Ref E-1001 · sha256 " + "ab" * 32,
        "Page 1",
    ):
        assert expected in text, expected
    info = PdfReader(io.BytesIO(pdf)).metadata
    assert info is not None and info.title == "Estimate E-1001"


def test_the_same_document_gives_the_same_bytes():
    assert (
        hashlib.sha256(render(estimate())).digest() == hashlib.sha256(render(estimate())).digest()
    )
    assert render(estimate()) != render(estimate(title="Estimate E-1002"))


def test_page_one_renders_to_a_non_blank_image_of_the_page_size():
    pdf = pdfium.PdfDocument(render(estimate()))
    try:
        page = pdf[0]
        width, height = page.get_size()
        assert (round(width), round(height)) == (595, 842)  # A4 in points
        image = page.render(scale=2).to_pil().convert("L")  # 144 dpi
    finally:
        pdf.close()
    assert abs(image.width - 2 * width) <= 1 and abs(image.height - 2 * height) <= 1
    dark = sum(image.histogram()[:128])  # pixels darker than mid-grey
    assert dark > 5000  # text and rules were drawn
    assert dark < image.width * image.height // 4  # not a black page either


def test_money_columns_are_right_aligned():
    pdf = pdfium.PdfDocument(render(estimate()))
    try:
        textpage = pdf[0].get_textpage()
        rights = []
        for amount in ("1,234.56 €", "1.00 €", "1,235.56 €"):
            search = textpage.search(amount)
            found = search.get_next()
            assert found is not None, amount
            start, count = found
            rights.append(textpage.get_charbox(start + count - 1)[2])
        textpage.close()
    finally:
        pdf.close()
    assert max(rights) - min(rights) < 1.0  # the same right edge, in points


def test_a_signature_image_is_drawn():
    pdf = render(estimate(signature=Signature(name="Zoë", image_png=signature_png())))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages[0].images) == 1
    assert "Zoë" in text_of(pdf)


def test_long_tables_continue_on_more_pages_with_the_footer_on_each():
    lines = [(f"Part {n}", "1", f"{n}.00 €") for n in range(1, 121)]
    pdf = render(estimate(lines=lines))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 3
    for number, page in enumerate(reader.pages, 1):
        text = page.extract_text()
        assert f"Page {number}" in text and "Ref E-1001" in text
    assert "Part 120" in text_of(pdf)
    assert "Description" in reader.pages[1].extract_text()  # header row repeats


def test_letter_size_and_a_minimal_document():
    pdf = render(Document(title="Note", paragraphs=["Hello"], page_size="letter"))
    document = pdfium.PdfDocument(pdf)
    try:
        assert [round(v) for v in document[0].get_size()] == [612, 792]
    finally:
        document.close()
    assert "Hello" in text_of(pdf)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"title": " "}, "title"),
        ({"lines": [("only one cell",)]}, "line 1 has 1 cells"),
        ({"columns": (), "lines": [], "totals": [("Total", "1")]}, "totals need columns"),
        ({"page_size": "A3"}, "page size"),
    ],
)
def test_malformed_documents_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        estimate(**changes)


def test_a_signature_must_be_a_small_png():
    with pytest.raises(ValueError, match="PNG"):
        Signature(image_png=b"GIF89a...")
    with pytest.raises(ValueError, match="limited"):
        Signature(image_png=b"\x89PNG\r\n\x1a\n" + b"\0" * (512 * 1024))
    with pytest.raises(ValueError, match="alignment"):
        Column("x", "centre")  # type: ignore[arg-type]
