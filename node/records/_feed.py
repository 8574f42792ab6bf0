"""The change feed of the resources this node owns, read once for all their subscribers
(主动推送 Subscribe, 第二十七条).

Every record write gets a ``data_seq`` (gap-free per resource, committed in sequence order)
and ``record_version`` rows are never changed or deleted (node.records._exchange), so a change
once read may be handed to any number of subscribers, at any time. :class:`ChangeFeed` keeps,
per resource, the latest changes read (a window of consecutive sequences) and what it learnt
about the tip:

- Subscribers waiting at the tip all wake on the same commit. The first to ask reads the new
  changes from the database; the others are served from the window, and one that asks while
  that read is under way waits for it instead of repeating it. So N subscribers cost one read
  per commit, not N.
- A subscriber that has caught up does not read again only to learn that nothing follows: a
  read that found the end of the feed is remembered with the commit signal
  (node.records.Records.changed) that was current when it began, and is good until that signal
  fires. A write by another process of the node fires no signal here, so a subscriber's
  periodic fallback read asks with ``recheck`` to go to the database anyway.

Nothing is held per subscriber: a subscriber whose writes are waiting on its consumer asks
for nothing, and one far behind the window reads its own pages (at most :data:`FEED_PAGE`
rows), which are not kept. The feed is a cache in process memory (bounded in resources and
rows), never the source of truth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from node.records._submit import VERSION
from node.storage import Database

__all__ = ["FEED_PAGE", "ChangeFeed", "FeedRow"]

#: Changes read from the database at a time, and handed out at a time.
FEED_PAGE = 200
#: Changes kept per resource, and resources kept.
KEEP_ROWS = 2 * FEED_PAGE
KEEP_RESOURCES = 32


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One change as stored: before any projection or masking."""

    sequence: int
    record_key: str
    kind: str
    version: int
    values: dict[str, str]
    at: dt.datetime


@dataclass
class _Window:
    """Consecutive changes of one resource: ``rows[i].sequence == first + i``."""

    first: int
    rows: list[FeedRow] = field(default_factory=list)
    #: Set when a read found nothing after the last row: the commit signal current when that
    #: read began. While it has not fired, there is still nothing after the last row.
    end_seen: asyncio.Event | None = None
    #: Reads under way, by the sequence they read after.
    reading: dict[int, asyncio.Task[list[FeedRow]]] = field(default_factory=dict)

    @property
    def last(self) -> int:
        """The sequence of the last change held (``first - 1`` when none)."""
        return self.first + len(self.rows) - 1


class ChangeFeed:
    """``changed(code)`` is the commit signal of a resource (node.records.Records.changed)."""

    def __init__(
        self,
        db: Database,
        changed: Callable[[str], asyncio.Event],
        *,
        keep_rows: int = KEEP_ROWS,
        keep_resources: int = KEEP_RESOURCES,
    ) -> None:
        self._db = db
        self._changed = changed
        self._keep_rows = max(keep_rows, FEED_PAGE)
        self._keep_resources = max(keep_resources, 1)
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        #: Reads of the feed that went to the database, in all (for operators and tests).
        self.reads = 0

    async def after(
        self, code: str, after: int, *, recheck: bool = False
    ) -> tuple[list[FeedRow], bool]:
        """Up to :data:`FEED_PAGE` changes of ``code`` with a sequence above ``after``, in
        order, and whether this call read them from the database itself. ``recheck``: do not
        trust what an earlier read learnt about the end of the feed."""
        window = self._window(code, after)
        if window.first <= after + 1 <= window.last:
            start = after + 1 - window.first
            return window.rows[start : start + FEED_PAGE], False
        at_end = after == window.last
        if at_end and not recheck and self._nothing_after(code, window):
            return [], False
        running = window.reading.get(after)
        if running is not None:
            return await asyncio.shield(running), False
        # In a task of its own, so that the subscribers waiting for it do not depend on the
        # one that started it staying alive.
        task = asyncio.ensure_future(self._read_into(code, window, after))
        window.reading[after] = task

        def done(finished: asyncio.Task[list[FeedRow]]) -> None:
            if window.reading.get(after) is finished:
                del window.reading[after]
            if not finished.cancelled():
                finished.exception()  # retrieved: whoever awaited it got it raised

        task.add_done_callback(done)
        return await asyncio.shield(task), True

    def _window(self, code: str, after: int) -> _Window:
        window = self._windows.get(code)
        if window is None:
            window = self._windows[code] = _Window(first=after + 1)
            while len(self._windows) > self._keep_resources:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(code)
        return window

    def _nothing_after(self, code: str, window: _Window) -> bool:
        seen = window.end_seen
        return seen is not None and not seen.is_set() and self._changed(code) is seen

    async def _read_into(self, code: str, window: _Window, after: int) -> list[FeedRow]:
        signal = self._changed(code)  # before the read: a commit during it makes it stale
        rows = await self._read(code, after)
        self.reads += 1
        if after == window.last:
            window.rows.extend(rows)
            window.end_seen = signal if len(rows) < FEED_PAGE else None
        elif after > window.last:
            # Ahead of what is held (e.g. a new subscriber at the tip): start afresh there.
            window.first, window.rows = after + 1, list(rows)
            window.end_seen = signal if len(rows) < FEED_PAGE else None
        # else: behind the window; served to this reader alone, not kept.
        excess = len(window.rows) - self._keep_rows
        if excess > 0:
            del window.rows[:excess]
            window.first += excess
        return rows

    async def _read(self, code: str, after: int) -> list[FeedRow]:
        statement = (
            sa.select(
                VERSION.c.data_seq,
                VERSION.c.record_key,
                VERSION.c.kind,
                VERSION.c.version,
                VERSION.c.item_values,
                VERSION.c.at,
            )
            .where(VERSION.c.resource_code == code, VERSION.c.data_seq > after)
            .order_by(VERSION.c.data_seq)
            .limit(FEED_PAGE)
        )

        async def txn(session: AsyncSession) -> list[Any]:
            conn = await session.connection()
            return list((await conn.execute(statement)).all())

        rows = await self._db.read("records.feed", txn)
        return [
            FeedRow(r.data_seq, r.record_key, r.kind, r.version, _values(r.item_values), r.at)
            for r in rows
        ]


def _values(stored: Any) -> dict[str, str]:
    if isinstance(stored, str):  # JSON text, should a driver hand it over unparsed
        stored = json.loads(stored)
    return dict(stored or {})
