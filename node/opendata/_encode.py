"""The bytes of a downloaded file (第三十二条), written one row at a time: the one encoder behind
both a download (node.opendata._download) and the digest of its file (node.opendata._digests),
so that the SHA-256 sent before a file is the SHA-256 of the bytes that follow.

- ``csv``: UTF-8, a header row of the items' names, RFC 4180 (CRLF line ends, a field quoted
  when it holds a comma, a quote or a line break, quotes doubled), with a UTF-8 byte order mark
  first on request (Excel reads UTF-8 only with one);
- ``jsonl``: one JSON object per row (item name -> value, in the columns' order), UTF-8, LF.

Rows come from ``open_row`` a page at a time (:func:`served_rows`), so memory stays at a page
whatever the dataset's size. No grpc, no storage of its own.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

BOM = b"\xef\xbb\xbf"
#: Rows read from the database at once.
PAGE_ROWS = 500


class RowSource(Protocol):
    """Where a version's rows are read (node.opendata._publish.OpenData.rows)."""

    async def rows(
        self, code: str, version: int, *, after: int = 0, limit: int = ...
    ) -> list[tuple[int, dict[str, str]]]: ...


class Encoder:
    """One file's encoding: :meth:`header` once, then :meth:`row` for each row."""

    def __init__(self, fmt: str, columns: Sequence[str]) -> None:
        self._fmt = fmt
        self._columns = tuple(columns)
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)

    def header(self) -> bytes:
        if self._fmt != "csv":
            return b""
        return self._line(list(self._columns))

    def row(self, values: dict[str, str]) -> bytes:
        ordered = [str(values.get(name, "")) for name in self._columns]
        if self._fmt == "csv":
            return self._line(ordered)
        record = dict(zip(self._columns, ordered, strict=True))
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def _line(self, fields: list[str]) -> bytes:
        self._text.seek(0)
        self._text.truncate()
        self._csv.writerow(fields)
        return self._text.getvalue().encode()


def columns_id(columns: Sequence[str]) -> str:
    """Which item set a file holds, in 64 characters: the hex SHA-256 of the column names
    joined by a line feed (a 授权开放 key's file holds only its approved items)."""
    return hashlib.sha256("\n".join(columns).encode()).hexdigest()


async def served_rows(
    source: RowSource, code: str, version: int
) -> AsyncIterator[tuple[int, dict[str, str]]]:
    """Every row of a version, in row order, read a page at a time."""
    after = 0
    while True:
        page = await source.rows(code, version, after=after, limit=PAGE_ROWS)
        for number, values in page:
            after = number
            yield number, values
        if len(page) < PAGE_ROWS:
            return
