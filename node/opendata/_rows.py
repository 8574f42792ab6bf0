"""The row API (issue 14): a page of a served dataset's rows that pass a filter
(node.opendata._filters), projected onto some of its items.

Rows are read from ``open_row`` in row order, a batch at a time (:meth:`OpenData.rows`), and
filtered in Python, so memory stays at a batch and a page whatever the dataset's size. A
filter that matches few rows could still make one call read the whole dataset, so a call reads
at most :data:`SCAN_ROWS` rows: when it stops there, the page may be short or empty and still
have a next page, which continues after the last row read. :attr:`RowPage.scanned` says how
many rows the call read.

A page continues after a row number of one version: the version served when the first page
was read. Once another version is served, continuing would mix versions, so the next page is
refused (FAILED_PRECONDITION) and the caller starts again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.errors import Aborted, FailedPrecondition
from node.opendata._catalog import Served
from node.opendata._filters import RowFilter
from node.opendata._publish import OpenData

#: Rows a page holds when the caller does not say; at most MAX_PAGE_ROWS.
DEFAULT_PAGE_ROWS = 20
MAX_PAGE_ROWS = 100
#: Rows one call reads at most, however few of them its filters match.
SCAN_ROWS = 20_000
#: Rows read from the database at once.
BATCH_ROWS = 500


@dataclass(frozen=True)
class RowPage:
    #: (row number, the projected items' values in catalog order).
    rows: list[tuple[int, dict[str, str]]]
    #: The row number the next page continues after; 0 when there is no next page.
    next_after: int
    #: Rows read to make this page (at most SCAN_ROWS).
    scanned: int


async def query_rows(
    opendata: OpenData,
    served: Served,
    row_filter: RowFilter,
    *,
    version: int,
    after: int = 0,
    size: int = DEFAULT_PAGE_ROWS,
    items: Sequence[str] = (),
    scan_limit: int | None = None,
) -> RowPage:
    """Up to ``size`` rows of ``served`` after row number ``after`` that ``row_filter``
    matches, with only ``items`` (all published items when empty), reading at most
    ``scan_limit`` rows (:data:`SCAN_ROWS`). ``version``: the version the caller's first page
    was read from; FailedPrecondition when it is not served now."""
    scan_limit = scan_limit or SCAN_ROWS
    code = served.entry.resource_code
    if version != served.version:
        raise FailedPrecondition(
            f"page_token: it continues version {version} of {code}, and version "
            f"{served.version} is served now: start again without a page_token"
        )
    wanted = set(items)
    columns = [c for c in served.columns if not wanted or c in wanted]
    found: list[tuple[int, dict[str, str]]] = []
    scanned = 0
    while True:
        batch = min(BATCH_ROWS, scan_limit - scanned)
        if not row_filter:  # every row matches: read no more than the page and one
            batch = min(batch, size + 1 - len(found))
        rows = await opendata.rows(code, version, after=after, limit=batch)
        for number, values in rows:
            scanned += 1
            after = number
            if not row_filter.matches(values):
                continue
            if len(found) == size:  # one more than the page: there is a next page
                return RowPage(found, found[-1][0], scanned)
            found.append((number, {c: str(values.get(c, "")) for c in columns}))
        if len(rows) < batch:
            await _still_there(opendata, served)
            return RowPage(found, 0, scanned)
        if scanned >= scan_limit:
            return RowPage(found, after, scanned)


async def _still_there(opendata: OpenData, served: Served) -> None:
    """At the end of the rows: the end of the version, not its rows deleted meanwhile (two
    publications during the call; node.opendata._publish keeps only the one before)."""
    if served.rows and not await opendata.rows(served.entry.resource_code, served.version, limit=1):
        raise Aborted(
            f"version {served.version} of {served.entry.resource_code} was replaced while "
            "it was being read: start again without a page_token"
        )
