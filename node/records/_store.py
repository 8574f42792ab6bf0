"""Records of the resources this node owns: 汇聚 (Submit), 联机验证 (Verify), 比对验证
(Compare), 检索查询 (Query), history and aggregation status.

Who may call what (share types, grants, methods) is decided before these methods run; here
only what concerns the data itself is enforced, and Submit's rule that only a resource's
provider writes its records.

Storage: ``record`` holds the current version of each record, keyed by the canonical JSON of
its key items' values; ``record_version`` every version ever written, numbered per resource by
a gap-free ``data_seq`` (the resource's data version, the change feed Exchange and Subscribe
follow); nothing is ever deleted here (第四十一条: deletion needs an approval and is a
version of its own). Values are stored in canonical form (node.records._validation), so equal data
compares equal whatever way it was written.

Submit is one write transaction per batch and is acknowledged after commit: a batch is applied
entirely or not at all at the database level, while records that break a rule are refused one
by one (with reasons) and the others applied. Writes are bulk statements (SQLAlchemy Core,
executemany), and the existing rows for a batch's keys are read in a few lookups
(:mod:`node.records._lookup`).

Layout: this module is the service; :mod:`node.records._submit` holds Submit's checks and bulk
writes, :mod:`node.records._query` the query planning, paging, masking of rows and key
handling, :mod:`node.records._types` the values in and out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

import node.models  # noqa: F401  (registers the record tables on SQLModel.metadata)
from gateway.identity import Identity, Role, authority_identity
from gateway.quote import quote
from node import paging
from node.catalog import ResourceEntry, ResourceStatus, UpdateCycle, check_submitter
from node.codes import region_problem
from node.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from node.records._disputes import disputes_of
from node.records._hold import hold_writes
from node.records._query import (
    DEFAULT_HISTORY_PAGE,
    DEFAULT_PAGE_SIZE,
    MAX_HISTORY_PAGE,
    MAX_PAGE_SIZE,
    MAX_QUERY_ROWS,
    PAGE_BYTES,
    PageCursor,
    claims,
    decode_history_token,
    decode_token,
    encode_history_token,
    encode_token,
    full_key,
    outcome,
    plan_query,
    row_bytes,
    shape_row,
    version_bytes,
)
from node.records._rejections import bounded
from node.records._submit import (
    BATCH,
    DATA,
    RECORD,
    RECORD_KEY_BYTES,
    VERSION,
    apply_writes,
    batch_digest,
    check_batch,
    clean_batch,
    current_rows,
    one_value_per_key,
    resent_outcome,
    temporary_json,
)
from node.records._types import (
    MAX_COMPARE,
    AggregationStatus,
    BatchOutcome,
    Dispute,
    HeldRecord,
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
from node.records._validation import RecordSchema, schema_for
from node.storage import Database, in_chunks, utc_now
from node.times import CST

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
    "aggregation_status_on",
]

log = structlog.get_logger(__name__)


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

# Verify's one statement, a point read (Database.fetch_one): plain SQL valid on both backends.
_CURRENT_VALUES = (
    "SELECT item_values, open_disputes FROM record WHERE resource_code = :code"
    " AND record_key = :key AND NOT deleted"
)
Clock = Callable[[], dt.datetime]


class Records:
    """The records of the resources this node owns, over its :class:`Database`."""

    def __init__(
        self,
        db: Database,
        node_region: str,
        *,
        clock: Clock = utc_now,
        hold_updates: bool = True,
        trust_domain: str = "",
        on_held: Callable[[], None] | None = None,
    ) -> None:
        """``hold_updates``: Submit holds a record that would change a stored one as a change
        request for the authority (第四十一条, ``[governance] submit_updates = "approve"``);
        False applies it at once (``"apply"``). ``trust_domain`` names the node's authority,
        who is notified of held records; ``on_held`` is called after a batch that held some
        commits (to wake notification watchers)."""
        problem = region_problem(node_region)
        if problem is not None:
            raise ValueError(problem)
        self._db = db
        self.region = node_region
        self._clock = clock
        self._hold_updates = hold_updates
        self._trust_domain = trust_domain
        self.on_held = on_held
        # resource code -> event set when its next batch commits through this object, so
        # Subscribe streams in this process wake at once (other processes' writes are polled
        # for, at the subscriber's bounded fallback interval). Popped when set: only resources
        # someone waits on have an entry.
        self._changed: dict[str, asyncio.Event] = {}

    def changed(self, resource_code: str) -> asyncio.Event:
        """An event set when the next batch of ``resource_code`` is committed here."""
        return self._changed.setdefault(resource_code, asyncio.Event())

    def notify_changed(self, resource_code: str) -> None:
        """Wake everyone waiting on :meth:`changed` for ``resource_code`` (after a commit)."""
        event = self._changed.pop(resource_code, None)
        if event is not None:
            event.set()

    def _now(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC)

    # --- 汇聚 -------------------------------------------------------------------------------

    async def submit(
        self, caller: Identity, entry: ResourceEntry, batch: SubmitBatch
    ) -> BatchOutcome:
        """Aggregate one batch of records into ``entry`` (汇聚, 第二十一条).

        The request's shape is checked first (INVALID_ARGUMENT whoever sends it), then the
        caller must be the provider (a tester, for a probe resource: node.catalog._probe), then the
        resource must be active here. Each record is
        checked against the catalog (第十二、十五条); a refused record gets a
        :class:`Rejection` per problem, at most a few and within the ack's budget
        (node.records._rejections), and the others are still applied. A record replaces the
        stored record with the same key as its next version (every version is kept); one equal
        to the stored record is accepted without a new version. Where such changes need
        approval (``hold_updates``, 第四十一条) they are held as change requests instead, and
        one batch may carry one value per key: every record of a key the batch carries with
        different values is refused (node.records._submit.one_value_per_key), while a record
        repeated unchanged is accepted once more without a new version. Where changes apply at
        once (standing approval, or a probe resource), a key carried twice is applied in
        order: the later wins, the earlier stays in the history.

        A batch id already applied to the resource, resent with the same content (records as
        sent, in order, and temporary collection: node.records._submit.batch_digest), returns
        its first outcome with ``duplicate`` set and applies nothing; resent with other
        content it is refused with FAILED_PRECONDITION, since a duplicate's ack would drop
        the new records silently. Batches stored before the digest existed (migration 0014)
        stay duplicates whatever the resend holds.
        """
        code = entry.resource_code
        now = self._now()
        check_batch(entry, batch, now)
        tester = check_submitter(caller, entry)  # probe records: testers only (第三十一条)
        if not tester and (caller.role is not Role.AGENCY or caller.subject != entry.provider_code):
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
        schema = schema_for(entry)
        # In a worker thread: checking up to 10,000 records is seconds of CPU in the worst case
        # (a long value against a large pattern); RE2 releases the GIL while it matches and the
        # interpreter hands the GIL back every few milliseconds, so the event loop keeps serving.
        cleaned = await asyncio.to_thread(clean_batch, schema, batch)
        writes, positions, rejections, rejected = cleaned
        temporary = batch.temporary
        # Probe records (第三十一条) are test fixtures, not government data: never held.
        hold = self._hold_updates and not entry.probe
        if hold:
            writes, positions, conflicts = one_value_per_key(schema, writes, positions)
            if conflicts:
                rejected += len(conflicts)
                # Bounded again together: the ack's budget for reasons counts in batch order.
                merged = sorted([*rejections, *conflicts], key=lambda r: r.index)
                rejections = list(bounded(merged))
        valid = len(batch.records) - rejected
        # Out of the transaction (and its per-resource lock): the transaction may run twice.
        digest = batch_digest(batch)

        async def txn(session: AsyncSession) -> BatchOutcome:
            conn = await session.connection()
            # One submitter per resource at a time: data_seq stays gap-free and in commit
            # order, and a resent batch waits for the first and then finds it (PostgreSQL
            # advisory lock; SQLite's BEGIN IMMEDIATE already serialises writers).
            await self._db.lock(conn, f"records.submit:{code}")
            done = (
                await conn.execute(
                    sa.select(BATCH).where(
                        BATCH.c.resource_code == code, BATCH.c.batch_id == batch.batch_id
                    )
                )
            ).first()
            if done is not None:
                return resent_outcome(done, digest)
            at = self._now()
            state = (
                await conn.execute(sa.select(DATA).where(DATA.c.resource_code == code))
            ).first()
            data_version = state.data_version if state is not None else 0
            count = state.record_count if state is not None else 0
            held: list[tuple[int, str]] = []
            if writes:
                data_version, inserted, holding = await apply_writes(
                    conn,
                    code,
                    writes,
                    (data_version, count),
                    at,
                    caller.uri,
                    batch.batch_id,
                    temporary,
                    positions=positions,
                    hold=hold,
                )
                if holding:
                    held = await hold_writes(
                        conn,
                        session,
                        entry=entry,
                        region=self.region,
                        key_items=schema.key_items,
                        held=holding,
                        requester=caller.uri,
                        batch_id=batch.batch_id,
                        authority=authority_identity(self.region, self._trust_domain),
                        at=at,
                    )
                count += inserted
                data = {
                    "data_version": data_version,
                    "last_aggregated_at": at,
                    "last_batch_id": batch.batch_id,
                    "record_count": count,
                }
                if state is None:
                    await conn.execute(sa.insert(DATA).values(resource_code=code, **data))
                else:
                    await conn.execute(
                        sa.update(DATA).where(DATA.c.resource_code == code).values(**data)
                    )
            await conn.execute(
                sa.insert(BATCH).values(
                    resource_code=code,
                    batch_id=batch.batch_id,
                    submitted_by=caller.uri,
                    accepted=valid - len(held),
                    rejected=rejected,
                    rejections=json.dumps(
                        [[r.index, r.item, r.reason] for r in rejections], ensure_ascii=False
                    ),
                    temporary=None if temporary is None else temporary_json(temporary),
                    data_version=data_version,
                    at=at,
                    held=json.dumps(held) if held else None,
                    content_digest=digest,
                )
            )
            return BatchOutcome(
                batch_id=batch.batch_id,
                accepted=valid - len(held),
                rejected=rejected,
                rejections=tuple(rejections),
                duplicate=False,
                data_version=data_version,
                committed_at=at,
                held=tuple(HeldRecord(i, change_id) for i, change_id in held),
            )

        try:
            outcome = await self._db.write("records.submit", txn)
        except IntegrityError as error:
            # Only reachable if the lock were bypassed: the batch's primary key then stops the
            # second application, and re-running finds the first one's outcome.
            if not self._db.is_unique_violation(error):
                raise
            outcome = await self._db.write("records.submit", txn)
        if not outcome.duplicate and outcome.accepted:
            self.notify_changed(code)
        if not outcome.duplicate and outcome.held and self.on_held is not None:
            self.on_held()
        log.info(
            "records.submitted",
            resource_code=code,
            batch_id=batch.batch_id,
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            held=len(outcome.held),
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
        record_key = full_key(schema, key, "key")
        wanted = claims(schema, claimed, "claimed")
        params = {"code": entry.resource_code, "key": record_key}
        # One primary-key point read: a single statement reads a consistent snapshot by itself,
        # and Verify is the hot path (no session, no transaction, no thread hop on SQLite).
        row = await self._db.fetch_one(_CURRENT_VALUES, params)
        stored = None if row is None else row[0]
        if isinstance(stored, str):  # JSON text from SQLite (and asyncpg's json type)
            stored = json.loads(stored)
        result = outcome(stored, wanted)
        if row is not None and row[1]:  # disputed: read its open reports (only then)
            marks = await self.disputes(entry.resource_code, [record_key])
            result = replace(result, dispute=marks.get(record_key))
        return result

    async def disputes(self, code: str, keys: Sequence[str]) -> dict[str, Dispute]:
        """The marks of the disputed records among ``keys`` (纠错): one indexed read of the
        open error reports per 500 keys (Subscribe asks it once per page of its feed)."""

        async def txn(session: AsyncSession) -> dict[str, Dispute]:
            return await disputes_of(await session.connection(), code, keys)

        return await self._db.read("records.disputes", txn) if keys else {}

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
        # Canonicalising 10,000 keys and claims is a quarter of a second of CPU: in a worker
        # thread, so the event loop keeps serving meanwhile.
        prepared = await asyncio.to_thread(_compare_prepared, schema_for(entry), items)
        keys = list(dict.fromkeys(k for _, k, _ in prepared))
        code = entry.resource_code

        async def txn(session: AsyncSession) -> tuple[dict[str, Any], dict[str, Dispute]]:
            conn = await session.connection()
            rows = await current_rows(
                conn, code, keys, RECORD.c.item_values, RECORD.c.open_disputes, live_only=True
            )
            disputed = [k for k, (_, n) in rows.items() if n]
            marks = await disputes_of(conn, code, disputed) if disputed else {}
            return {k: v for k, (v, _) in rows.items()}, marks

        found, marks = await self._db.read("records.compare", txn) if keys else ({}, {})
        return [
            (ref, replace(outcome(found.get(k), wanted), dispute=marks.get(k)))
            for ref, k, wanted in prepared
        ]

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
        for ``clear_items``. See :mod:`node.records._query` for paging and the row cap."""
        self._check_local(entry)
        size = paging.page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        plan = plan_query(
            entry,
            schema_for(entry),
            RECORD.c.item_values,
            RECORD.c.record_key,
            key=key,
            filters=filters,
            items=items,
            visible_items=visible_items,
        )
        cursor = decode_token(page_token, plan.fingerprint)
        limit = min(size, MAX_QUERY_ROWS - cursor.served)
        statement = (
            sa.select(
                RECORD.c.record_key,
                RECORD.c.version,
                RECORD.c.item_values,
                RECORD.c.open_disputes,
            )
            .where(
                RECORD.c.resource_code == entry.resource_code,
                sa.not_(RECORD.c.deleted),  # deleted with approval (第四十一条)
                *plan.conditions,
            )
            .order_by(RECORD.c.record_key)
            .limit(limit + 1)
        )
        if cursor.after:
            statement = statement.where(RECORD.c.record_key > cursor.after)

        async def txn(session: AsyncSession) -> tuple[list[Any], dict[str, Dispute]]:
            conn = await session.connection()
            rows = list((await conn.execute(statement)).all())
            disputed = [r.record_key for r in rows[:limit] if r.open_disputes]
            marks = await disputes_of(conn, entry.resource_code, disputed) if disputed else {}
            return rows, marks

        rows, marks = await self._db.read("records.query", txn)
        more = len(rows) > limit
        rows = rows[:limit]
        by_name = {item.name: item for item in entry.items}
        shaped: list[QueryRow] = []
        size = 0
        for row in rows:
            out = shape_row(by_name, plan.projection, clear_items, row.item_values, row.version)
            if row.record_key in marks:
                out = replace(out, dispute=marks[row.record_key])
            size += row_bytes(out)
            if shaped and size > PAGE_BYTES:  # the rest on the next page
                more = True
                break
            shaped.append(out)
        rows = rows[: len(shaped)]
        served = cursor.served + len(rows)
        if not more:
            return QueryPage(tuple(shaped))
        if served >= MAX_QUERY_ROWS:
            return QueryPage(tuple(shaped), truncated=True)
        token = encode_token(PageCursor(rows[-1].record_key, served), plan.fingerprint)
        return QueryPage(tuple(shaped), next_page_token=token)

    # --- history and status ---------------------------------------------------------------

    async def record_history(
        self, entry: ResourceEntry, key: Mapping[str, str]
    ) -> list[RecordVersion]:
        """Every version of one record, oldest first, unmasked: every page of
        :meth:`record_history_page`."""
        versions, token = await self.record_history_page(entry, key)
        while token:
            page, token = await self.record_history_page(entry, key, page_token=token)
            versions += page
        return versions

    async def record_history_page(
        self,
        entry: ResourceEntry,
        key: Mapping[str, str],
        *,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[RecordVersion], str]:
        """One page of the versions of one record, oldest first, unmasked: for its provider
        (第四十一条); and the token of the next page ("" on the last). A page has at most
        ``page_size`` versions (0: 100; at most 200) and stops before the version that would
        take it past about :data:`PAGE_BYTES` (it has at least one)."""
        self._check_local(entry)
        size = paging.page_size(page_size, default=DEFAULT_HISTORY_PAGE, maximum=MAX_HISTORY_PAGE)
        after = decode_history_token(page_token)
        record_key = full_key(schema_for(entry), key, "key")
        statement = (
            sa.select(VERSION)
            .where(
                VERSION.c.resource_code == entry.resource_code,
                VERSION.c.record_key == record_key,
                VERSION.c.data_seq > after,
            )
            .order_by(VERSION.c.data_seq)
            .limit(size + 1)
        )

        async def txn(session: AsyncSession) -> list[Any]:
            conn = await session.connection()
            return list((await conn.execute(statement)).all())

        rows = await self._db.read("records.history", txn)
        if not rows and not page_token:
            raise NotFound(f"resource {entry.resource_code} has no record with this key")
        more = len(rows) > size
        versions: list[RecordVersion] = []
        spent = 0
        for row in rows[:size]:
            version = RecordVersion(
                values=row.item_values,
                version=row.version,
                data_seq=row.data_seq,
                batch_id=row.batch_id,
                submitted_by=row.submitted_by,
                at=row.at,
                temporary_reason=row.temporary_reason,
                temporary_expires_at=row.temporary_expires_at,
                temporary_items=tuple(row.temporary_items or ()),
                kind=row.kind,
            )
            spent += version_bytes(version)
            if versions and spent > PAGE_BYTES:  # the rest on the next page
                more = True
                break
            versions.append(version)
        return versions, encode_history_token(versions[-1].data_seq) if more else ""

    async def aggregation_status(
        self, entries: Sequence[ResourceEntry], now: dt.datetime | None = None
    ) -> list[AggregationStatus]:
        """Aggregation status of each entry, in input order (第二十一条).

        A resource is due :data:`CYCLE_ALLOWANCE` after its last aggregation, or, never
        aggregated, after its publish date (midnight China Standard Time); it is overdue once
        that moment has passed. IRREGULAR and withdrawn resources are never overdue.
        """
        moment = now or self._now()

        async def txn(session: AsyncSession) -> list[AggregationStatus]:
            return await aggregation_status_on(await session.connection(), entries, moment)

        return await self._db.read("records.aggregation_status", txn) if entries else []

    # --- helpers --------------------------------------------------------------------------

    def _check_local(self, entry: ResourceEntry) -> None:
        if entry.region and entry.region != self.region:
            raise FailedPrecondition(
                f"resource {entry.resource_code} belongs to region {entry.region}; its records "
                f"live at that region's node, not at {self.region}"
            )


# --- status ---------------------------------------------------------------------------------


async def aggregation_status_on(
    conn: AsyncConnection, entries: Sequence[ResourceEntry], now: dt.datetime
) -> list[AggregationStatus]:
    """:meth:`Records.aggregation_status` read on ``conn``, so that a caller (supervision's
    certificates) judges it in the same snapshot as its other conditions."""
    moment = now.astimezone(dt.UTC)
    codes = list(dict.fromkeys(e.resource_code for e in entries))
    states: dict[str, Any] = {}
    for chunk in in_chunks(codes):
        rows = await conn.execute(sa.select(DATA).where(DATA.c.resource_code.in_(chunk)))
        states.update((row.resource_code, row) for row in rows)
    return [_status(entry, states.get(entry.resource_code), moment) for entry in entries]


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


def _compare_prepared(
    schema: RecordSchema, items: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]
) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Each Compare item as (ref, record key, canonical claims); refuses a malformed one."""
    prepared = []
    for i, (ref, key, claimed) in enumerate(items):
        path = f"records[{i}] (ref {quote(ref)})"
        prepared.append((ref, full_key(schema, key, f"{path}.key"), claims(schema, claimed, path)))
    return prepared
