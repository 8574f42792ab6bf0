"""The audit log (应用日志审计, 第三十九条): every operation, accepted or refused, hash-chained.

第三十九条 asks that 汇聚、共享、查询、比对、下载、分析研判、访问和更新维护 be traceable and the
log kept at least three years. Three properties follow, and this module is built around them:

- **Durable before success.** :meth:`AuditLog.append` returns a record's sequence number only
  once the record is committed, so a caller never reports success for an operation whose
  record could still be lost. If the write fails, the caller gets the exception. (As durable
  as the database's commit: SQLite in WAL with ``synchronous=NORMAL`` survives a crash of the
  process but may lose its last commits to a power cut; PostgreSQL by default loses none.)
- **Ordered and gap-free, across processes.** Sequences are handed out as ``max + 1`` under a
  lock held to commit (PostgreSQL advisory lock; SQLite's single writer), never from an
  autoincrement, which leaves gaps on rollback and can commit out of order. A reader resuming
  "after N" therefore never misses a record that committed late.
- **Tamper-evident.** ``hash = sha256(prev_hash + "\\n" + canonical JSON of the record)``, the
  first record chained to 64 zeros. Changing or deleting a past record breaks the chain from
  there on, and :meth:`AuditLog.verify_chain` names the first bad sequence. (Removing records
  from the *end* leaves a shorter valid chain: that is what signed checkpoints, which an
  auditor keeps, are for.)

Retention: there is deliberately no API to update or delete single records, here or anywhere
else in govnode. The only way records leave the live database is `govnode audit prune`
(node.audit._prune): whole segments, past the retention of at least three years 第三十九条
requires, archived and verified first, and witnessed. Afterwards the readers here answer a
request for a pruned record with the archive segment that holds it (node.audit._pruned), and
the live chain is checked from the last pruned record's hash (``verify_chain(anchor=...)``).

Group commit: the hot path is one record per gRPC call, so records are not written one
transaction each. Appends queue up; one writer task takes what is pending (up to
``max_batch``) and writes it in one transaction, then wakes every waiter. At low load a lone
record is written at once; under load the batch is whatever arrived while the previous
transaction ran, and while a burst is still arriving the writer lingers (up to
``max_delay_s``) for the rest of it.

Times are UTC here; the CLI shows them in China Standard Time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from json.encoder import encode_basestring as _json_text
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.engine import Connection, Row
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.audit import MAX_DETAIL_CHARS
from gateway.quote import MAX_MESSAGE_BYTES, clip_message
from node.audit._pruned import PrunedMark, read_mark
from node.audit._tree import (
    CATCH_UP_STEP,
    TreeHead,
    encode,
    extend,
    frontier_at,
    kept_frontier,
    prove_consistency,
    prove_inclusion,
    record_leaf,
    save_sql,
    store_subtrees,
    stored_size,
    tree_head,
)
from node.errors import InvalidArgument, StorageUnavailable
from node.models import AuditRecordRow
from node.storage import Database, driver_cursor, driver_marks, utc_now
from node.tlog import Frontier, ProofError

__all__ = [
    "GENESIS_HASH",
    "MAX_QUERY_LIMIT",
    "AuditEntry",
    "AuditLog",
    "AuditLogClosed",
    "AuditRecord",
    "AuditWriteFailed",
    "ChainCheck",
    "Operation",
    "record_hash",
    "request_digest",
]

log = structlog.get_logger(__name__)

GENESIS_HASH = "0" * 64
MAX_QUERY_LIMIT = 1000

# Held from reading the chain's head to commit: one writer at a time, in every process.
_LOCK = "govnode.audit"
_VERIFY_PAGE = 1000

_table: Table = SQLModel.metadata.tables[str(AuditRecordRow.__tablename__)]
_c = _table.c


class Operation(StrEnum):
    """The operations 第三十九条 enumerates; the value is what is stored."""

    AGGREGATE = "aggregate"  # 汇聚: records submitted into the platform
    SHARE = "share"  # 共享: bulk exchange, subscriptions, grants
    QUERY = "query"  # 查询
    COMPARE = "compare"  # 比对: verify and compare claimed values
    DOWNLOAD = "download"  # 下载: open data downloads
    ANALYZE = "analyze"  # 分析 (the Measures: 分析研判): quality and compliance reports
    ACCESS = "access"  # 访问: any other call (catalog reads, listings, federation)
    MAINTAIN = "maintain"  # 更新维护: data or catalog changed

    @property
    def term(self) -> str:
        """The Chinese term of the Measures, e.g. 查询."""
        return _TERMS[self]

    @property
    def label(self) -> str:
        """The English label shown next to the term, e.g. Query."""
        return self.value.capitalize()


_TERMS = {
    Operation.AGGREGATE: "汇聚",
    Operation.SHARE: "共享",
    Operation.QUERY: "查询",
    Operation.COMPARE: "比对",
    Operation.DOWNLOAD: "下载",
    Operation.ANALYZE: "分析",
    Operation.ACCESS: "访问",
    Operation.MAINTAIN: "更新维护",
}


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """What happened in one call: who, through which node, what, on which resource, outcome.

    ``caller`` is the caller's identity URI, or what the call presented when it was refused
    ("unauthenticated", a revoked identity). ``request_digest`` is :func:`request_digest` of
    the request bytes: the log proves what was asked without holding the data itself.
    """

    caller: str
    method: str
    operation: Operation
    outcome: str
    request_digest: str
    origin_node: str = ""
    resource_code: str = ""
    message: str = ""
    request_id: str = ""
    detail: dict[str, str | int] = field(default_factory=dict)
    at: dt.datetime = field(default_factory=utc_now)


@dataclass(frozen=True, kw_only=True)
class AuditRecord(AuditEntry):
    """An entry as committed: its place in the log and its link in the chain."""

    sequence: int
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainCheck:
    """The result of :meth:`AuditLog.verify_chain`."""

    ok: bool
    checked: int
    first_bad_sequence: int | None = None
    reason: str = ""
    #: The Merkle root recomputed from the records themselves at each size asked for (and at
    #: the last record checked), when the check started at the first record (or from a
    #: frontier given for the records before it).
    roots: dict[int, bytes] = field(default_factory=dict)
    #: The records before the check (``after``): the log's size is ``after + checked``.
    after: int = 0

    @property
    def size(self) -> int:
        return self.after + self.checked


class AuditLogClosed(RuntimeError):
    """The audit log is not running, so the operation cannot be recorded (and must not run)."""


class AuditWriteFailed(RuntimeError):
    """The batch holding this record was not committed; the cause is chained."""


def request_digest(data: bytes) -> str:
    """Hex SHA-256 of the serialized request, as :attr:`AuditEntry.request_digest` wants."""
    return hashlib.sha256(data).hexdigest()


# --- the chain ----------------------------------------------------------------------------
# This is a storage format kept for years: change nothing here without a migration plan for
# every record already hashed. (It has its own canonical JSON on purpose, so that a change to
# the catalog's cannot silently invalidate old chains.)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _timestamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The chain link: sha256 over the previous hash and this record's canonical fields.

    ``fields`` are the stored columns but ``hash`` and ``prev_hash``, with ``at`` a datetime
    and ``detail`` a mapping.
    """
    content = {k: v for k, v in fields.items() if k not in ("hash", "prev_hash")}
    content["at"] = _timestamp(content["at"])
    return content_hash(prev_hash, content)


def content_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """The chain link over a record's hashed content as it is hashed (``at`` already the
    UTC timestamp text): what a holder of a proof file recomputes (node.audit._prooffile)."""
    payload = prev_hash + "\n" + _canonical(content)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --- fitting entries into their columns ---------------------------------------------------
# Much of an entry comes from the caller (the identity it presented, its request id, the
# method name it tried, messages quoting its input). One over-long or unencodable value must
# not fail the whole batch, so values are made storable before they are queued: NUL (which
# PostgreSQL text refuses) and lone surrogates replaced, over-long values cut with a marker.
# The message and detail values, stored as text of any length, are bounded like the guard
# bounds them (gateway.audit.bounded), so one call cannot write a large record.

_LENGTHS: dict[str, int] = {
    c.name: length
    for c in _table.columns
    if isinstance(length := getattr(c.type, "length", None), int)
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _clean(value: str, limit: int | None = None) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def _storable(value: str, limit: int) -> bool:
    """Whether :func:`_clean` would leave ``value`` as it is (ASCII only: the cheap check)."""
    return len(value) <= limit and value.isascii() and "\x00" not in value


def _fits(entry: AuditEntry) -> bool:
    """Whether :func:`_fit` would leave ``entry`` as it is: the usual case (every record of a
    call through the guard, which bounds it first), checked without copying the entry."""
    if type(entry.operation) is not Operation or entry.at.tzinfo is not dt.UTC:
        return False
    for name in ("caller", "origin_node", "method", "resource_code", "outcome", "request_id"):
        if not _storable(getattr(entry, name), _LENGTHS[name]):
            return False
    if entry.message and not _storable(entry.message, MAX_MESSAGE_BYTES):
        return False
    for key, value in entry.detail.items():
        if type(key) is not str or not _storable(key, MAX_DETAIL_CHARS):
            return False
        if type(value) is not int and not (
            type(value) is str and _storable(value, MAX_DETAIL_CHARS)
        ):
            return False
    return True


def _fit(entry: AuditEntry) -> AuditEntry:
    if entry.at.tzinfo is None or entry.at.utcoffset() is None:
        raise ValueError(f"audit entry time {entry.at.isoformat()} is naive; use UTC")
    if entry.request_digest and not _HEX64.fullmatch(entry.request_digest):
        raise ValueError(f"request_digest {entry.request_digest!r} is not a hex SHA-256")
    return entry if _fits(entry) else _refit(entry)


def _refit(entry: AuditEntry) -> AuditEntry:
    """``entry`` with every value made storable (see above)."""
    detail: dict[str, str | int] = {}
    for key, value in entry.detail.items():
        if not isinstance(value, str | int):
            raise ValueError(f"audit detail {key!r}: {type(value).__name__} is not str or int")
        detail[_clean(str(key), MAX_DETAIL_CHARS)] = (
            _clean(value, MAX_DETAIL_CHARS) if isinstance(value, str) else int(value)
        )
    return dataclasses.replace(
        entry,
        caller=_clean(entry.caller, _LENGTHS["caller"]),
        origin_node=_clean(entry.origin_node, _LENGTHS["origin_node"]),
        method=_clean(entry.method, _LENGTHS["method"]),
        operation=Operation(entry.operation),
        resource_code=_clean(entry.resource_code, _LENGTHS["resource_code"]),
        outcome=_clean(entry.outcome, _LENGTHS["outcome"]),
        message=clip_message(_clean(entry.message)),
        request_id=_clean(entry.request_id, _LENGTHS["request_id"]),
        detail=detail,
        at=entry.at.astimezone(dt.UTC),
    )


def _hashed_fields(entry: AuditEntry, sequence: int) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "at": entry.at,
        "caller": entry.caller,
        "origin_node": entry.origin_node,
        "method": entry.method,
        "operation": entry.operation.value,
        "resource_code": entry.resource_code,
        "outcome": entry.outcome,
        "message": entry.message,
        "request_digest": entry.request_digest,
        "request_id": entry.request_id,
        "detail": entry.detail,
    }


# --- writing a batch fast ------------------------------------------------------------------
# The audit batch is the one write every call waits for (Verify's cost was mostly this, in
# `make bench`), so the transaction does no more than it must: everything that does not depend
# on the chain's head is prepared before the transaction, and the rows go to the driver as
# tuples, bound by the columns' own SQLAlchemy bind processors (the same stored values the
# Core insert produced). The hash is still exactly :func:`record_hash`: "sequence" sorts last
# among the hashed fields, so the canonical JSON is a prefix computed once plus
# ``,"sequence":N}``. tests/audit/test_audit.py checks both against the general path.

# The columns stored as the entry has them (as :func:`_hashed_fields` gives them), then the
# stored columns in insert order: sequence, the prepared values, the chain.
_ENTRY_COLUMNS = (
    "at",
    "caller",
    "origin_node",
    "method",
    "operation",
    "resource_code",
    "outcome",
    "message",
    "request_digest",
    "request_id",
)
_PREPARED_COLUMNS = (*_ENTRY_COLUMNS, "detail")
_INSERT_COLUMNS = ("sequence", *_PREPARED_COLUMNS, "prev_hash", "hash")
_HEAD_SQL = f"SELECT sequence, hash FROM {_table.name} ORDER BY sequence DESC LIMIT 1"  # noqa: S608


@dataclass(frozen=True)
class _Prepared:
    """One entry made ready for the transaction: its hashed fields' canonical JSON without
    the sequence and the closing brace, and its stored values (but sequence and the chain)."""

    prefix: str
    values: tuple[Any, ...]


def _prepare(entry: AuditEntry) -> _Prepared:
    # The canonical JSON of the hashed fields written out directly, keys in their sorted order
    # and every value a string (or the detail's own canonical JSON): byte for byte what
    # _canonical gives (json.dumps uses this same string encoder), at a third of its cost.
    # tests/audit/test_audit.py checks it against record_hash.
    detail = _canonical(entry.detail) if entry.detail else "{}"
    operation = entry.operation.value
    prefix = (
        f'{{"at":{_json_text(_timestamp(entry.at))},"caller":{_json_text(entry.caller)},'
        f'"detail":{detail},"message":{_json_text(entry.message)},'
        f'"method":{_json_text(entry.method)},"operation":{_json_text(operation)},'
        f'"origin_node":{_json_text(entry.origin_node)},"outcome":{_json_text(entry.outcome)},'
        f'"request_digest":{_json_text(entry.request_digest)},'
        f'"request_id":{_json_text(entry.request_id)},'
        f'"resource_code":{_json_text(entry.resource_code)}'
    )
    values = (
        entry.at,
        entry.caller,
        entry.origin_node,
        entry.method,
        operation,
        entry.resource_code,
        entry.outcome,
        entry.message,
        entry.request_digest,
        entry.request_id,
        detail,
    )
    return _Prepared(prefix, values)


def _chain_hash(prev_hash: str, prepared: _Prepared, sequence: int) -> str:
    """:func:`record_hash` of a prepared entry at ``sequence``."""
    payload = f'{prev_hash}\n{prepared.prefix},"sequence":{sequence}}}'
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Statement:
    """The batch insert in one dialect's parameter style, and its columns' bind processors."""

    sql: str
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: Saving the tree's frontier (node.audit._tree.save_sql), in the same parameter style.
    save_tree: str


_STATEMENTS: dict[str, _Statement] = {}


def _statement(dialect: Any) -> _Statement:
    key = f"{dialect.name}/{dialect.driver}/{dialect.paramstyle}"
    found = _STATEMENTS.get(key)
    if found is not None:
        return found
    marks = driver_marks(dialect, len(_INSERT_COLUMNS))
    sql = (
        f"INSERT INTO {_table.name} ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(marks)})"
    )
    processors = []
    for i, name in enumerate(_INSERT_COLUMNS):
        processor = _c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            processors.append((i, processor))
    statement = _STATEMENTS[key] = _Statement(
        sql, tuple(processors), save_sql((marks[0], marks[1]))
    )
    return statement


def hashed_content(row: Row[Any]) -> dict[str, Any]:
    """A stored record's content as its chain hash covers it (``at`` as the timestamp text,
    ``detail`` a mapping): what archives and proof files carry."""
    content = {name: getattr(row, name) for name in ("sequence", *_ENTRY_COLUMNS)}
    content["at"] = _timestamp(content["at"])
    content["detail"] = json.loads(row.detail)
    return content


def _record(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        sequence=row.sequence,
        at=row.at,
        caller=row.caller,
        origin_node=row.origin_node,
        method=row.method,
        operation=Operation(row.operation),
        resource_code=row.resource_code,
        outcome=row.outcome,
        message=row.message,
        request_digest=row.request_digest,
        request_id=row.request_id,
        detail=json.loads(row.detail),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass
class _Pending:
    entry: AuditEntry
    future: asyncio.Future[int]


# --- the log ------------------------------------------------------------------------------


class AuditLog:
    """A node's audit log over its :class:`Database`; one per process.

    Call :meth:`start` before appending and :meth:`close` at shutdown (it writes everything
    still pending first). Reading (:meth:`query`, :meth:`tail`, :meth:`verify_chain`) needs
    neither. Several processes may each run an ``AuditLog`` over one PostgreSQL database.
    """

    def __init__(self, db: Database, *, max_batch: int = 512, max_delay_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay_s must not be negative, got {max_delay_s}")
        self._db = db
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._last_batch = 0  # size of the last batch written: the writer's view of the load
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._inflight: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # The audit tree's frontier after the last batch this instance committed, and the one
        # a batch in flight grew (adopted once it commits).
        self._frontier: Frontier | None = None
        self._grown: Frontier | None = None
        #: Transactions committed by this instance, and the records they held (for tests and
        #: benchmarks: group commit shows as records_written / batches_written).
        self.batches_written = 0
        self.records_written = 0
        #: Told the size and the commit time (seconds) of every batch written (the node's
        #: metrics: node.ops); None: nobody listens.
        self.on_commit: Callable[[int, float], None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer task (idempotent)."""
        if self._closing:
            raise AuditLogClosed("the audit log was closed and cannot be restarted")
        if self._task is None:
            # A log written before the tree (migration 0016) is taken into it first, in steps.
            self._frontier = None
            while (behind := await self._db.write_sync("audit.tree", self._catch_up)) > 0:
                log.info("audit.tree_catching_up", records_left=behind)
            self._task = asyncio.create_task(self._writer(), name="govnode.audit.writer")

    async def close(self) -> None:
        """Write everything pending, then stop the writer (idempotent)."""
        self._closing = True
        self._wakeup.set()
        if self._task is None:
            return
        await asyncio.wait([self._task])
        if not self._task.cancelled() and self._task.exception() is not None:
            log.error("audit.writer_failed", error=repr(self._task.exception()))

    # --- writing --------------------------------------------------------------------------

    async def append(self, entry: AuditEntry) -> int:
        """Record ``entry``; returns its sequence number once the record is committed.

        Raises :class:`AuditLogClosed` if the log is not running and
        :class:`AuditWriteFailed` if the record could not be committed: in both cases the
        operation was not recorded and must not be reported as done.
        """
        if self._task is None or self._closing or self._task.done():
            state = "not started" if self._task is None else "closed"
            raise AuditLogClosed(
                f"the audit log is {state}: the operation cannot be recorded (第三十九条)"
            )
        pending = _Pending(_fit(entry), asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._wakeup.set()
        return await pending.future

    async def _writer(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await self._linger()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._inflight = batch
                await self._commit(batch)
                self._inflight = []
        except BaseException as exc:
            # Cancelled (the loop is shutting down) or a bug: nobody may wait forever, and
            # nobody may append to a log that no longer writes.
            self._closing = True
            batch, self._inflight, self._pending = self._inflight + self._pending, [], []
            _fail(batch, AuditLogClosed(f"the audit log writer stopped: {exc!r}"))
            raise

    async def _linger(self) -> None:
        """Let more entries join the batch, for at most max_delay_s.

        At low load (the previous batch was a lone entry) the writer only yields once, so a
        lone append is written at once. Under load (the previous batch had company) it waits
        up to max_delay_s for the batch to fill: every commit writes pages of five B-trees to
        the WAL, so fewer, larger commits leave more of the CPU to the calls themselves
        (measured with `make bench`: about +15% Verify calls/s at 64 calls in flight).
        """
        if self._max_delay_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_delay_s
        if self._last_batch > 1:
            if not self._closing and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._max_delay_s)
            return
        while not self._closing and len(self._pending) < self._max_batch:
            before = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == before or loop.time() >= deadline:
                return

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            entries = [_prepare(p.entry) for p in batch]
            began = time.perf_counter()
            first = await self._db.write_sync("audit.append", lambda c: self._insert(c, entries))
            took = time.perf_counter() - began
        except Exception as exc:
            # A fault of the database: its driver's text (callers see only UNAVAILABLE).
            cause = exc.cause if isinstance(exc, StorageUnavailable) else repr(exc)
            log.error("audit.append_failed", records=len(batch), error=cause)
            _fail(batch, exc)
            return
        self._frontier = self._grown
        self.batches_written += 1
        self._last_batch = len(batch)
        self.records_written += len(batch)
        if self.on_commit is not None:
            self.on_commit(len(batch), took)
        for offset, pending in enumerate(batch):
            if not pending.future.done():  # a cancelled caller still has its record written
                pending.future.set_result(first + offset)

    def _insert(self, connection: Connection, entries: Sequence[_Prepared]) -> int:
        # Runs again from scratch if the database asks for a retry: nothing here but SQL and
        # the chain. One call of Database.write_sync: on SQLite the whole batch is one hop to
        # the writer thread. The statements go to the driver's cursor, without SQLAlchemy's
        # work per statement (it was most of the writer's CPU per batch).
        self._db.lock_sync(connection, _LOCK)
        statement = _statement(connection.dialect)
        with driver_cursor(connection) as cursor:
            cursor.execute(_HEAD_SQL)
            head = cursor.fetchone()
            last, prev_hash = (
                (int(head[0]), str(head[1])) if head is not None else (0, GENESIS_HASH)
            )
            rows: list[tuple[Any, ...]] = []
            for sequence, prepared in enumerate(entries, start=last + 1):
                digest = _chain_hash(prev_hash, prepared, sequence)
                row = [sequence, *prepared.values, prev_hash, digest]
                for i, process in statement.processors:
                    row[i] = process(row[i])
                rows.append(tuple(row))
                prev_hash = digest
            cursor.executemany(statement.sql, rows)
            frontier = frontier_at(connection, last, self._frontier)
            store_subtrees(connection, extend(frontier, (row[-1] for row in rows)))
            cursor.execute(statement.save_tree, (frontier.size, encode(frontier)))
        self._grown = frontier
        return last + 1

    def _catch_up(self, connection: Connection) -> int:
        """One step of taking records written before the tree (migration 0016) into it;
        returns how many records the tree still lacks."""
        self._db.lock_sync(connection, _LOCK)
        head = connection.exec_driver_sql(_HEAD_SQL).first()
        last = int(head[0]) if head is not None else 0
        covered = stored_size(connection)
        target = min(last, covered + CATCH_UP_STEP) if covered <= last else last
        frontier_at(connection, target, None)
        return last - target

    # --- reading --------------------------------------------------------------------------

    async def query(
        self,
        *,
        caller: str | None = None,
        resource_code: str | None = None,
        operation: Operation | None = None,
        outcome: str | None = None,
        request_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        after_sequence: int = 0,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records matching every filter given, after ``after_sequence``, in sequence order.

        ``since`` is inclusive, ``until`` exclusive; ``limit`` is 1 to 1000.
        """
        if after_sequence < 0:
            raise InvalidArgument(f"after_sequence: must not be negative, got {after_sequence}")
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit: must be 1 to {MAX_QUERY_LIMIT}, got {limit}")
        where = _filters(caller, resource_code, operation, outcome, request_id, since, until)
        mark = await self.pruned()
        if mark is not None and after_sequence < mark.first_live - 1:
            # A query from a time after every pruned record needs none of them.
            if since is None or since <= mark.newest_at:
                raise mark.refuse_range()
            after_sequence = mark.first_live - 1
        statement = (
            select(_table)
            .where(_c.sequence > after_sequence, *where)
            .order_by(_c.sequence)
            .limit(limit)
        )
        return await self._select("audit.query", statement)

    async def tail(
        self,
        n: int,
        *,
        caller: str | None = None,
        resource_code: str | None = None,
        operation: Operation | None = None,
        outcome: str | None = None,
    ) -> list[AuditRecord]:
        """The last ``n`` records (matching the filters given), in sequence order."""
        if not 0 <= n <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"n: must be 0 to {MAX_QUERY_LIMIT}, got {n}")
        where = _filters(caller, resource_code, operation, outcome, None, None, None)
        statement = select(_table).where(*where).order_by(_c.sequence.desc()).limit(n)
        return list(reversed(await self._select("audit.tail", statement)))

    async def newest_first(
        self,
        *,
        before_sequence: int | None = None,
        after_sequence: int | None = None,
        limit: int = 50,
        method: str | None = None,
        caller: str | None = None,
        outcome: str | None = None,
        request_id: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[AuditRecord]:
        """Records matching every filter given, newest first, below ``before_sequence`` (keyset
        paging for the operator console: each page one indexed range scan, however large the
        log). ``after_sequence`` bounds the scan from below (a filter that matches rarely
        then reads a window, not the whole log). ``method`` ending in ``*`` matches that
        prefix (``console:*``)."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise InvalidArgument(f"limit: must be 1 to {MAX_QUERY_LIMIT}, got {limit}")
        where = _filters(None, None, None, outcome, request_id, since, until)
        if caller:
            # Read along the sequence, not through the caller index: a caller with most of
            # the log's records would otherwise be sorted whole for one page.
            where.append(func.coalesce(_c.caller, "") == caller)
        if method:
            if method.endswith("*"):
                where.append(_c.method.startswith(method[:-1], autoescape=True))
            else:
                where.append(_c.method == method)
        if before_sequence is not None:
            where.append(_c.sequence < before_sequence)
        if after_sequence is not None:
            where.append(_c.sequence > after_sequence)
        statement = select(_table).where(*where).order_by(_c.sequence.desc()).limit(limit)
        return await self._select("audit.newest_first", statement)

    async def record(self, sequence: int) -> AuditRecord | None:
        """The record ``sequence``, or None when the log has none (not yet, or pruned)."""
        found = await self._select(
            "audit.record", select(_table).where(_c.sequence == sequence).limit(1)
        )
        return found[0] if found else None

    async def count(self) -> int:
        """How many records the log holds."""

        async def txn(session: AsyncSession) -> int:
            connection = await session.connection()
            return int(
                (await connection.execute(select(func.count()).select_from(_table))).scalar_one()
            )

        return await self._db.read("audit.count", txn)

    async def head(self) -> tuple[int, str]:
        """(sequence, hash) of the newest record; (0, 64 zeros) for an empty log."""

        async def txn(session: AsyncSession) -> tuple[int, str]:
            connection = await session.connection()
            row = (
                await connection.execute(
                    select(_c.sequence, _c.hash).order_by(_c.sequence.desc()).limit(1)
                )
            ).first()
            return (int(row.sequence), str(row.hash)) if row is not None else (0, GENESIS_HASH)

        return await self._db.read("audit.head", txn)

    async def pruned(self) -> PrunedMark | None:
        """Where the live log starts if archived segments were pruned (node.audit._pruned)."""

        async def txn(session: AsyncSession) -> PrunedMark | None:
            return await read_mark(await session.connection())

        return await self._db.read("audit.pruned", txn)

    async def kept_frontier(self, size: int) -> Frontier:
        """The tree's frontier over the first ``size`` records, read from the stored subtrees
        (not recomputed): what a check of the live log after a prune starts from."""

        async def txn(session: AsyncSession) -> Frontier:
            return await kept_frontier(session, size)

        return await self._db.read("audit.kept_frontier", txn)

    async def _refuse_pruned(self, sequence: int, what: str = "record") -> None:
        mark = await self.pruned()
        if mark is not None and sequence < mark.first_live:
            raise mark.refuse(sequence, what)

    # --- the Merkle tree (node.audit._tree) ------------------------------------------------

    async def tree_head(self, size: int | None = None) -> TreeHead:
        """The Merkle tree over the first ``size`` records (over every record if None), with
        its root: what a checkpoint signs."""

        async def txn(session: AsyncSession) -> TreeHead:
            return await tree_head(session, size)

        try:
            return await self._db.read("audit.tree_head", txn)
        except ProofError as exc:
            if size is not None:
                await self._refuse_pruned(size, "the tree's size ends at record")
            raise InvalidArgument(str(exc)) from exc

    async def inclusion_proof(self, sequence: int, size: int) -> tuple[bytes, list[bytes]]:
        """Record ``sequence``'s leaf hash and the proof that it is in the tree of ``size``
        records (node.tlog.verify_inclusion checks it against that tree's root)."""
        if not 0 < sequence <= size:
            raise InvalidArgument(f"sequence: {sequence} is not in a tree of {size} records")
        await self._refuse_pruned(sequence)

        async def txn(session: AsyncSession) -> tuple[bytes, list[bytes]]:
            await tree_head(session, size)  # the tree covers that size, or ProofError says so
            return await prove_inclusion(session, sequence, size)

        try:
            return await self._db.read("audit.inclusion_proof", txn)
        except ProofError as exc:
            raise InvalidArgument(str(exc)) from exc

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The proof that the tree of ``size1`` records is a prefix of the tree of ``size2``."""
        if not 0 < size1 <= size2:
            raise InvalidArgument(f"sizes: no consistency proof from {size1} to {size2} records")

        async def txn(session: AsyncSession) -> list[bytes]:
            await tree_head(session, size2)
            return await prove_consistency(session, size1, size2)

        try:
            return await self._db.read("audit.consistency_proof", txn)
        except ProofError as exc:
            # Proofs that need only kept subtrees (256 records and up) still work after a
            # prune; one that needs the hashes of pruned records is answered with the segment.
            await self._refuse_pruned(size1, f"a proof from size {size1} needs record")
            raise InvalidArgument(str(exc)) from exc

    async def record_content(self, sequence: int) -> tuple[dict[str, Any], str, str] | None:
        """Record ``sequence`` as its chain hash covers it: (hashed content with ``at`` as
        the timestamp text, prev_hash, hash); None if there is no such record.
        Raises :class:`~node.audit._pruned.RecordsPruned` naming the archive segment if it
        was pruned."""
        await self._refuse_pruned(sequence)
        rows = await self._raw_page(sequence - 1, 1)
        if not rows or rows[0].sequence != sequence:
            return None
        row = rows[0]
        return hashed_content(row), str(row.prev_hash), str(row.hash)

    async def record_hash(self, sequence: int) -> bytes | None:
        """The chain hash of record ``sequence`` (its leaf's data), or None if there is none
        (RecordsPruned naming the archive segment if it was pruned)."""
        await self._refuse_pruned(sequence)

        async def txn(session: AsyncSession) -> bytes | None:
            connection = await session.connection()
            row = (await connection.execute(select(_c.hash).where(_c.sequence == sequence))).first()
            return None if row is None else bytes.fromhex(str(row.hash))

        return await self._db.read("audit.record_hash", txn)

    async def _select(self, name: str, statement: Any) -> list[AuditRecord]:
        async def txn(session: AsyncSession) -> list[AuditRecord]:
            connection = await session.connection()
            return [_record(row) for row in await connection.execute(statement)]

        return await self._db.read(name, txn)

    # --- verification ---------------------------------------------------------------------

    async def verify_chain(
        self,
        after: int = 0,
        limit: int | None = None,
        *,
        progress: Callable[[int], None] | None = None,
        roots_at: Collection[int] = (),
        anchor: str | None = None,
        frontier: Frontier | None = None,
    ) -> ChainCheck:
        """Recompute the chain from record ``after + 1`` (trusting record ``after``'s hash).

        Checks, for every record up to ``limit`` of them: the sequence follows on (a deleted
        record leaves a gap), ``prev_hash`` is the previous record's hash, and ``hash``
        matches the record's contents. ``progress`` is called with the count checked so far
        after each page, for long checks. From the first record, the Merkle root of the
        records as they are is recomputed on the way (not read from the stored tree) and
        given at each size of ``roots_at`` reached and at the end.

        After a prune record ``after`` is gone: ``anchor`` is then its chain hash (the pruned
        mark's), and ``frontier`` the tree over the first ``after`` records (from the kept
        subtrees), from which the roots are computed on.
        """
        if after < 0:
            raise InvalidArgument(f"after: must not be negative, got {after}")
        if limit is not None and limit < 0:
            raise InvalidArgument(f"limit: must not be negative, got {limit}")
        if frontier is not None and frontier.size != after:
            raise ValueError(f"a frontier of {frontier.size} records, not of {after}")
        prev_hash = GENESIS_HASH
        if anchor is not None:
            prev_hash = anchor
        elif after > 0:
            found = await self._raw_page(after - 1, 1)
            if not found or found[0].sequence != after:
                return ChainCheck(False, 0, after, f"record #{after} is missing", after=after)
            prev_hash = found[0].hash
        expected, checked = after + 1, 0
        if frontier is None and after == 0:
            frontier = Frontier()
        wanted = set(roots_at)
        roots: dict[int, bytes] = {}
        if frontier is not None and frontier.size in wanted:
            roots[frontier.size] = frontier.root()
        while limit is None or checked < limit:
            page = _VERIFY_PAGE if limit is None else min(_VERIFY_PAGE, limit - checked)
            rows = await self._raw_page(expected - 1, page)
            for row in rows:
                problem = _check_row(row, expected, prev_hash)
                if problem is not None:
                    return ChainCheck(False, checked, expected, problem, roots, after)
                if frontier is not None:
                    frontier.append(record_leaf(row.hash))
                    if frontier.size in wanted:
                        roots[frontier.size] = frontier.root()
                prev_hash, expected, checked = row.hash, expected + 1, checked + 1
            if progress is not None:
                progress(checked)
            if len(rows) < page:
                break
        if frontier is not None:
            roots[frontier.size] = frontier.root()
        return ChainCheck(True, checked, roots=roots, after=after)

    async def _raw_page(self, after: int, limit: int) -> list[Row[Any]]:
        async def txn(session: AsyncSession) -> list[Row[Any]]:
            connection = await session.connection()
            result = await connection.execute(
                select(_table).where(_c.sequence > after).order_by(_c.sequence).limit(limit)
            )
            return list(result)

        return await self._db.read("audit.verify", txn)


def _check_row(row: Row[Any], expected: int, prev_hash: str) -> str | None:
    """Why ``row`` breaks the chain, or None."""
    if row.sequence != expected:
        return f"record #{expected} is missing (the next record is #{row.sequence})"
    if row.prev_hash != prev_hash:
        return (
            f"record #{expected} does not link to record #{expected - 1}: one of them was "
            "altered or replaced"
        )
    try:
        detail = json.loads(row.detail)
    except ValueError:
        return f"record #{expected} was altered: its detail is not JSON"
    fields = {name: getattr(row, name) for name in ("sequence", *_ENTRY_COLUMNS)} | {
        "detail": detail
    }
    if record_hash(prev_hash, fields) != row.hash:
        return f"record #{expected} was altered: its contents do not match its hash"
    return None


def _filters(
    caller: str | None,
    resource_code: str | None,
    operation: Operation | None,
    outcome: str | None,
    request_id: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    for column, value in (
        (_c.caller, caller),
        (_c.resource_code, resource_code),
        (_c.operation, None if operation is None else Operation(operation).value),
        (_c.outcome, outcome),
        (_c.request_id, request_id),
    ):
        if value is not None:
            where.append(column == value)
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and (moment.tzinfo is None or moment.utcoffset() is None):
            raise InvalidArgument(f"{name}: {moment.isoformat()} has no time zone; use UTC")
    if since is not None:
        where.append(_c.at >= since)
    if until is not None:
        where.append(_c.at < until)
    return where


def _fail(batch: Sequence[_Pending], cause: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            error = AuditWriteFailed(
                f"audit record not committed ({len(batch)} in its batch): {cause}"
            )
            error.__cause__ = cause
            pending.future.set_exception(error)
