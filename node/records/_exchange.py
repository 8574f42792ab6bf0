"""数据交换 (Exchange, 第二十六条) and 主动推送 (Subscribe, 第二十七条): reading a resource's
records in bulk and following its change feed.

Both read the ``data_seq`` every record write gets (node.records._store: gap-free per resource,
handed out under the resource's submit lock, so commits become visible in sequence order).
Nothing is ever deleted from ``record_version``, which is what makes the reads below
repeatable at any later time:

- **Exchange** transfers the resource as it was at one data version, its *snapshot version*
  ``V`` (the resource's data version when the transfer began): every record whose newest
  version at ``V`` was written after ``since`` (0: all of them). Pages walk the ``record``
  table in record-key order; a record changed after ``V`` is looked up in ``record_version``
  as it was at ``V`` (and left out if it did not exist yet). So a transfer paused for an hour
  and resumed still delivers exactly the state at ``V``, with nothing missing or repeated,
  and the consumer continues with ``since = V`` (or Subscribe after ``V``).
- **Subscribe** reads ``record_version`` after a sequence, in sequence order, through the
  shared :class:`node.records._feed.ChangeFeed` (one read of a commit serves every subscriber),
  and shapes each change for its subscriber only when it is about to be sent.

Resume tokens are opaque to callers: ``x1.<payload>.<mac>``, the payload (base64url JSON)
naming the resource, the caller, ``since``, ``V``, the requested items and the last record key
delivered; the mac an HMAC-SHA256 (truncated to 128 bits) under a random key this node keeps
in ``node_meta``, so tokens survive restarts, an altered or foreign token is refused, and a
token only continues the transfer it came from, for the caller that began it.

Masking is Query's (node.records._query): projected to the items the caller may see, masked
except its clear items; key values of deletions and changes likewise. Reads are one short
transaction per page: nothing is held open while a stream waits for its client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from node.catalog import DataItem, ResourceEntry
from node.errors import InvalidArgument, PermissionDenied
from node.models import NodeMetaRow
from node.records._disputes import disputes_of
from node.records._feed import FEED_PAGE, ChangeFeed, FeedRow
from node.records._query import projection, shape_row
from node.records._submit import RECORD, VERSION
from node.records._types import Dispute
from node.records._validation import schema_for
from node.storage import Database, in_chunks

__all__ = [
    "EXCHANGE_CHUNK_BYTES",
    "EXCHANGE_CHUNK_ROWS",
    "FEED_PAGE",
    "ChangeKind",
    "ExchangeChunk",
    "ExchangePosition",
    "FeedChange",
    "FeedShaper",
    "RecordsExchange",
]

#: Records per Exchange chunk, at most; a chunk also stops before the record that would take
#: its values past EXCHANGE_CHUNK_BYTES (it has at least one record), well under the node's
#: 4 MiB message limit.
EXCHANGE_CHUNK_ROWS = 500
EXCHANGE_CHUNK_BYTES = 1024 * 1024

TOKEN_KEY = "exchange.resume_token_key"  # noqa: S105 (node_meta key naming the HMAC key)
_TOKEN_VERSION = "x1"  # noqa: S105 (a token format tag, not a secret)
_MAC_BYTES = 16


class ChangeKind:
    UPSERT = "upsert"
    DELETE = "delete"  # only ever with approval (第四十一条)


@dataclass(frozen=True, slots=True)
class ExchangePosition:
    """Where a transfer stands: what it transfers and the last record key delivered."""

    resource_code: str
    caller: str  # SPIFFE URI of the caller that began the transfer
    since: int
    snapshot: int  # V: the data version the transfer is consistent with
    items: tuple[str, ...]  # as requested (empty: every item the caller may see)
    after: str = ""  # last record key delivered; "" before the first chunk


@dataclass(frozen=True, slots=True)
class ExchangeChunk:
    records: tuple[dict[str, str], ...]
    deleted: tuple[dict[str, str], ...]  # key values of records deleted after ``since``
    position: ExchangePosition
    resume_token: str
    last: bool
    #: The disputed records of the chunk (纠错), by their index in ``records``.
    disputes: tuple[tuple[int, Dispute], ...] = ()


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One change of the feed, as the subscriber may see it."""

    sequence: int
    kind: str  # ChangeKind
    key: dict[str, str]
    values: dict[str, str] | None  # None for a deletion
    version: int
    at: dt.datetime


class FeedShaper:
    """Turns stored changes into what one subscriber may see: projected to every item it may
    see and masked as Query masks (key values of deletions likewise)."""

    def __init__(
        self, entry: ResourceEntry, *, visible_items: frozenset[str], clear_items: frozenset[str]
    ) -> None:
        self._shown = projection(entry, (), visible_items)
        self._by_name = {item.name: item for item in entry.items}
        self._key_items = schema_for(entry).key_items
        self._visible = visible_items
        self._clear = clear_items

    def change(self, row: FeedRow) -> FeedChange:
        key = _key_values(self._key_items, row.record_key)
        masked_key = _masked_key(self._by_name, key, self._visible, self._clear, row.version)
        values: dict[str, str] | None = None
        if row.kind != ChangeKind.DELETE:
            shaped = shape_row(self._by_name, self._shown, self._clear, row.values, row.version)
            values = shaped.values
        return FeedChange(row.sequence, row.kind, masked_key, values, row.version, row.at)


class RecordsExchange:
    """Exchange pages and the change feed of the resources this node owns. ``changed`` is the
    commit signal of a resource (node.records.Records.changed); without it, every Subscribe
    read goes to the database."""

    def __init__(self, db: Database, changed: Callable[[str], asyncio.Event] | None = None) -> None:
        self._db = db
        self._key: bytes | None = None
        self._key_lock = asyncio.Lock()
        #: The change feed shared by every Subscribe of this process.
        self.feed = ChangeFeed(db, changed or (lambda _code: asyncio.Event()))

    # --- positions ------------------------------------------------------------------------

    async def data_version(self, resource_code: str) -> int:
        row = await self._db.fetch_one(
            "SELECT data_version FROM resource_data WHERE resource_code = :code",
            {"code": resource_code},
        )
        return int(row[0]) if row is not None else 0

    async def begin(
        self,
        entry: ResourceEntry,
        caller: str,
        *,
        since: int,
        items: Sequence[str],
        resume_token: str = "",
    ) -> ExchangePosition:
        """The position a request starts from: a new transfer pinned at the current data
        version, or the one ``resume_token`` continues (which must be this very transfer)."""
        code = entry.resource_code
        if since < 0:
            raise InvalidArgument(f"since_version: must not be negative, got {since}")
        if resume_token:
            position = await self._decode(resume_token)
            _check_same(position, code, caller, since, tuple(items))
            return position
        current = await self.data_version(code)
        if since > current:
            raise InvalidArgument(
                f"since_version: {since} is ahead of resource {code}'s data version {current}"
            )
        return ExchangePosition(code, caller, since, current, tuple(items))

    async def check_after(self, entry: ResourceEntry, after: int) -> int:
        """Validate Subscribe's ``after_sequence`` (0 to the current data version)."""
        if after < 0:
            raise InvalidArgument(f"after_sequence: must not be negative, got {after}")
        current = await self.data_version(entry.resource_code)
        if after > current:
            raise InvalidArgument(
                f"after_sequence: {after} is ahead of resource {entry.resource_code}'s data "
                f"version {current}; resume with the sequence of the last change received"
            )
        return after

    # --- Exchange -------------------------------------------------------------------------

    async def chunk(
        self,
        entry: ResourceEntry,
        position: ExchangePosition,
        *,
        visible_items: frozenset[str],
        clear_items: frozenset[str],
    ) -> ExchangeChunk:
        """The next chunk after ``position``: at most :data:`EXCHANGE_CHUNK_ROWS` records and
        at most :data:`EXCHANGE_CHUNK_BYTES` of values (but at least one record when any is
        left)."""
        shown = projection(entry, position.items, visible_items)
        rows, scanned_to, more, marks = await self._page(position, EXCHANGE_CHUNK_ROWS)
        disputes: list[tuple[int, Dispute]] = []
        by_name = {item.name: item for item in entry.items}
        key_items = schema_for(entry).key_items
        records: list[dict[str, str]] = []
        deleted: list[dict[str, str]] = []
        after = position.after
        size = 0
        cut = False
        for record_key, kind, version, values in rows:
            if kind == ChangeKind.DELETE:
                after = record_key
                if position.since:  # a full snapshot has no deletions to report
                    key = _key_values(key_items, record_key)
                    deleted.append(_masked_key(by_name, key, visible_items, clear_items, version))
                continue
            row = shape_row(by_name, shown, clear_items, values, version)
            row_size = sum(len(k) + len(v.encode()) for k, v in row.values.items())
            # Stop before the record that would pass the budget, not after it: a chunk just
            # under 1 MiB and a record of 3.5 MiB would not fit in one 4 MiB message.
            if records and size + row_size > EXCHANGE_CHUNK_BYTES:
                cut = True
                break
            after = record_key
            if record_key in marks:
                disputes.append((len(records), marks[record_key]))
            records.append(row.values)
            size += row_size
        if not cut:
            after = scanned_to  # past the records of the page that were not in the transfer
        last = not more and not cut
        next_position = ExchangePosition(
            position.resource_code,
            position.caller,
            position.since,
            position.snapshot,
            position.items,
            after,
        )
        return ExchangeChunk(
            records=tuple(records),
            deleted=tuple(deleted),
            position=next_position,
            resume_token=await self._encode(next_position),
            last=last,
            disputes=tuple(disputes),
        )

    async def _page(
        self, position: ExchangePosition, limit: int
    ) -> tuple[list[tuple[str, str, int, dict[str, str]]], str, bool, dict[str, Dispute]]:
        """Of the next ``limit`` records after ``position.after``, those written in (since,
        snapshot], as they were at the snapshot version: (record key, kind, version, values)
        in key order; the last record key read; whether more records follow; and the marks of
        the disputed ones (read in the same transaction, only when the page has any)."""
        code, since, snapshot = position.resource_code, position.since, position.snapshot
        current = (
            sa.select(
                RECORD.c.record_key,
                RECORD.c.data_seq,
                VERSION.c.kind,
                VERSION.c.version,
                VERSION.c.item_values,
                RECORD.c.open_disputes,
            )
            .select_from(
                RECORD.join(
                    VERSION,
                    sa.and_(
                        VERSION.c.resource_code == RECORD.c.resource_code,
                        VERSION.c.data_seq == RECORD.c.data_seq,
                    ),
                )
            )
            .where(
                RECORD.c.resource_code == code,
                RECORD.c.data_seq > since,
                RECORD.c.record_key > position.after,
            )
            .order_by(RECORD.c.record_key)
            .limit(limit + 1)
        )

        async def txn(
            session: AsyncSession,
        ) -> tuple[list[Any], dict[str, Any], dict[str, Dispute]]:
            conn = await session.connection()
            rows = list((await conn.execute(current)).all())
            newer = [row.record_key for row in rows[:limit] if row.data_seq > snapshot]
            older: dict[str, Any] = {}
            for keys in in_chunks(newer):
                older.update(await _as_of(conn, code, keys, since, snapshot))
            disputed = [row.record_key for row in rows[:limit] if row.open_disputes]
            marks = await disputes_of(conn, code, disputed) if disputed else {}
            return rows, older, marks

        if snapshot <= since:
            return [], position.after, False, {}  # nothing was written in (since, snapshot]
        rows, older, marks = await self._db.read("records.exchange", txn)
        more = len(rows) > limit
        out: list[tuple[str, str, int, dict[str, str]]] = []
        for row in rows[:limit]:
            if row.data_seq <= snapshot:
                out.append((row.record_key, row.kind, row.version, _values(row.item_values)))
                continue
            old = older.get(row.record_key)
            if old is not None:  # else: not written in (since, snapshot]
                out.append((row.record_key, old.kind, old.version, _values(old.item_values)))
        scanned_to = rows[:limit][-1].record_key if rows else position.after
        return out, scanned_to, more, marks

    # --- resume tokens --------------------------------------------------------------------

    async def _encode(self, position: ExchangePosition) -> str:
        payload = json.dumps(
            [
                position.resource_code,
                position.caller,
                position.since,
                position.snapshot,
                list(position.items),
                position.after,
            ],
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        mac = hmac.new(await self._token_key(), _signed(payload), hashlib.sha256).digest()
        return f"{_TOKEN_VERSION}.{_b64(payload)}.{_b64(mac[:_MAC_BYTES])}"

    async def _decode(self, token: str) -> ExchangePosition:
        refused = InvalidArgument(
            "resume_token: not a resume token this node issued, or altered since; resume with "
            "the resume_token of the last chunk received exactly as sent, or start the "
            "exchange again without one"
        )
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_VERSION:
            raise refused
        try:
            payload, mac = _unb64(parts[1]), _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise refused from None
        expected = hmac.new(await self._token_key(), _signed(payload), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected[:_MAC_BYTES]):
            raise refused
        try:
            code, caller, since, snapshot, items, after = json.loads(payload)
        except (UnicodeDecodeError, ValueError, TypeError):
            raise refused from None
        if not (
            isinstance(code, str)
            and isinstance(caller, str)
            and isinstance(since, int)
            and isinstance(snapshot, int)
            and isinstance(items, list)
            and all(isinstance(i, str) for i in items)
            and isinstance(after, str)
        ):
            raise refused
        return ExchangePosition(code, caller, since, snapshot, tuple(items), after)

    async def _token_key(self) -> bytes:
        if self._key is not None:
            return self._key
        async with self._key_lock:
            if self._key is None:
                self._key = bytes.fromhex(await self._load_or_create_key())
        return self._key

    async def _load_or_create_key(self) -> str:
        sql = "SELECT value FROM node_meta WHERE key = :key"
        row = await self._db.fetch_one(sql, {"key": TOKEN_KEY})
        if row is not None:
            return str(row[0])

        async def txn(session: AsyncSession) -> str:
            existing = await session.get(NodeMetaRow, TOKEN_KEY)
            if existing is not None:
                return existing.value
            value = secrets.token_hex(32)
            session.add(NodeMetaRow(key=TOKEN_KEY, value=value))
            return value

        try:
            return await self._db.write("exchange.token_key", txn)
        except IntegrityError:  # another process created it first
            row = await self._db.fetch_one(sql, {"key": TOKEN_KEY})
            if row is None:
                raise
            return str(row[0])


# --- helpers ----------------------------------------------------------------------------------


def _check_same(
    position: ExchangePosition, code: str, caller: str, since: int, items: tuple[str, ...]
) -> None:
    if position.resource_code != code:
        raise InvalidArgument(
            f"resume_token: continues an exchange of resource {position.resource_code}, not {code}"
        )
    if position.caller != caller:
        raise PermissionDenied(
            "resume_token: issued to another caller; a transfer resumes only for the caller "
            "that began it"
        )
    if position.since != since:
        raise InvalidArgument(
            f"since_version: the resume_token continues a transfer since version "
            f"{position.since}, not {since}; resend the original request with the token"
        )
    if position.items != items:
        shown = ", ".join(position.items) or "every visible item"
        raise InvalidArgument(
            f"items: the resume_token continues a transfer of {shown}; resend the original "
            "request with the token"
        )


async def _as_of(
    conn: Any, code: str, keys: Sequence[str], since: int, snapshot: int
) -> dict[str, Any]:
    """For each of ``keys``: its newest version written in (since, snapshot], if any."""
    newest = (
        sa.select(VERSION.c.record_key, sa.func.max(VERSION.c.data_seq).label("seq"))
        .where(
            VERSION.c.resource_code == code,
            VERSION.c.record_key.in_(keys),
            VERSION.c.data_seq > since,
            VERSION.c.data_seq <= snapshot,
        )
        .group_by(VERSION.c.record_key)
        .subquery()
    )
    statement = sa.select(
        VERSION.c.record_key, VERSION.c.kind, VERSION.c.version, VERSION.c.item_values
    ).join(
        newest,
        sa.and_(
            VERSION.c.resource_code == code,
            VERSION.c.data_seq == newest.c.seq,
        ),
    )
    return {row.record_key: row for row in await conn.execute(statement)}


def _values(stored: Any) -> dict[str, str]:
    if isinstance(stored, str):  # JSON text, should a driver hand it over unparsed
        stored = json.loads(stored)
    return dict(stored or {})


def _key_values(key_items: Sequence[str], record_key: str) -> dict[str, str]:
    """The key items' values of ``record_key`` (canonical JSON, catalog key-item order)."""
    values = json.loads(record_key)
    return dict(zip(key_items, values, strict=False))


def _masked_key(
    by_name: Mapping[str, DataItem],
    key: Mapping[str, str],
    visible_items: frozenset[str],
    clear_items: frozenset[str],
    version: int,
) -> dict[str, str]:
    shown = [name for name in key if name in visible_items and name in by_name]
    return shape_row(by_name, shown, clear_items, key, version).values


def _signed(payload: bytes) -> bytes:
    return _TOKEN_VERSION.encode() + b"|" + payload


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
