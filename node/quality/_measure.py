"""The counts a quality check rests on, read with SQL aggregates from govnode's own tables.

Nothing here loads records into Python: each figure is one aggregate query, bounded in time by
the check's window (submissions and share calls since ``window_start``) or by the resource (its
current records, counted per item in chunks of :data:`_ITEMS_PER_QUERY` items). What is read:

- ``record``: current records (not deleted) and, per declared item, how many carry a non-empty
  value (SQLAlchemy's JSON element expressions: ``JSON_EXTRACT`` on SQLite, ``->>`` on
  PostgreSQL). Counted over every record (a full count) only when the previous check's
  :class:`~node.quality._types.Basis` cannot be started from: none kept, the entry changed, its
  last full count is older than ``full_after``, or more than a quarter of the records changed.
  Otherwise incrementally: nothing when the resource's data version has not moved, else only
  the records written since (``record_version`` after the basis's data version): their
  current state is added and their state at the basis's version (their newest version up to
  it, unless that was a deletion) taken away;
- ``submit_batch``: batches applied in the window, their accepted, held and refused records,
  and the refusals per item (the ack's rejections stored with the batch, read with
  ``json_each`` on SQLite and ``json_array_elements`` on PostgreSQL: the one place the two
  differ); the cycle periods of the window with an aggregation in them;
- ``audit_record``: resent batches (a Submit whose batch id was applied before with the same
  content) and share calls on the resource by outcome;
- ``resource_data``: the newest aggregation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import node.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from node.catalog import ResourceEntry
from node.quality._types import Basis
from node.records import DUPLICATE_BATCH_MESSAGE, KEY_CONFLICT_REASON
from node.storage import Database, UTCDateTime

__all__ = ["SHARE_METHODS", "SUBMIT_METHOD", "Figures", "measure"]

RECORD = SQLModel.metadata.tables["record"]
VERSION = SQLModel.metadata.tables["record_version"]
BATCH = SQLModel.metadata.tables["submit_batch"]
DATA = SQLModel.metadata.tables["resource_data"]
AUDIT = SQLModel.metadata.tables["audit_record"]

#: The share calls whose outcomes make 可访问性 (第二十六条's methods), as the audit log names
#: them. Subscribe is left out: every subscription ends CANCELLED by its caller.
SHARE_METHODS = tuple(
    f"/govnode.v1.SharingService/{name}" for name in ("Verify", "Compare", "Query", "Exchange")
)
SUBMIT_METHOD = "/govnode.v1.SharingService/Submit"
#: Items per aggregate query over the records (an entry declares at most 1,000).
_ITEMS_PER_QUERY = 100
#: Past this share of the records changed since the basis, a full count is cheaper.
_INCREMENTAL_SHARE = 0.25

# The refusals of a window's batches per item: records refused naming the item (distinct
# batch and index), and those refused for carrying their key with other values in the batch.
# Rejections are stored as JSON [[index, item, reason], ...] (node.records._rejections).
_REFUSALS = {
    "sqlite": """
        SELECT json_extract(j.value, '$[1]') AS item,
               count(DISTINCT b.batch_id || ':' || json_extract(j.value, '$[0]')) AS refused,
               count(DISTINCT CASE WHEN json_extract(j.value, '$[2]') LIKE :conflict
                     THEN b.batch_id || ':' || json_extract(j.value, '$[0]') END) AS conflicts
        FROM submit_batch AS b, json_each(b.rejections) AS j
        WHERE b.resource_code = :code AND b.at >= :start
        GROUP BY item
    """,
    "postgresql": """
        SELECT j.value ->> 1 AS item,
               count(DISTINCT b.batch_id || ':' || (j.value ->> 0)) AS refused,
               count(DISTINCT CASE WHEN (j.value ->> 2) LIKE :conflict
                     THEN b.batch_id || ':' || (j.value ->> 0) END) AS conflicts
        FROM submit_batch AS b, json_array_elements(CAST(b.rejections AS json)) AS j
        WHERE b.resource_code = :code AND b.at >= :start
        GROUP BY item
    """,
}
# Records held for approval (第四十一条) by a window's batches: accepted by every rule, but
# counted apart from ``accepted`` in submit_batch.
_HELD = {
    "sqlite": "coalesce(sum(json_array_length(held)), 0)",
    "postgresql": "coalesce(sum(json_array_length(CAST(held AS json))), 0)",
}


@dataclass(frozen=True)
class Figures:
    """What one check counted for one resource."""

    records: int  # current records, not deleted
    filled: dict[str, int]  # item -> current records with a non-empty value
    batches: int  # batches applied in the window
    submitted: int  # records in them: accepted + held + refused
    passed: int  # accepted or held: every value passed its item's rule
    refused_by_item: dict[str, int]  # item -> records refused naming it ("" the record)
    key_conflicts: int  # records refused for their key carried with other values
    resent: int  # Submit batches resent with the same content (nothing applied)
    periods: int  # update-cycle periods of the window after registration
    periods_aggregated: int  # of those, with at least one aggregation
    last_aggregated_at: dt.datetime | None
    calls: dict[str, int]  # share calls on the resource in the window, by outcome
    #: What ``records`` and ``filled`` were counted from (the next check starts from it).
    basis: Basis


async def measure(
    db: Database,
    entry: ResourceEntry,
    *,
    now: dt.datetime,
    window_start: dt.datetime,
    period: dt.timedelta | None,
    registered_at: dt.datetime | None,
    basis: Basis | None = None,
    full_after: dt.timedelta = dt.timedelta(days=7),
) -> Figures:
    """Count the figures of ``entry`` in one read transaction (a consistent snapshot).
    ``period``: the update cycle's length (None: IRREGULAR, no periods). ``basis``: the
    previous check's, to count the records incrementally from (see the module); a full count
    at least every ``full_after``."""
    code = entry.resource_code
    backend = db.backend

    async def txn(session: AsyncSession) -> Figures:
        conn = await session.connection()
        counted = await _record_figures(conn, entry, now, basis, full_after)
        batches, submitted, passed = await _batches(conn, backend, code, window_start)
        refused, conflicts = await _refusals(conn, backend, code, window_start)
        periods, aggregated = await _periods(conn, code, now, window_start, period, registered_at)
        last = (
            await conn.execute(
                sa.select(DATA.c.last_aggregated_at).where(DATA.c.resource_code == code)
            )
        ).scalar()
        resent = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    AUDIT.c.resource_code == code,
                    AUDIT.c.at >= window_start,
                    AUDIT.c.method == SUBMIT_METHOD,
                    AUDIT.c.message == DUPLICATE_BATCH_MESSAGE,
                )
            )
        ).scalar_one()
        calls = {
            row[0]: row[1]
            for row in await conn.execute(
                sa.select(AUDIT.c.outcome, sa.func.count())
                .where(
                    AUDIT.c.resource_code == code,
                    AUDIT.c.at >= window_start,
                    AUDIT.c.method.in_(SHARE_METHODS),
                )
                .group_by(AUDIT.c.outcome)
            )
        }
        return Figures(
            records=counted.records,
            filled=counted.filled,
            batches=batches,
            submitted=submitted,
            passed=passed,
            refused_by_item=refused,
            key_conflicts=conflicts,
            resent=resent,
            periods=periods,
            periods_aggregated=aggregated,
            last_aggregated_at=last,
            calls=calls,
            basis=counted,
        )

    return await db.read("quality.measure", txn)


async def _record_figures(
    conn: AsyncConnection,
    entry: ResourceEntry,
    now: dt.datetime,
    basis: Basis | None,
    full_after: dt.timedelta,
) -> Basis:
    """The current records and per item those with a value: from ``basis`` when it can be
    started from, else over every record (see the module)."""
    code = entry.resource_code
    items = [item.name for item in entry.items]
    version = (
        await conn.execute(sa.select(DATA.c.data_version).where(DATA.c.resource_code == code))
    ).scalar() or 0
    usable = (
        basis is not None
        and basis.entry_version == entry.version
        and basis.data_version <= version
        and now - basis.full_at < full_after
        and set(basis.filled) == set(items)
    )
    if basis is not None and usable:
        if basis.data_version == version:
            return dataclasses.replace(basis, recounted=0)
        changed = sa.select(VERSION.c.record_key).where(
            VERSION.c.resource_code == code, VERSION.c.data_seq > basis.data_version
        )
        touched = (
            await conn.execute(
                sa.select(sa.func.count(sa.distinct(VERSION.c.record_key))).where(
                    VERSION.c.resource_code == code, VERSION.c.data_seq > basis.data_version
                )
            )
        ).scalar_one()
        if touched <= max(basis.records, 1) * _INCREMENTAL_SHARE:
            keys = changed.scalar_subquery()
            now_records, now_filled = await _count(
                conn,
                RECORD,
                items,
                sa.and_(
                    RECORD.c.resource_code == code,
                    sa.not_(RECORD.c.deleted),
                    RECORD.c.record_key.in_(keys),
                ),
            )
            # Each touched record's newest version up to the basis, found through the key
            # index (the bound sits in the aggregate, so no plan scans the older versions of
            # the whole resource instead).
            touched_keys = (
                sa.select(VERSION.c.record_key)
                .where(VERSION.c.resource_code == code, VERSION.c.data_seq > basis.data_version)
                .distinct()
                .subquery("touched")
            )
            older = VERSION.alias("older")
            up_to = sa.case((older.c.data_seq <= basis.data_version, older.c.data_seq))
            newest = (
                sa.select(sa.func.max(up_to))
                .select_from(
                    touched_keys.join(
                        older,
                        sa.and_(
                            older.c.resource_code == code,
                            older.c.record_key == touched_keys.c.record_key,
                        ),
                    )
                )
                .group_by(touched_keys.c.record_key)
            )
            then_records, then_filled = await _count(
                conn,
                VERSION,
                items,
                sa.and_(
                    VERSION.c.resource_code == code,
                    VERSION.c.data_seq.in_(newest.scalar_subquery()),
                    VERSION.c.kind != "delete",
                ),
            )
            return Basis(
                data_version=version,
                entry_version=entry.version,
                records=basis.records + now_records - then_records,
                filled={n: basis.filled[n] + now_filled[n] - then_filled[n] for n in items},
                full_at=basis.full_at,
                recounted=int(touched),
            )
    records, filled = await _count(
        conn, RECORD, items, sa.and_(RECORD.c.resource_code == code, sa.not_(RECORD.c.deleted))
    )
    return Basis(
        data_version=version,
        entry_version=entry.version,
        records=records,
        filled=filled,
        full_at=now,
        recounted=-1,
    )


async def _count(
    conn: AsyncConnection, table: sa.Table, items: list[str], where: sa.ColumnElement[bool]
) -> tuple[int, dict[str, int]]:
    """Rows of ``table`` matching ``where`` and, per item, those with a non-empty value: one
    pass over the rows per :data:`_ITEMS_PER_QUERY` items (the first also counts the rows)."""
    records = 0
    filled: dict[str, int] = {}
    values = table.c.item_values
    for start in range(0, max(len(items), 1), _ITEMS_PER_QUERY):
        chunk = items[start : start + _ITEMS_PER_QUERY]
        columns: list[Any] = [
            sa.func.coalesce(
                sa.func.sum(
                    sa.case((sa.func.coalesce(values[name].as_string(), "") != "", 1), else_=0)
                ),
                0,
            )
            for name in chunk
        ]
        if start == 0:
            columns.insert(0, sa.func.count())
        row = (await conn.execute(sa.select(*columns).where(where))).one()
        counts = [int(v) for v in row]
        if start == 0:
            records = counts.pop(0)
        filled.update(zip(chunk, counts, strict=True))
    return records, filled


async def _batches(
    conn: AsyncConnection, backend: str, code: str, start: dt.datetime
) -> tuple[int, int, int]:
    row = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(BATCH.c.accepted), 0),
                sa.func.coalesce(sa.func.sum(BATCH.c.rejected), 0),
                sa.literal_column(_HELD[backend]),
            ).where(BATCH.c.resource_code == code, BATCH.c.at >= start)
        )
    ).one()
    batches, accepted, rejected, held = (int(v) for v in row)
    return batches, accepted + held + rejected, accepted + held


async def _refusals(
    conn: AsyncConnection, backend: str, code: str, start: dt.datetime
) -> tuple[dict[str, int], int]:
    statement = sa.text(_REFUSALS[backend]).bindparams(
        sa.bindparam("start", type_=UTCDateTime()),
    )
    rows = await conn.execute(
        statement, {"code": code, "start": start, "conflict": f"{KEY_CONFLICT_REASON}%"}
    )
    refused: dict[str, int] = {}
    conflicts = 0
    for item, count, conflicting in rows:
        refused[str(item or "")] = int(count)
        conflicts += int(conflicting)
    return refused, conflicts


async def _periods(
    conn: AsyncConnection,
    code: str,
    now: dt.datetime,
    window_start: dt.datetime,
    period: dt.timedelta | None,
    registered_at: dt.datetime | None,
) -> tuple[int, int]:
    """The update-cycle periods back from ``now`` that fit in the window (at least the latest
    one, for a cycle longer than the window) and start after registration, and how many of
    them saw an aggregation (a batch with a record accepted or held)."""
    if period is None:
        return 0, 0
    count = max(1, (now - window_start) // period)
    while count > 0 and registered_at is not None and now - count * period < registered_at:
        count -= 1
    if count == 0:
        return 0, 0
    bucket: Any = sa.case(
        *((BATCH.c.at >= now - (i + 1) * period, i) for i in range(count)),
        else_=None,
    )
    aggregated = (
        await conn.execute(
            sa.select(sa.func.count(sa.distinct(bucket))).where(
                BATCH.c.resource_code == code,
                BATCH.c.at >= now - count * period,
                BATCH.c.at <= now,
                sa.or_(BATCH.c.accepted > 0, BATCH.c.held.is_not(None)),
            )
        )
    ).scalar_one()
    return count, int(aggregated)
