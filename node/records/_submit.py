"""Submit (汇聚) machinery: the batch's shape, its records' checks, its content digest and the
bulk writes.

Used by :class:`node.records.Records`; split out so each module keeps one job. Writes are
SQLAlchemy Core in bulk: the current rows for a batch's keys are read by
:func:`node.records._lookup.rows_by_key` (or the whole resource when it holds no more records
than the batch has keys), then new records, changed records and new versions go in with one
executemany each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

import node.models  # noqa: F401  (registers the record tables on SQLModel.metadata)
from gateway.quote import quote
from node.catalog import ITEM_NAME_RE, MAX_ITEMS, ResourceEntry
from node.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from node.records._hold import ARTICLE, HeldWrite
from node.records._lookup import rows_by_key
from node.records._query import key_text
from node.records._rejections import RejectionList, bounded
from node.records._types import (
    KEY_CONFLICT_REASON,
    MAX_BATCH_ID,
    MAX_BATCH_RECORDS,
    MAX_TEMPORARY_DAYS,
    BatchOutcome,
    HeldRecord,
    Rejection,
    SubmitBatch,
    TemporaryCollection,
)
from node.records._validation import MAX_CHECK_SECONDS, RecordSchema
from node.times import CST

RECORD = SQLModel.metadata.tables["record"]
VERSION = SQLModel.metadata.tables["record_version"]
DATA = SQLModel.metadata.tables["resource_data"]
BATCH = SQLModel.metadata.tables["submit_batch"]

#: A record key (canonical JSON of the key values) may take at most this many UTF-8 bytes:
#: it is a primary-key column, and btree entries must stay small.
RECORD_KEY_BYTES = 1024
MAX_TEMPORARY_REASON = 2000
#: A batch id quoted in a message is cut to this many characters (ids run to MAX_BATCH_ID).
_QUOTED_ID = 40
#: A record refused for carrying its key with other values names at most this many of the
#: key's other positions in the batch (a batch may repeat one key 10,000 times).
_NAMED_POSITIONS = 5

_UPDATE_RECORD = (
    sa.update(RECORD)
    .where(
        RECORD.c.resource_code == sa.bindparam("b_code"),
        RECORD.c.record_key == sa.bindparam("b_key"),
    )
    .values(
        item_values=sa.bindparam("b_values", type_=RECORD.c.item_values.type),
        version=sa.bindparam("b_version"),
        data_seq=sa.bindparam("b_seq"),
        updated_at=sa.bindparam("b_at", type_=RECORD.c.updated_at.type),
        temporary=sa.bindparam("b_temporary"),
        deleted=False,  # a record deleted with approval may be aggregated again
    )
)


def check_batch(entry: ResourceEntry, batch: SubmitBatch, now: dt.datetime) -> None:
    if not batch.batch_id or len(batch.batch_id) > MAX_BATCH_ID or not batch.batch_id.isprintable():
        raise InvalidArgument(
            f"batch_id: required, at most {MAX_BATCH_ID} printable characters (the batch's "
            "idempotency key)"
        )
    if not batch.records:
        raise InvalidArgument("records: a batch needs at least one record")
    if len(batch.records) > MAX_BATCH_RECORDS:
        raise InvalidArgument(
            f"records: at most {MAX_BATCH_RECORDS} per batch, got {len(batch.records)}; split "
            "the batch"
        )
    if batch.temporary is not None:
        _check_temporary(entry, batch.temporary, now)


def _check_temporary(
    entry: ResourceEntry, temporary: TemporaryCollection, now: dt.datetime
) -> None:
    if not temporary.reason.strip():
        raise InvalidArgument(
            "temporary.reason: collecting items outside the catalog needs the special business "
            "or urgent need it serves (第十二条)"
        )
    if len(temporary.reason) > MAX_TEMPORARY_REASON:
        raise InvalidArgument(f"temporary.reason: at most {MAX_TEMPORARY_REASON} characters")
    expires = temporary.expires_at
    if expires.tzinfo is None or expires.utcoffset() is None:
        raise InvalidArgument("temporary.expires_at: must be a time with a time zone")
    if expires <= now:
        raise InvalidArgument(
            f"temporary.expires_at: {expires.isoformat()} has passed; a temporary collection "
            "needs an expiry in the future"
        )
    if expires > now + dt.timedelta(days=MAX_TEMPORARY_DAYS):
        raise InvalidArgument(
            f"temporary.expires_at: at most {MAX_TEMPORARY_DAYS} days ahead; a longer "
            "collection belongs in the catalog entry (第十二条)"
        )
    if not temporary.extra_items:
        raise InvalidArgument("temporary.extra_items: name the items collected outside the catalog")
    if len(temporary.extra_items) > MAX_ITEMS:
        raise InvalidArgument(
            f"temporary.extra_items: at most {MAX_ITEMS} items, got {len(temporary.extra_items)}"
        )
    declared = {item.name for item in entry.items}
    seen: set[str] = set()
    for i, name in enumerate(temporary.extra_items):
        path = f"temporary.extra_items[{i}]"
        if not ITEM_NAME_RE.match(name):
            raise InvalidArgument(
                f"{path}: {quote(name)} must be lower-case letters, digits and _, starting with a "
                "letter, at most 63 characters"
            )
        if name in declared:
            raise InvalidArgument(
                f"{path}: {quote(name)} is declared in the catalog entry; only undeclared items "
                "need a temporary collection"
            )
        if name in seen:
            raise InvalidArgument(f"{path}: {quote(name)} is listed twice")
        seen.add(name)


def clean_batch(
    schema: RecordSchema, batch: SubmitBatch
) -> tuple[list[tuple[str, dict[str, str]]], list[int], list[Rejection], int]:
    """Valid records as (record key, canonical values), in batch order, and the position of
    each in the batch; the rejections, bounded for the ack (node.records._rejections); and how
    many records were refused. Refuses the batch (ResourceExhausted) once checking it has
    taken MAX_CHECK_SECONDS of CPU."""
    extra = frozenset(batch.temporary.extra_items) if batch.temporary else frozenset()
    key_items = schema.key_items
    writes: list[tuple[str, dict[str, str]]] = []
    positions: list[int] = []
    listing = RejectionList()  # bounded as it goes: a record keeps a few reasons, not all
    rejected = 0
    clean = schema.clean
    start, wall_start = time.thread_time(), time.perf_counter()
    index = 0

    def budget() -> None:
        # Before anything is written: the batch is refused whole. A thread's CPU time never
        # runs ahead of the clock, so it is read (a system call, about 0.6 µs; this runs once
        # per record and per pattern check) only once the clock is past the budget.
        if time.perf_counter() - wall_start <= MAX_CHECK_SECONDS:
            return
        if time.thread_time() - start > MAX_CHECK_SECONDS:
            raise ResourceExhausted(
                f"batch {batch.batch_id}: checking its records took more than "
                f"{MAX_CHECK_SECONDS:g} s of CPU (stopped at record {index}); send smaller "
                "batches, or simplify the entry's patterns"
            )

    for index, record in enumerate(batch.records):  # budget() reads index
        budget()
        values, problems = clean(record, extra, budget=budget)
        if not problems:
            key = key_text([values[name] for name in key_items])
            if len(key.encode()) <= RECORD_KEY_BYTES:
                writes.append((key, values))
                positions.append(index)
                continue
            problems = [("", f"key values too long: at most {RECORD_KEY_BYTES} bytes together")]
        rejected += 1
        listing.refuse(index, problems)
    return writes, positions, listing.rejections, rejected


def one_value_per_key(
    schema: RecordSchema, writes: list[tuple[str, dict[str, str]]], positions: list[int]
) -> tuple[list[tuple[str, dict[str, str]]], list[int], list[Rejection]]:
    """Refuse every occurrence of a key that carries different values within the batch.

    Where changes of stored records need approval (第四十一条), one batch may not change a
    record by itself: two values for a new key would write its version 1 and version 2 with
    nothing held, and two for a stored key would file two competing change requests against
    the same version. Which of the values is meant cannot be told, so none is applied or held;
    the provider sends one value, and a change in a later batch is held for approval. Records
    repeated with the same (canonical) values stay fine. ``writes`` and ``positions`` are
    :func:`clean_batch`'s; returns them without the refused records, and the rejections."""
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    for n, (key, values) in enumerate(writes):
        seen = first.setdefault(key, n)
        if seen != n and writes[seen][1] != values:
            conflicting.add(key)
    if not conflicting:
        return writes, positions, []
    at: dict[str, list[int]] = {key: [] for key in conflicting}
    kept_writes: list[tuple[str, dict[str, str]]] = []
    kept_positions: list[int] = []
    for (key, values), index in zip(writes, positions, strict=True):
        if key in conflicting:
            at[key].append(index)
        else:
            kept_writes.append((key, values))
            kept_positions.append(index)
    # An entry may have many key items: the reason names a few (it is cut at 1 KiB anyway).
    key_names = ", ".join(schema.key_items[:_NAMED_POSITIONS])
    if len(schema.key_items) > _NAMED_POSITIONS:
        key_names += f" and {len(schema.key_items) - _NAMED_POSITIONS} more items"
    rejections: list[Rejection] = []
    for indexes in at.values():
        head = indexes[: _NAMED_POSITIONS + 1]  # enough to name a few others of any of them
        for index in indexes:
            others = [i for i in head if i != index][:_NAMED_POSITIONS]
            named = ", ".join(f"records[{i}]" for i in others)
            if len(indexes) - 1 > len(others):
                named += f" and {len(indexes) - 1 - len(others)} more"
            rejections.append(
                Rejection(
                    index,
                    "",
                    f"{KEY_CONFLICT_REASON}{key_names}) is also at {named} of this batch with "
                    "other values: one batch carries one value per key; send a change in a later "
                    f"batch, where it is held for approval ({ARTICLE})",
                )
            )
    rejections.sort(key=lambda r: r.index)
    return kept_writes, kept_positions, rejections


def batch_digest(batch: SubmitBatch) -> str:
    """The SHA-256 (hex) of what defines a batch's content, stored with the batch so that a
    resend of its id can be told apart from a different batch under a reused id.

    Covered: the records as sent (before any cleaning: a record written another way is other
    content), in batch order, and the temporary collection if any. Not covered: the resource
    code and the batch id (they identify the batch) and the submitter (only the provider
    submits). Encoding: the bytes (all ASCII) of the JSON array ``[records, temporary]``, where
    ``records`` is an array with one object per record, its members sorted by name (code point
    order), and ``temporary`` is ``null`` or ``{"expires_at": ..., "extra_items": [...],
    "reason": ...}`` with ``expires_at`` in UTC, ISO 8601 with microseconds when not zero
    (``2026-12-31T16:00:00+00:00``) and ``extra_items`` in the order sent; no whitespace,
    every non-ASCII character escaped as ``\\uXXXX`` (Python's ``json.dumps(...,
    sort_keys=True, separators=(",", ":"))``). Protobuf bytes are not used: their encoding is
    not canonical (map order, field order), so one batch could hash two ways.

    One JSON document encoded in C and one hash: about 1.4 ms per 1,000 records on a loaded
    2-core machine, a fifth of what checking them costs (:func:`clean_batch`). Computed before
    the batch's transaction, so never twice and never under the resource's lock."""
    temporary = batch.temporary
    content = [
        batch.records,
        None
        if temporary is None
        else {
            "expires_at": temporary.expires_at.astimezone(dt.UTC).isoformat(),
            "extra_items": list(temporary.extra_items),
            "reason": temporary.reason,
        },
    ]
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def resent_outcome(row: Any, digest: str) -> BatchOutcome:
    """The outcome of a batch id already applied (``row`` its submit_batch row), for a resend
    whose content has ``digest``: the first outcome, marked duplicate, when the content is the
    same; FAILED_PRECONDITION when it is not, since acknowledging it would drop the new records
    without a word. Rows stored before migration 0014 have no digest: their resends stay
    duplicates, as they were."""
    if row.content_digest is not None and row.content_digest != digest:
        first = row.at.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
        raise FailedPrecondition(
            f"batch_id {quote(row.batch_id, _QUOTED_ID)}: this batch's content (its records, in "
            "order, and its temporary collection) differs from the batch first applied under this "
            f"id at {first} China Standard Time, so nothing of it was applied. A batch id names "
            "one batch's content: send new or corrected records under a new batch_id"
        )
    return stored_outcome(row)


async def apply_writes(
    conn: AsyncConnection,
    code: str,
    writes: list[tuple[str, dict[str, str]]],
    state: tuple[int, int],
    at: dt.datetime,
    submitted_by: str,
    batch_id: str,
    temporary: TemporaryCollection | None,
    *,
    positions: Sequence[int] = (),
    hold: bool = False,
) -> tuple[int, int, list[HeldWrite]]:
    """Write the batch's new versions in bulk; return the new data version, how many records
    are new, and the writes held back. ``state`` is the resource's (data version, record count)
    before. With ``hold`` (第四十一条), a record that would change one stored before this batch
    is not written but returned as a :class:`HeldWrite` (``positions``: each write's index in
    the batch), for node.records._hold to turn into a change request."""
    data_version, record_count = state
    keys = list(dict.fromkeys(key for key, _ in writes))
    columns = (RECORD.c.version, RECORD.c.item_values, RECORD.c.deleted)
    existing: dict[str, Any] = {}
    if 0 < record_count <= len(keys):
        # A small resource (a bulk load just starting): read it whole, one scan. This also
        # spares PostgreSQL's planner an IN list over a table it has no statistics for yet.
        existing = await all_current_rows(conn, code, *columns)
    elif data_version:  # not record_count: records deleted with approval keep their rows
        existing = await current_rows(conn, code, keys, *columns)
    # A deleted record's stored values are empty ({}), so any record resubmitted under its key
    # differs and becomes its next version.
    latest: dict[str, tuple[int, dict[str, str]]] = {k: (v[0], v[1]) for k, v in existing.items()}
    revived = 0
    changed: dict[str, tuple[int, int, Any]] = {}  # key -> (version, data_seq, stored values)
    bind = Binder(conn)
    values_out = bind.processor(VERSION.c.item_values)
    # Per batch constants, converted for the driver once.
    v_code, v_batch, v_by, v_at = bind.each(
        (VERSION.c.resource_code, code),
        (VERSION.c.batch_id, batch_id),
        (VERSION.c.submitted_by, submitted_by),
        (VERSION.c.at, at),
    )
    v_kind = bind.one(VERSION.c.kind, "upsert")
    version_columns = [*_VERSION_COLUMNS]
    extra: tuple[Any, ...] = ()
    if temporary is not None:
        version_columns += ["temporary_reason", "temporary_expires_at", "temporary_items"]
        extra = bind.each(
            (VERSION.c.temporary_reason, temporary.reason),
            (VERSION.c.temporary_expires_at, temporary.expires_at),
            (VERSION.c.temporary_items, list(temporary.extra_items)),
        )
    versions: list[tuple[Any, ...]] = []
    held: list[HeldWrite] = []
    seq = data_version
    for n, (key, values) in enumerate(writes):
        previous = latest.get(key)
        if previous is not None and previous[1] == values:
            continue  # accepted, unchanged: no new version
        if hold and key in existing:
            stored_version, stored_values, _ = existing[key]
            held.append(HeldWrite(positions[n], key, values, stored_version, stored_values))
            continue
        version = 1 if previous is None else previous[0] + 1
        seq += 1
        latest[key] = (version, values)
        stored = values_out(values)  # serialised once, for both tables
        changed[key] = (version, seq, stored)
        versions.append((v_code, seq, key, v_kind, version, stored, v_batch, v_by, v_at, *extra))
    inserts: list[tuple[Any, ...]] = []
    updates: list[dict[str, Any]] = []
    r_code, r_at, r_temporary, r_deleted = bind.each(
        (RECORD.c.resource_code, code),
        (RECORD.c.updated_at, at),
        (RECORD.c.temporary, temporary is not None),
        (RECORD.c.deleted, False),
    )
    for key, (version, data_seq, stored) in changed.items():
        if key in existing:
            revived += bool(existing[key][2])
            updates.append(
                {
                    "b_code": code,
                    "b_key": key,
                    "b_values": latest[key][1],
                    "b_version": version,
                    "b_seq": data_seq,
                    "b_at": at,
                    "b_temporary": temporary is not None,
                }
            )
        else:
            inserts.append(
                (r_code, key, stored, version, data_seq, r_at, r_temporary, r_deleted, 0)
            )
    if inserts:
        await bind.insert_many(RECORD, _RECORD_COLUMNS, inserts)
    if updates:
        await conn.execute(_UPDATE_RECORD, updates)
    if versions:
        await bind.insert_many(VERSION, version_columns, versions)
    return seq, len(inserts) + revived, held


_RECORD_COLUMNS = (
    "resource_code",
    "record_key",
    "item_values",
    "version",
    "data_seq",
    "updated_at",
    "temporary",
    "deleted",
    "open_disputes",  # a new record is not disputed (node.quality._errors)
)
_VERSION_COLUMNS = (
    "resource_code",
    "data_seq",
    "record_key",
    "kind",
    "version",
    "item_values",
    "batch_id",
    "submitted_by",
    "at",
)


#: Columns whose per-row values _apply passes to the driver as they are.
_RAW_COLUMNS = frozenset({"record_key", "version", "data_seq"})


class Binder:
    """Bulk inserts of rows already converted for the driver.

    SQLAlchemy's executemany converts every parameter of every row through its type (about a
    microsecond each), which for ten thousand records dominates Submit. Here the statement is
    still compiled by SQLAlchemy for the connection's dialect, and each value goes through the
    same bind processor SQLAlchemy would use; but a batch's constants (resource code, time,
    submitter) are converted once, and a record's values are serialised to JSON once for both
    tables. Only columns without a processor (strings, integers) are passed through as they are.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._dialect = conn.dialect

    def processor(self, column: sa.Column[Any]) -> Callable[[Any], Any]:
        process = column.type.bind_processor(self._dialect)
        return process if process is not None else _identity

    def one(self, column: sa.Column[Any], value: Any) -> Any:
        value = self.processor(column)(value)
        if self._dialect.name == "sqlite":
            # sqlite3 turns a datetime into text with its registered adapter, once per row
            # bound; a batch's constant time is turned once here, by the same adapter.
            adapt = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
            if adapt is not None:
                return adapt(value)
        return value

    def each(self, *pairs: tuple[sa.Column[Any], Any]) -> tuple[Any, ...]:
        return tuple(self.one(column, value) for column, value in pairs)

    async def insert_many(
        self, table: sa.Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """INSERT ``rows`` (values in ``columns`` order, converted) with one executemany."""
        for name in _RAW_COLUMNS.intersection(columns):
            # These are passed per row unconverted: right only while their types need nothing.
            assert table.c[name].type.bind_processor(self._dialect) is None, name
        statement = sa.insert(table).values({name: sa.bindparam(name) for name in columns})
        compiled = statement.compile(dialect=self._dialect)
        assert list(compiled.positiontup or ()) == list(columns), compiled.positiontup
        await self._conn.exec_driver_sql(str(compiled), rows)


def _identity(value: Any) -> Any:
    return value


async def current_rows(
    conn: AsyncConnection,
    code: str,
    keys: Sequence[str],
    *columns: sa.ColumnElement[Any],
    live_only: bool = False,
) -> dict[str, Any]:
    """The stored ``columns`` of the current records with ``keys`` (a single column's value,
    or a tuple of several), by :func:`rows_by_key`. ``live_only``: leave out records deleted
    with approval (第四十一条)."""
    found: dict[str, Any] = {}
    single = len(columns) == 1
    live = (sa.not_(RECORD.c.deleted),) if live_only else ()
    for row in await rows_by_key(conn, RECORD, code, keys, columns, *live, unique=True):
        found[row[0]] = row[1] if single else tuple(row[1:])
    return found


async def all_current_rows(
    conn: AsyncConnection, code: str, *columns: sa.ColumnElement[Any]
) -> dict[str, Any]:
    rows = await conn.execute(
        sa.select(RECORD.c.record_key, *columns).where(RECORD.c.resource_code == code)
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def temporary_json(temporary: TemporaryCollection) -> str:
    return json.dumps(
        {
            "reason": temporary.reason,
            "expires_at": temporary.expires_at.astimezone(dt.UTC).isoformat(),
            "extra_items": list(temporary.extra_items),
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def stored_outcome(row: Any) -> BatchOutcome:
    return BatchOutcome(
        batch_id=row.batch_id,
        accepted=row.accepted,
        rejected=row.rejected,
        # Stored bounded, so this is the first ack's list; a batch stored before the bounds
        # (node.records._rejections) is cut to them, so that its resend's ack can be sent.
        rejections=bounded(
            Rejection(i, item, reason) for i, item, reason in json.loads(row.rejections)
        ),
        held=tuple(HeldRecord(i, change_id) for i, change_id in json.loads(row.held or "[]")),
        duplicate=True,
        data_version=row.data_version,
        committed_at=row.at,
    )
