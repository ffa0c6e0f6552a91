"""CSV that opens in Excel as shown: a UTF-8 byte-order mark, and no cell run as a formula.

The history's download and the kickout downloads both write through here.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

# Excel on Windows reads a CSV without a byte-order mark as ANSI ("Seán" becomes "SeÃ¡n").
UTF8_BOM = "\ufeff"
# A spreadsheet runs a cell starting with these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Text joined into one piece of a streamed response: memory stays flat however many rows.
PIECE_CHARS = 32 * 1024


def guard(value) -> str:
    """A cell's text, with a leading apostrophe where Excel would run it as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


class _Echo:
    """A file-like object whose write() hands the line back, for csv.writer to stream."""

    def write(self, value: str) -> str:
        return value


def lines(rows: Iterable[Iterable[str]]) -> Iterator[str]:
    """Each row of cells (already guarded) as one CSV line ending in CRLF.

    A writer of its own per call: one shared by threads would mix their lines."""
    writer = csv.writer(_Echo())
    for cells in rows:
        yield writer.writerow(cells)


def pieces(header: Iterable[str], body: Iterable[str]) -> Iterator[str]:
    """The byte-order mark and the header, then the body (lines, or runs of lines) in pieces
    of about 32 KB."""
    yield UTF8_BOM + next(lines([[guard(name) for name in header]]))
    batch: list[str] = []
    size = 0
    for text in body:
        batch.append(text)
        size += len(text)
        if size >= PIECE_CHARS:
            yield "".join(batch)
            batch, size = [], 0
    if batch:
        yield "".join(batch)
