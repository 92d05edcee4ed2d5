"""CSV exports that are safe to open in a spreadsheet.

Every cell is neutralised against formula injection (OWASP "CSV Injection"): a cell
that a spreadsheet would read as a formula gets a leading single quote. Output is
RFC 4180: comma separated, fields quoted when needed, quotes doubled, CRLF line ends.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralize(cell: object) -> str:
    """``None`` -> ``""``; anything else as text, quoted with ``'`` if formula-like."""
    if cell is None:
        return ""
    text = cell if isinstance(cell, str) else str(cell)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The header and rows as one RFC 4180 CSV document, every cell neutralised."""
    return "".join(iter_csv(header, rows))


def iter_csv(
    header: Sequence[str], rows: Iterable[Sequence[object]], chunk_bytes: int = 64 * 1024
) -> Iterator[str]:
    """The same document in pieces of about ``chunk_bytes``, pulling ``rows`` lazily:
    a streamed response holds one piece in memory, whatever the number of rows."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([neutralize(cell) for cell in header])
    for row in rows:
        writer.writerow([neutralize(cell) for cell in row])
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
