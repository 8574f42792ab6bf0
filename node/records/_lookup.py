"""Rows of a per-resource table looked up by many record keys at once, in a plan that stays
good however stale the database's statistics are.

Submit looks up the stored records (and the pending change requests) for every key of a
batch, Compare the records of up to 10,000 keys. On SQLite these are IN queries of at most
500 keys: its planner probes the index for each key with or without statistics. PostgreSQL's
planner weighs the table's size and statistics, and a plan it picks or caches while a table
is small can read a whole resource per lookup once it is large (issue 17: Submit fell to ~340
records/s on a server with autovacuum off); see :func:`_probe_statement` and
:data:`_CUSTOM_PLANS` for the shape used there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from node.storage import in_chunks


async def rows_by_key(
    conn: AsyncConnection,
    table: sa.Table,
    code: str,
    keys: Sequence[str],
    columns: Sequence[sa.ColumnElement[Any]],
    *conditions: sa.ColumnElement[bool],
    unique: bool = False,
) -> list[Any]:
    """The rows (``record_key``, then ``columns``) of ``table`` with ``resource_code`` ``code``,
    a ``record_key`` among ``keys`` and every one of ``conditions``, in no particular order.
    ``unique``: (resource_code, record_key) is the table's primary key.

    SQLite: IN queries of at most 500 keys (its planner probes the index for each, with or
    without statistics). PostgreSQL: an index probe per key (:func:`_probe_statement`),
    planned afresh for the table's current size (:data:`_CUSTOM_PLANS`)."""
    if not keys:
        return []
    found: list[Any] = []
    if conn.dialect.name != "postgresql":
        for chunk in in_chunks(keys):
            statement = sa.select(table.c.record_key, *columns).where(
                table.c.resource_code == code, table.c.record_key.in_(chunk), *conditions
            )
            found += await conn.execute(statement)
        return found
    await conn.exec_driver_sql(_CUSTOM_PLANS)
    for chunk in in_chunks(keys, _ARRAY_CHUNK):
        probe = _probe_statement(table, code, chunk, columns, conditions, unique)
        found += await conn.execute(probe)
    await conn.exec_driver_sql(_CACHED_PLANS)
    return found


#: PostgreSQL caches a prepared statement's "generic" plan, made for whatever size the table
#: had when the statement was first run on the connection, and keeps it until the table is
#: next analysed: a plan made while a resource held a few rows (a sequential scan) would then
#: read the whole resource once per key (issue 17: Submit slowed to ~340 records/s as the
#: table grew, with autovacuum off). For the lookups, plans are made afresh at each execution,
#: for the table's current size; the rest of the transaction goes back to the default, since
#: planning each row of an executemany INSERT would cost more than it saves.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"
_CACHED_PLANS = "SET LOCAL plan_cache_mode = DEFAULT"
#: Keys per PostgreSQL lookup: one array parameter, so only the statement's size bounds it.
_ARRAY_CHUNK = 10_000


def _probe_statement(
    table: sa.Table,
    code: str,
    keys: Sequence[str],
    columns: Sequence[sa.ColumnElement[Any]],
    conditions: Sequence[sa.ColumnElement[bool]],
    unique: bool,
) -> sa.Select[Any]:
    """``SELECT k.key, r.... FROM unnest(:keys) AS k(key) JOIN LATERAL (SELECT ... FROM table
    WHERE resource_code = :code AND record_key = k.key ... LIMIT 1) AS r ON true``.

    Each key is looked up by itself through the (resource_code, record_key) index, a plan
    that needs no statistics: with a list (``record_key IN (...)`` or ``= ANY(:keys)``) and
    no statistics, PostgreSQL scans every row of the resource and filters, even with the
    list's values in hand (measured: 145 ms for 500 keys among a million records, against 4 ms
    probing them one by one). The LIMIT (OFFSET 0 where a key may have several rows) keeps
    the subquery a subquery, so the planner cannot turn it into a hash join over the whole
    resource."""
    given = (
        sa.func.unnest(sa.bindparam("keys", list(keys), type_=postgresql.ARRAY(sa.String)))
        .table_valued("key")
        .render_derived(name="k")
    )
    probe = sa.select(*columns).where(
        table.c.resource_code == code, table.c.record_key == given.c.key, *conditions
    )
    fenced = probe.limit(sa.literal_column("1")) if unique else probe.offset(sa.literal_column("0"))
    found = fenced.lateral("r")
    return sa.select(given.c.key, *found.c).select_from(given.join(found, sa.true()))
