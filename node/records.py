"""Records of the resources this node owns: 汇聚 (Submit), 联机验证 (Verify), 比对验证
(Compare), 检索查询 (Query), history and aggregation status.

Who may call what (share types, grants, methods) is decided before these methods run; here
only what concerns the data itself is enforced, and Submit's rule that only a resource's
provider writes its records.

Storage: ``record`` holds the current version of each record, keyed by the canonical JSON of
its key items' values; ``record_version`` every version ever written, numbered per resource by
a gap-free ``data_seq`` (the resource's data version, the change feed Exchange and Subscribe
follow); nothing is ever deleted here (第四十一条: deletion needs an approval and is a
version of its own). Values are stored in canonical form (node.validation), so equal data
compares equal whatever way it was written.

Submit is one write transaction per batch and is acknowledged after commit: a batch is applied
entirely or not at all at the database level, while records that break a rule are refused one
by one (with reasons) and the others applied. Writes are bulk statements (SQLAlchemy Core,
executemany), and the existing rows for a batch's keys are read with a few IN queries.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import node.models  # noqa: F401  (registers the record tables on SQLModel.metadata)
from gateway.identity import Identity, Role
from node.catalog_types import ITEM_NAME_RE, ResourceEntry, ResourceStatus, UpdateCycle
from node.codes import region_problem
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.records_query import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_QUERY_ROWS,
    PageCursor,
    decode_token,
    encode_token,
    key_text,
    plan_query,
    shape_row,
)
from node.records_types import (
    MAX_BATCH_ID,
    MAX_BATCH_RECORDS,
    MAX_COMPARE,
    MAX_TEMPORARY_DAYS,
    AggregationStatus,
    BatchOutcome,
    MatchResult,
    QueryFilter,
    QueryOperator,
    QueryPage,
    QueryRow,
    RecordVersion,
    Rejection,
    SubmitBatch,
    TemporaryCollection,
    VerifyOutcome,
)
from node.storage import Database, utc_now
from node.validation import CST, RecordSchema, schema_for

__all__ = [
    "CYCLE_ALLOWANCE",
    "RECORD_KEY_BYTES",
    "AggregationStatus",
    "BatchOutcome",
    "MatchResult",
    "QueryFilter",
    "QueryOperator",
    "QueryPage",
    "QueryRow",
    "RecordVersion",
    "Records",
    "Rejection",
    "SubmitBatch",
    "TemporaryCollection",
    "VerifyOutcome",
]

log = structlog.get_logger(__name__)

_RECORD = SQLModel.metadata.tables["record"]
_VERSION = SQLModel.metadata.tables["record_version"]
_DATA = SQLModel.metadata.tables["resource_data"]
_BATCH = SQLModel.metadata.tables["submit_batch"]

#: A record key (canonical JSON of the key values) may take at most this many UTF-8 bytes:
#: it is a primary-key column, and btree entries must stay small.
RECORD_KEY_BYTES = 1024
#: Keys per IN (...) lookup: well under SQLite's and asyncpg's bound-parameter limits.
_IN_CHUNK = 500
MAX_TEMPORARY_REASON = 2000

#: How long after the last aggregation a resource becomes overdue (第二十一条 "在规定期限内").
#: Each fixed cycle gets one day of grace on top of its length (a daily job may run at any hour);
#: REALTIME resources are overdue after a silent day; IRREGULAR ones are never overdue.
CYCLE_ALLOWANCE: dict[UpdateCycle, dt.timedelta | None] = {
    UpdateCycle.REALTIME: dt.timedelta(days=1),
    UpdateCycle.DAILY: dt.timedelta(days=2),
    UpdateCycle.WEEKLY: dt.timedelta(days=8),
    UpdateCycle.MONTHLY: dt.timedelta(days=32),
    UpdateCycle.QUARTERLY: dt.timedelta(days=93),
    UpdateCycle.YEARLY: dt.timedelta(days=367),
    UpdateCycle.IRREGULAR: None,
}

_CURRENT_VALUES = sa.select(_RECORD.c.item_values).where(
    _RECORD.c.resource_code == sa.bindparam("code"),
    _RECORD.c.record_key == sa.bindparam("key"),
)
_UPDATE_RECORD = (
    sa.update(_RECORD)
    .where(
        _RECORD.c.resource_code == sa.bindparam("b_code"),
        _RECORD.c.record_key == sa.bindparam("b_key"),
    )
    .values(
        item_values=sa.bindparam("b_values", type_=_RECORD.c.item_values.type),
        version=sa.bindparam("b_version"),
        data_seq=sa.bindparam("b_seq"),
        updated_at=sa.bindparam("b_at", type_=_RECORD.c.updated_at.type),
        temporary=sa.bindparam("b_temporary"),
    )
)

Clock = Callable[[], dt.datetime]


class Records:
    """The records of the resources this node owns, over its :class:`Database`."""

    def __init__(self, db: Database, node_region: str, *, clock: Clock = utc_now) -> None:
        problem = region_problem(node_region)
        if problem is not None:
            raise ValueError(problem)
        self._db = db
        self.region = node_region
        self._clock = clock

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC)

    # --- 汇聚 -------------------------------------------------------------------------------

    async def submit(
        self, caller: Identity, entry: ResourceEntry, batch: SubmitBatch
    ) -> BatchOutcome:
        """Aggregate one batch of records into ``entry`` (汇聚, 第二十一条).

        The request's shape is checked first (INVALID_ARGUMENT whoever sends it), then the
        caller must be the provider, then the resource must be active here. Each record is
        checked against the catalog (第十二、十五条); a refused record gets one
        :class:`Rejection` per problem and the others are still applied. A record replaces the
        stored record with the same key as its next version (every version is kept); one equal
        to the stored record is accepted without a new version. When a batch carries one key
        twice, both are applied in order: the later wins, the earlier stays in the history.
        A batch id already applied to the resource returns its first outcome with
        ``duplicate`` set and applies nothing.
        """
        code = entry.resource_code
        now = self._now()
        _check_batch(entry, batch, now)
        if caller.role is not Role.AGENCY or caller.subject != entry.provider_code:
            raise PermissionDenied(
                f"{_who(caller)} may not submit records of resource {code}: only its provider "
                f"agency {entry.provider_code} may (第二十一条)"
            )
        self._check_local(entry)
        if entry.status is not ResourceStatus.ACTIVE:
            raise FailedPrecondition(
                f"resource {code} is {entry.status.value}; records are aggregated into active "
                "resources only"
            )
        writes, rejections, rejected = _clean_batch(schema_for(entry), batch)
        accepted = len(batch.records) - rejected
        temporary = batch.temporary

        async def txn(session: AsyncSession) -> BatchOutcome:
            conn = await session.connection()
            # One submitter per resource at a time: data_seq stays gap-free and in commit
            # order, and a resent batch waits for the first and then finds it (PostgreSQL
            # advisory lock; SQLite's BEGIN IMMEDIATE already serialises writers).
            await self._db.lock(conn, f"records.submit:{code}")
            done = (
                await conn.execute(
                    sa.select(_BATCH).where(
                        _BATCH.c.resource_code == code, _BATCH.c.batch_id == batch.batch_id
                    )
                )
            ).first()
            if done is not None:
                return _stored_outcome(done)
            at = self._now()
            state = (
                await conn.execute(sa.select(_DATA).where(_DATA.c.resource_code == code))
            ).first()
            data_version = state.data_version if state is not None else 0
            count = state.record_count if state is not None else 0
            if writes:
                data_version, inserted = await _apply(
                    conn, code, writes, data_version, at, caller.uri, batch.batch_id, temporary
                )
                count += inserted
                data = {
                    "data_version": data_version,
                    "last_aggregated_at": at,
                    "last_batch_id": batch.batch_id,
                    "record_count": count,
                }
                if state is None:
                    await conn.execute(sa.insert(_DATA).values(resource_code=code, **data))
                else:
                    await conn.execute(
                        sa.update(_DATA).where(_DATA.c.resource_code == code).values(**data)
                    )
            await conn.execute(
                sa.insert(_BATCH).values(
                    resource_code=code,
                    batch_id=batch.batch_id,
                    submitted_by=caller.uri,
                    accepted=accepted,
                    rejected=rejected,
                    rejections=json.dumps(
                        [[r.index, r.item, r.reason] for r in rejections], ensure_ascii=False
                    ),
                    temporary=None if temporary is None else _temporary_json(temporary),
                    data_version=data_version,
                    at=at,
                )
            )
            return BatchOutcome(
                batch_id=batch.batch_id,
                accepted=accepted,
                rejected=rejected,
                rejections=tuple(rejections),
                duplicate=False,
                data_version=data_version,
                committed_at=at,
            )

        try:
            outcome = await self._db.write("records.submit", txn)
        except IntegrityError as error:
            # Only reachable if the lock were bypassed: the batch's primary key then stops the
            # second application, and re-running finds the first one's outcome.
            if not self._db.is_unique_violation(error):
                raise
            outcome = await self._db.write("records.submit", txn)
        log.info(
            "records.submitted",
            resource_code=code,
            batch_id=batch.batch_id,
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            duplicate=outcome.duplicate,
            data_version=outcome.data_version,
            temporary=temporary is not None,
        )
        return outcome

    # --- 联机验证 / 比对验证 ------------------------------------------------------------------

    async def verify(
        self, entry: ResourceEntry, key: Mapping[str, str], claimed: Mapping[str, str]
    ) -> VerifyOutcome:
        """联机验证 (第十四条): whether the claimed values match the record with ``key``, item
        by item, compared in canonical form. Never returns a stored value."""
        self._check_local(entry)
        schema = schema_for(entry)
        record_key = _full_key(schema, key, "key")
        wanted = _claims(schema, claimed, "claimed")
        params = {"code": entry.resource_code, "key": record_key}
        # One primary-key SELECT on a pooled connection: a single statement reads a consistent
        # snapshot by itself, and Verify is the hot path (no ORM session, no commit).
        async with self._db.engine.connect() as conn:
            stored = (await conn.execute(_CURRENT_VALUES, params)).scalar_one_or_none()
        return _outcome(stored, wanted)

    async def compare(
        self,
        entry: ResourceEntry,
        items: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]],
    ) -> list[tuple[str, VerifyOutcome]]:
        """比对验证 (第二十六条): :meth:`verify` for up to 10,000 records, results in input
        order. A malformed item refuses the whole call, naming the item and its ref."""
        self._check_local(entry)
        if len(items) > MAX_COMPARE:
            raise InvalidArgument(f"records: at most {MAX_COMPARE} per call, got {len(items)}")
        schema = schema_for(entry)
        prepared: list[tuple[str, str, list[tuple[str, str]]]] = []
        for i, (ref, key, claimed) in enumerate(items):
            path = f"records[{i}] (ref {ref!r})"
            prepared.append(
                (ref, _full_key(schema, key, f"{path}.key"), _claims(schema, claimed, path))
            )
        keys = list(dict.fromkeys(k for _, k, _ in prepared))
        code = entry.resource_code

        async def txn(session: AsyncSession) -> dict[str, Any]:
            conn = await session.connection()
            return await _current(conn, code, keys, _RECORD.c.item_values)

        found = await self._db.read("records.compare", txn) if keys else {}
        return [(ref, _outcome(found.get(k), wanted)) for ref, k, wanted in prepared]

    # --- 检索查询 -------------------------------------------------------------------------

    async def query(
        self,
        entry: ResourceEntry,
        *,
        key: Mapping[str, str] | None = None,
        filters: Sequence[QueryFilter] = (),
        items: Sequence[str] = (),
        visible_items: frozenset[str],
        clear_items: frozenset[str] = frozenset(),
        page_size: int = 0,
        page_token: str = "",
    ) -> QueryPage:
        """检索查询 (第二十六条): records matching ``key`` (all key items or some of them)
        and every filter, projected to ``items`` (empty: every visible item) and masked except
        for ``clear_items``. See :mod:`node.records_query` for paging and the row cap."""
        self._check_local(entry)
        if page_size < 0:
            raise InvalidArgument(f"page_size: must not be negative, got {page_size}")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        plan = plan_query(
            entry,
            schema_for(entry),
            _RECORD.c.item_values,
            _RECORD.c.record_key,
            key=key,
            filters=filters,
            items=items,
            visible_items=visible_items,
        )
        cursor = decode_token(page_token, plan.fingerprint)
        limit = min(size, MAX_QUERY_ROWS - cursor.served)
        statement = (
            sa.select(_RECORD.c.record_key, _RECORD.c.version, _RECORD.c.item_values)
            .where(_RECORD.c.resource_code == entry.resource_code, *plan.conditions)
            .order_by(_RECORD.c.record_key)
            .limit(limit + 1)
        )
        if cursor.after:
            statement = statement.where(_RECORD.c.record_key > cursor.after)

        async def txn(session: AsyncSession) -> list[Any]:
            conn = await session.connection()
            return list((await conn.execute(statement)).all())

        rows = await self._db.read("records.query", txn)
        more = len(rows) > limit
        rows = rows[:limit]
        by_name = {item.name: item for item in entry.items}
        shaped = tuple(
            shape_row(by_name, plan.projection, clear_items, row.item_values, row.version)
            for row in rows
        )
        served = cursor.served + len(rows)
        if not more:
            return QueryPage(shaped)
        if served >= MAX_QUERY_ROWS:
            return QueryPage(shaped, truncated=True)
        token = encode_token(PageCursor(rows[-1].record_key, served), plan.fingerprint)
        return QueryPage(shaped, next_page_token=token)

    # --- history and status ---------------------------------------------------------------

    async def record_history(
        self, entry: ResourceEntry, key: Mapping[str, str]
    ) -> list[RecordVersion]:
        """Every version of one record, oldest first, unmasked: for its provider (第四十一条)."""
        self._check_local(entry)
        record_key = _full_key(schema_for(entry), key, "key")
        statement = (
            sa.select(_VERSION)
            .where(
                _VERSION.c.resource_code == entry.resource_code,
                _VERSION.c.record_key == record_key,
            )
            .order_by(_VERSION.c.data_seq)
        )

        async def txn(session: AsyncSession) -> list[Any]:
            conn = await session.connection()
            return list((await conn.execute(statement)).all())

        rows = await self._db.read("records.history", txn)
        if not rows:
            raise NotFound(f"resource {entry.resource_code} has no record with this key")
        return [
            RecordVersion(
                values=row.item_values,
                version=row.version,
                data_seq=row.data_seq,
                batch_id=row.batch_id,
                submitted_by=row.submitted_by,
                at=row.at,
                temporary_reason=row.temporary_reason,
                temporary_expires_at=row.temporary_expires_at,
                temporary_items=tuple(row.temporary_items or ()),
            )
            for row in rows
        ]

    async def aggregation_status(
        self, entries: Sequence[ResourceEntry], now: dt.datetime | None = None
    ) -> list[AggregationStatus]:
        """Aggregation status of each entry, in input order (第二十一条).

        A resource is due :data:`CYCLE_ALLOWANCE` after its last aggregation, or, never
        aggregated, after its publish date (midnight China Standard Time); it is overdue once
        that moment has passed. IRREGULAR and withdrawn resources are never overdue.
        """
        moment = (now or self._now()).astimezone(dt.UTC)
        codes = list(dict.fromkeys(e.resource_code for e in entries))

        async def txn(session: AsyncSession) -> dict[str, Any]:
            conn = await session.connection()
            states: dict[str, Any] = {}
            for chunk in _chunks(codes):
                rows = await conn.execute(sa.select(_DATA).where(_DATA.c.resource_code.in_(chunk)))
                states.update((row.resource_code, row) for row in rows)
            return states

        states = await self._db.read("records.aggregation_status", txn) if codes else {}
        return [_status(entry, states.get(entry.resource_code), moment) for entry in entries]

    # --- helpers --------------------------------------------------------------------------

    def _check_local(self, entry: ResourceEntry) -> None:
        if entry.region and entry.region != self.region:
            raise FailedPrecondition(
                f"resource {entry.resource_code} belongs to region {entry.region}; its records "
                f"live at that region's node, not at {self.region}"
            )


# --- submit ---------------------------------------------------------------------------------


def _check_batch(entry: ResourceEntry, batch: SubmitBatch, now: dt.datetime) -> None:
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
    declared = {item.name for item in entry.items}
    for i, name in enumerate(temporary.extra_items):
        path = f"temporary.extra_items[{i}]"
        if not ITEM_NAME_RE.match(name):
            raise InvalidArgument(
                f'{path}: "{name}" must be lower-case letters, digits and _, starting with a '
                "letter, at most 63 characters"
            )
        if name in declared:
            raise InvalidArgument(
                f'{path}: "{name}" is declared in the catalog entry; only undeclared items need '
                "a temporary collection"
            )
        if name in temporary.extra_items[:i]:
            raise InvalidArgument(f'{path}: "{name}" is listed twice')


def _clean_batch(
    schema: RecordSchema, batch: SubmitBatch
) -> tuple[list[tuple[str, dict[str, str]]], list[Rejection], int]:
    """Valid records as (record key, canonical values), in batch order; the rejections; and
    how many records were refused."""
    extra = frozenset(batch.temporary.extra_items) if batch.temporary else frozenset()
    key_items = schema.key_items
    writes: list[tuple[str, dict[str, str]]] = []
    rejections: list[Rejection] = []
    rejected = 0
    clean = schema.clean
    for index, record in enumerate(batch.records):
        values, problems = clean(record, extra)
        if not problems:
            key = key_text([values[name] for name in key_items])
            if len(key.encode()) <= RECORD_KEY_BYTES:
                writes.append((key, values))
                continue
            problems = [("", f"key values too long: at most {RECORD_KEY_BYTES} bytes together")]
        rejected += 1
        rejections.extend(Rejection(index, item, reason) for item, reason in problems)
    return writes, rejections, rejected


async def _apply(
    conn: AsyncConnection,
    code: str,
    writes: list[tuple[str, dict[str, str]]],
    data_version: int,
    at: dt.datetime,
    submitted_by: str,
    batch_id: str,
    temporary: TemporaryCollection | None,
) -> tuple[int, int]:
    """Write the batch's new versions in bulk; return the new data version and how many
    records are new."""
    keys = list(dict.fromkeys(key for key, _ in writes))
    existing = await _current(conn, code, keys, _RECORD.c.version, _RECORD.c.item_values)
    latest: dict[str, tuple[int, dict[str, str]]] = {k: (v[0], v[1]) for k, v in existing.items()}
    changed: dict[str, tuple[int, int, Any]] = {}  # key -> (version, data_seq, stored values)
    bind = _Binder(conn)
    values_out = bind.processor(_VERSION.c.item_values)
    # Per batch constants, converted for the driver once.
    v_code, v_batch, v_by, v_at = bind.each(
        (_VERSION.c.resource_code, code),
        (_VERSION.c.batch_id, batch_id),
        (_VERSION.c.submitted_by, submitted_by),
        (_VERSION.c.at, at),
    )
    v_kind = bind.one(_VERSION.c.kind, "upsert")
    version_columns = [*_VERSION_COLUMNS]
    extra: tuple[Any, ...] = ()
    if temporary is not None:
        version_columns += ["temporary_reason", "temporary_expires_at", "temporary_items"]
        extra = bind.each(
            (_VERSION.c.temporary_reason, temporary.reason),
            (_VERSION.c.temporary_expires_at, temporary.expires_at),
            (_VERSION.c.temporary_items, list(temporary.extra_items)),
        )
    versions: list[tuple[Any, ...]] = []
    seq = data_version
    for key, values in writes:
        previous = latest.get(key)
        if previous is not None and previous[1] == values:
            continue  # accepted, unchanged: no new version
        version = 1 if previous is None else previous[0] + 1
        seq += 1
        latest[key] = (version, values)
        stored = values_out(values)  # serialised once, for both tables
        changed[key] = (version, seq, stored)
        versions.append((v_code, seq, key, v_kind, version, stored, v_batch, v_by, v_at, *extra))
    inserts: list[tuple[Any, ...]] = []
    updates: list[dict[str, Any]] = []
    r_code, r_at, r_temporary = bind.each(
        (_RECORD.c.resource_code, code),
        (_RECORD.c.updated_at, at),
        (_RECORD.c.temporary, temporary is not None),
    )
    for key, (version, data_seq, stored) in changed.items():
        if key in existing:
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
            inserts.append((r_code, key, stored, version, data_seq, r_at, r_temporary))
    if inserts:
        await bind.insert_many(_RECORD, _RECORD_COLUMNS, inserts)
    if updates:
        await conn.execute(_UPDATE_RECORD, updates)
    if versions:
        await bind.insert_many(_VERSION, version_columns, versions)
    return seq, len(inserts)


_RECORD_COLUMNS = (
    "resource_code",
    "record_key",
    "item_values",
    "version",
    "data_seq",
    "updated_at",
    "temporary",
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


class _Binder:
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
        return self.processor(column)(value)

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


async def _current(
    conn: AsyncConnection, code: str, keys: Sequence[str], *columns: sa.ColumnElement[Any]
) -> dict[str, Any]:
    """The stored ``columns`` of the current records with ``keys`` (a single column's value,
    or a tuple of several), looked up with IN queries of at most 500 keys."""
    found: dict[str, Any] = {}
    single = len(columns) == 1
    for chunk in _chunks(keys):
        rows = await conn.execute(
            sa.select(_RECORD.c.record_key, *columns).where(
                _RECORD.c.resource_code == code, _RECORD.c.record_key.in_(chunk)
            )
        )
        for row in rows:
            found[row[0]] = row[1] if single else tuple(row[1:])
    return found


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _temporary_json(temporary: TemporaryCollection) -> str:
    return json.dumps(
        {
            "reason": temporary.reason,
            "expires_at": temporary.expires_at.astimezone(dt.UTC).isoformat(),
            "extra_items": list(temporary.extra_items),
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def _stored_outcome(row: Any) -> BatchOutcome:
    return BatchOutcome(
        batch_id=row.batch_id,
        accepted=row.accepted,
        rejected=row.rejected,
        rejections=tuple(
            Rejection(i, item, reason) for i, item, reason in json.loads(row.rejections)
        ),
        duplicate=True,
        data_version=row.data_version,
        committed_at=row.at,
    )


# --- verify ---------------------------------------------------------------------------------


def _full_key(schema: RecordSchema, key: Mapping[str, str], path: str) -> str:
    """The record key for ``key``, which must name exactly the entry's key items."""
    wanted = schema.key_items
    missing = [name for name in wanted if name not in key]
    extra = sorted(name for name in key if name not in wanted)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key item(s) {', '.join(missing)}")
        if extra:
            parts.append(f"{', '.join(extra)} not a key item")
        raise InvalidArgument(
            f"{path}: {'; '.join(parts)}; the key of this resource is {', '.join(wanted)}"
        )
    values = []
    for name in wanted:
        if not key[name].strip():
            raise InvalidArgument(f"{path}.{name}: must not be empty")
        values.append(schema.items[name].normalise(key[name]))
    return key_text(values)


def _claims(schema: RecordSchema, claimed: Mapping[str, str], path: str) -> list[tuple[str, str]]:
    """Claimed (item, canonical value) pairs ordered by item name."""
    unknown = sorted(name for name in claimed if name not in schema.items)
    if unknown:
        raise InvalidArgument(
            f"{path}: {', '.join(unknown)} not an item of this resource's catalog entry"
        )
    pairs = []
    for name in sorted(claimed):
        if not claimed[name].strip():
            raise InvalidArgument(f"{path}.{name}: a claimed value must not be empty")
        pairs.append((name, schema.items[name].normalise(claimed[name])))
    return pairs


def _outcome(stored: Mapping[str, str] | None, wanted: list[tuple[str, str]]) -> VerifyOutcome:
    if stored is None:
        return VerifyOutcome(found=False)
    matches = []
    for name, value in wanted:
        held = stored.get(name)
        if held is None:
            result = MatchResult.NOT_PRESENT
        elif held == value:
            result = MatchResult.MATCH
        else:
            result = MatchResult.MISMATCH
        matches.append((name, result))
    return VerifyOutcome(found=True, matches=tuple(matches))


# --- status ---------------------------------------------------------------------------------


def _status(entry: ResourceEntry, state: Any, now: dt.datetime) -> AggregationStatus:
    last = state.last_aggregated_at if state is not None else None
    allowance = CYCLE_ALLOWANCE[entry.update_cycle]
    due: dt.datetime | None = None
    if allowance is not None:
        start = last if last is not None else _published(entry)
        due = None if start is None else start + allowance
    overdue = due is not None and now > due and entry.status is ResourceStatus.ACTIVE
    return AggregationStatus(
        resource_code=entry.resource_code,
        provider_code=entry.provider_code,
        update_cycle=entry.update_cycle,
        last_aggregated_at=last,
        due_at=due,
        overdue=overdue,
        record_count=state.record_count if state is not None else 0,
        data_version=state.data_version if state is not None else 0,
    )


def _published(entry: ResourceEntry) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(entry.publish_date)
    except ValueError:
        return entry.created_at
    return dt.datetime.combine(day, dt.time(), CST).astimezone(dt.UTC)


def _who(caller: Identity) -> str:
    if caller.role is Role.AGENCY:
        return f"agency {caller.subject}"
    return f"{caller.role.value} {caller.uri}"
