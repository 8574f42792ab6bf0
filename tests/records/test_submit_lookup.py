"""Submit's (and Compare's) lookup of the stored records for a batch's keys reads those
records and no others, and so does its lookup of pending change requests for held records,
however stale the tables' statistics: on PostgreSQL a plan chosen while a resource held a few
rows must not be kept once it holds thousands (issue 17: with autovacuum off, Submit slowed
to ~340 records/s as every lookup read the whole resource).

Counted by the server itself (``pg_stat_xact_user_tables``: rows the current transaction read
from the table, by sequential scan and through indexes), not timed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.records._hold import CHANGE
from node.records._lookup import rows_by_key
from node.records._submit import RECORD, current_rows
from tests.support.databases import OpenDatabase

CODE = "350000-1-000009"
OTHER = "350000-1-000010"
#: Far more rows than keys looked up: a lookup reading the resource shows at once.
GROWN = 3000
AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def key(i: int) -> str:
    return json.dumps([f"k{i:06d}"])


def rows(code: str, first: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "resource_code": code,
            "record_key": key(i),
            "item_values": {"bh": f"k{i:06d}"},
            "version": 1,
            "data_seq": i + 1,
            "updated_at": AT,
            "temporary": False,
            "deleted": i % 7 == 3,
            "open_disputes": 0,
        }
        for i in range(first, first + count)
    ]


async def rows_read(conn: AsyncConnection, table: str = "record") -> int:
    """Rows of ``table`` this transaction has read so far, by any scan."""
    found = await conn.exec_driver_sql(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        f"FROM pg_stat_xact_user_tables WHERE relname = '{table}'"
    )
    return int(found.scalar_one())


async def test_a_lookup_reads_only_its_keys_after_the_resource_outgrew_its_statistics(
    open_database: OpenDatabase,
) -> None:
    db = await open_database("postgresql")
    async with db.engine.connect() as conn:
        # Analysed while tiny (what autovacuum does early on), then never again.
        await conn.execute(sa.insert(RECORD), rows(CODE, 0, 5))
        await conn.exec_driver_sql("ANALYZE record")
        # The same lookups, run often enough on this connection for PostgreSQL to settle on a
        # cached plan, for a table of five rows.
        wanted = [key(i) for i in (1, 3, 900, 2500, GROWN + 50)]  # the last one is never stored
        for _ in range(8):
            assert (
                len(await current_rows(conn, CODE, wanted, RECORD.c.version, RECORD.c.deleted)) == 2
            )
            await current_rows(conn, CODE, wanted, RECORD.c.version, live_only=True)
        # The resource grows far past what the statistics say, and so does another one.
        await conn.execute(sa.insert(RECORD), rows(CODE, 5, GROWN))
        await conn.execute(sa.insert(RECORD), rows(OTHER, 0, GROWN))
        before = await rows_read(conn)
        found = await current_rows(conn, CODE, wanted, RECORD.c.version, RECORD.c.deleted)
        live = await current_rows(conn, CODE, wanted, RECORD.c.version, live_only=True)
        read = await rows_read(conn) - before
        assert sorted(found) == sorted(wanted[:4])
        assert found[key(3)] == (1, True)
        assert sorted(live) == [key(1), key(900), key(2500)]  # 3 was deleted with approval
        # Each stored key is read once per lookup: at most 4 + 4 rows, not thousands.
        assert read <= 2 * len(wanted), f"the lookups read {read} rows for {len(wanted)} keys"
        await conn.rollback()


def change_requests(code: str, first: int, count: int) -> list[dict[str, Any]]:
    """Pending change requests held from a Submit batch, one per record key."""
    return [
        {
            "id": f"350000-C-{code[-2:]}{i:014d}",
            "status": "pending",
            "requester": "spiffe://fujian.gov.cn/agency/x",
            "target": "record",
            "action": "update",
            "resource_code": code,
            "provider_code": "x",
            "probe": False,
            "record_key": key(i),
            "key_values": "{}",
            "new_values": json.dumps({"bh": f"k{i:06d}", "n": "2"}),
            "new_entry": "",
            "previous_values": "{}",
            "previous_version": 1,
            "reason": "held",
            "request_id": "",
            "batch_id": "b",
            "created_at": AT,
            "reviewer": "",
            "review_comment": "",
            "applied_version": 0,
        }
        for i in range(first, first + count)
    ]


async def test_held_records_find_their_pending_requests_without_reading_the_others(
    open_database: OpenDatabase,
) -> None:
    """A batch holding changes looks for identical pending requests of its keys only (one a
    key here), not every pending request of the resource."""
    db = await open_database("postgresql")
    async with db.engine.connect() as conn:
        await conn.execute(sa.insert(CHANGE), change_requests(CODE, 0, 5))
        await conn.exec_driver_sql("ANALYZE change_request")
        wanted = [key(i) for i in (1, 3, 900, 2500, GROWN + 50)]
        pending = (CHANGE.c.status == "pending", CHANGE.c.batch_id != "")
        columns = (CHANGE.c.id, CHANGE.c.new_values)
        for _ in range(8):
            assert len(await rows_by_key(conn, CHANGE, CODE, wanted, columns, *pending)) == 2
        await conn.execute(sa.insert(CHANGE), change_requests(CODE, 5, GROWN))
        await conn.execute(sa.insert(CHANGE), change_requests(OTHER, 0, GROWN))
        before = await rows_read(conn, "change_request")
        found = await rows_by_key(conn, CHANGE, CODE, wanted, columns, *pending)
        read = await rows_read(conn, "change_request") - before
        assert sorted(row[0] for row in found) == sorted(wanted[:4])
        assert read <= len(wanted), f"the lookup read {read} rows for {len(wanted)} keys"
        await conn.rollback()
