"""The storage engine on SQLite and PostgreSQL: connections, transactions, migrations, time."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, bindparam, inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from structlog.testing import capture_logs

import node.storage._backends as backends
from node.catalog import Catalog
from node.errors import FailedPrecondition, InvalidArgument
from node.models import NodeMetaRow, RevokedCertificateRow
from node.storage import Database, StorageError, driver_cursor, head_revision, insert_rows
from tests.support.entries import NODE_REGION, agency, agency_code, item, make_entry

TABLES = {
    "acceptance_certificate",
    "issued_certificate",
    "maintenance_mode",
    "catalog_entry",
    "catalog_entry_version",
    "element_source",
    "catalog_change",
    "revoked_certificate",
    "node_meta",
    "request_log",
    "audit_record",
    "audit_tree",
    "audit_subtree",
    "audit_checkpoint",
    "audit_cosigner",
    "audit_pruned",
    "audit_epoch",
    "audit_restore",
    "open_dataset",
    "open_version",
    "open_row",
    "open_application",
    "open_key",
    "open_use_report",
    "open_file_digest",
    "open_file_chunk",
    "witness_state",
    "witness_evidence",
    "invitation",
    "federation_member",
    "assertion_nonce",
    "feed_cursor",
    "notice_cursor",
    "record",
    "record_version",
    "resource_data",
    "submit_batch",
    "quality_check",
    "compliance_report",
    "rectification_notice",
    "supervision_summary",
    "data_error",
    "sub_platform_approval",
    "notification",
    "access_application",
    "access_grant",
    "change_request",
    "oracle_budget",
    "oracle_key",
}


async def _get_meta(session: AsyncSession, key: str) -> str | None:
    row = await session.get(NodeMetaRow, key)
    return None if row is None else row.value


async def _meta_keys(db: Database) -> list[str]:
    async def txn(session: AsyncSession) -> list[str]:
        return list((await session.exec(select(NodeMetaRow.key))).all())

    return await db.read("test.meta_keys", txn)


# --- opening --------------------------------------------------------------------------


async def test_sqlite_pragmas_hold_on_every_new_connection(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    try:
        # Hold three connections at once so the pool must open three DBAPI connections.
        async with db.engine.connect() as a, db.engine.connect() as b, db.engine.connect() as c:
            for conn in (a, b, c):
                pragma = conn.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
                assert (await pragma("PRAGMA foreign_keys")).scalar() == 1
                assert (await pragma("PRAGMA synchronous")).scalar() == 1  # NORMAL
                assert (await pragma("PRAGMA busy_timeout")).scalar() == 5000
    finally:
        await db.close()


async def test_old_sqlite_is_refused_with_a_clear_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "MIN_SQLITE_VERSION", (99, 0, 0))
    with pytest.raises(StorageError, match=r"SQLite .* is too old: govnode needs 99\.0\.0"):
        await Database.open(sqlite_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite+aiosqlite:///:memory:", "SQLite needs a file"),
        ("sqlite+aiosqlite:////nonexistent/dir/node.db", "/nonexistent/dir does not exist"),
        ("sqlite:///node.db", "is not supported"),
        ("mysql+aiomysql://u:secret@h/db", "is not supported"),
    ],
)
async def test_unusable_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as caught:
        await Database.open(url)
    assert "secret" not in str(caught.value)


# --- transactions ---------------------------------------------------------------------


async def test_write_transactions_take_the_write_lock_at_begin(sqlite_url: str) -> None:
    """BEGIN IMMEDIATE: the lock is held before the first statement, so a writer never has to
    upgrade a read lock (the classic "database is locked"); reads use a deferred BEGIN."""
    db = await Database.open(sqlite_url)
    path = sqlite_url.removeprefix("sqlite+aiosqlite:///")

    def other_writer_can_begin() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    async def in_write(session: AsyncSession) -> bool:
        await _get_meta(session, "k")  # only a read so far
        return other_writer_can_begin()

    async def in_read(session: AsyncSession) -> bool:
        await _get_meta(session, "k")
        return other_writer_can_begin()

    try:
        await db.migrate()
        assert await db.write("test.write", in_write) is False
        assert await db.read("test.read", in_read) is True
    finally:
        await db.close()


async def test_a_failed_write_leaves_nothing_behind(database: Database) -> None:
    refusal = InvalidArgument("entry.name: must not be empty")

    async def refused(session: AsyncSession) -> None:
        session.add(NodeMetaRow(key="a", value="1"))
        await session.flush()
        raise refusal

    with pytest.raises(InvalidArgument) as caught:
        await database.write("test.refused", refused)
    assert caught.value is refusal  # domain errors propagate unchanged

    async def duplicate(session: AsyncSession) -> None:
        session.add(NodeMetaRow(key="b", value="1"))
        await session.flush()
        session.add(NodeMetaRow(key="b", value="2"))
        await session.flush()

    with pytest.raises(IntegrityError):
        await database.write("test.duplicate", duplicate)
    assert await _meta_keys(database) == []


async def test_a_statement_the_driver_refuses_is_a_bug_not_the_database_unavailable(
    database: Database,
) -> None:
    """asyncpg refuses a statement of more than 32,767 parameters with the same exception
    class as a broken connection: it used to mark the database unavailable (health
    NOT_SERVING) and retry, which a supervision summary of 100,000 resources did hourly."""
    many = list(range(40_000))

    async def read(session: AsyncSession) -> int:
        conn = await session.connection()
        statement = text("SELECT COUNT(*) FROM node_meta WHERE key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        return int((await conn.execute(statement, {"keys": [str(k) for k in many]})).scalar_one())

    if database.backend == "postgresql":
        with pytest.raises(StatementError) as caught:
            await database.read("test.many_parameters", read)
        assert "32767" in str(caught.value)
    else:  # SQLite as Debian builds it binds up to 250,000
        assert await database.read("test.many_parameters", read) == 0
    assert database.health.available


async def test_driver_cursor_errors_leave_as_sqlalchemys_and_roll_back(database: Database) -> None:
    # The audit batch writes through the driver's cursor; its errors must look like any other
    # statement's, so that conflicts are retried and unique violations recognised.
    def duplicate(connection: Connection) -> None:
        with driver_cursor(connection) as cursor:
            cursor.execute("INSERT INTO node_meta (key, value) VALUES ('c', '1')")
            cursor.execute("INSERT INTO node_meta (key, value) VALUES ('c', '2')")

    with pytest.raises(IntegrityError) as caught:
        await database.write_sync("test.driver_duplicate", duplicate)
    assert database.is_unique_violation(caught.value)
    assert await _meta_keys(database) == []


def _conflict(backend: str) -> OperationalError:
    """The error each backend raises when a transaction lost a race."""

    class PostgresSerializationFailure(Exception):
        sqlstate = "40001"

    orig: Exception = (
        sqlite3.OperationalError("database is locked")
        if backend == "sqlite"
        else PostgresSerializationFailure("could not serialize access")
    )
    return OperationalError("UPDATE node_meta ...", None, orig)


async def test_conflicts_rerun_the_whole_transaction(database: Database) -> None:
    attempts = 0

    async def flaky(session: AsyncSession) -> str:
        nonlocal attempts
        attempts += 1
        session.add(NodeMetaRow(key=f"attempt{attempts}", value="x"))
        await session.flush()
        if attempts < 3:
            raise _conflict(database.backend)
        return "done"

    with capture_logs() as logs:
        assert await database.write("test.flaky", flaky) == "done"
    assert attempts == 3
    assert await _meta_keys(database) == ["attempt3"]  # earlier attempts rolled back
    retries = [e for e in logs if e["event"] == "storage.transaction_retry"]
    assert [(e["transaction"], e["attempt"]) for e in retries] == [
        ("test.flaky", 1),
        ("test.flaky", 2),
    ]


async def test_retries_are_bounded(database: Database) -> None:
    database.max_attempts = 2
    calls = 0

    async def always_conflicting(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        raise _conflict(database.backend)

    with pytest.raises(OperationalError):
        await database.write("test.hopeless", always_conflicting)
    assert calls == 2


async def test_concurrent_read_then_write_on_sqlite_never_locks(sqlite_url: str) -> None:
    """20 writers over two Database instances (think: two processes) on one file, each
    reading a counter and writing it back: all succeed, none is lost, none needs a retry."""
    first = await Database.open(sqlite_url)
    second = await Database.open(sqlite_url)
    try:
        await first.migrate()
        await second.migrate()

        async def increment(session: AsyncSession) -> None:
            current = int(await _get_meta(session, "counter") or "0")
            await asyncio.sleep(0.001)  # let the other writers run between read and write
            row = await session.get(NodeMetaRow, "counter")
            if row is None:
                session.add(NodeMetaRow(key="counter", value=str(current + 1)))
            else:
                row.value = str(current + 1)

        with capture_logs() as logs:
            await asyncio.gather(
                *(
                    (first if i % 2 else second).write("test.increment", increment)
                    for i in range(20)
                )
            )
        assert not [e for e in logs if e["event"] == "storage.transaction_retry"]

        async def counter(session: AsyncSession) -> str | None:
            return await _get_meta(session, "counter")

        assert await first.read("test.counter", counter) == "20"
    finally:
        await first.close()
        await second.close()


async def test_change_feed_is_gap_free_and_ordered_under_concurrency(database: Database) -> None:
    """Concurrent registrations, some refused (one source per element), still number the
    feed 1..N with no gaps: a node resuming "after N" misses nothing."""
    catalog = Catalog(database, NODE_REGION)

    async def register(n: int) -> None:
        code = agency_code(n)
        claims = n % 4 == 0  # every fourth claims the same element: only one may win
        items = (item("id", key=True, standard_element="DE01", authoritative_source=claims),)
        await catalog.register(agency(code), make_entry(n, code, items=items))

    results = await asyncio.gather(*(register(n) for n in range(1, 21)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 4 and all(isinstance(r, FailedPrecondition) for r in refused)

    changes = await catalog.changes(0, 100)
    assert [c.sequence for c in changes] == list(range(1, 17))
    assert len({c.resource_code for c in changes}) == 16
    assert all(c.at.tzinfo is dt.UTC for c in changes)


# --- migrations -----------------------------------------------------------------------


async def test_migrate_is_idempotent_and_reaches_head(database: Database) -> None:
    versions = Path(__file__).parents[2] / "node" / "migrations" / "versions"
    newest = max(p.name.split("_", 1)[0] for p in versions.glob("[0-9]*_*.py"))
    assert await database.current_revision() == head_revision() == newest
    await database.migrate()
    assert await database.current_revision() == head_revision()

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with database.engine.connect() as connection:
        assert await connection.run_sync(tables) == TABLES | {"alembic_version"}


async def test_a_new_database_has_no_revision(db_url: str) -> None:
    db = await Database.open(db_url)
    try:
        assert await db.current_revision() is None
    finally:
        await db.close()


async def test_models_and_migrations_agree(database: Database) -> None:
    """Alembic's autogenerate finds nothing to do: the models say what the migrations made."""

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))

    async with database.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


# --- time -----------------------------------------------------------------------------


async def test_datetimes_come_back_utc_aware(database: Database) -> None:
    china = dt.timezone(dt.timedelta(hours=8), "CST")
    revoked_at = dt.datetime(2025, 3, 1, 16, 30, 15, 123456, tzinfo=china)

    async def store(session: AsyncSession) -> None:
        session.add(
            RevokedCertificateRow(
                serial_hex="1a2b",
                issuer_region=NODE_REGION,
                identity="spiffe://350100.fujian.gov.cn/node",
                reason="key_compromise",
                revoked_at=revoked_at,
                revoked_by="spiffe://350000.fujian.gov.cn/authority",
            )
        )

    async def load(session: AsyncSession) -> dt.datetime:
        row = await session.get(RevokedCertificateRow, "1a2b")
        assert row is not None
        return row.revoked_at

    await database.write("test.store", store)
    back = await database.read("test.load", load)
    assert back.tzinfo is dt.UTC
    assert back == revoked_at
    assert back.hour == 8  # 16:30 in China is 08:30 UTC


async def test_insert_rows_stores_what_the_core_insert_stores(database: Database) -> None:
    """insert_rows (bulk writes through the driver's executemany) converts each value with
    its column's bind processor: the stored values are the Core insert's, byte for byte."""
    table = RevokedCertificateRow.__table__  # type: ignore[attr-defined]
    china = dt.timezone(dt.timedelta(hours=8), "CST")
    at = dt.datetime(2025, 3, 1, 16, 30, 15, 123456, tzinfo=china)
    columns = ("serial_hex", "issuer_region", "identity", "reason", "revoked_at", "revoked_by")
    # Another zone; UTC without microseconds; a UTC that is not datetime.UTC itself (as parsed
    # from JSON): each stored as the Core insert stores it.
    times = (
        at,
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) - dt.timedelta(1),
        dt.datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(0))) - dt.timedelta(2),
    )

    def row(serial: str, n: int) -> tuple[Any, ...]:
        return (serial, NODE_REGION, f"spiffe://{n}", "superseded", times[n] + dt.timedelta(n), "p")

    def store(connection: Connection) -> None:
        core = [dict(zip(columns, row(f"c{n}", n), strict=True)) for n in range(3)]
        connection.execute(table.insert(), core)
        insert_rows(connection, table, columns, [row(f"d{n}", n) for n in range(3)])
        insert_rows(connection, table, columns, [])  # nothing to do

    def stored(connection: Connection) -> list[tuple[Any, ...]]:
        sql = f"SELECT {', '.join(columns)} FROM revoked_certificate ORDER BY serial_hex"
        return [tuple(r) for r in connection.exec_driver_sql(sql)]

    await database.write_sync("test.insert_rows", store)
    rows = await database.write_sync("test.stored", stored)
    assert [r[0] for r in rows] == ["c0", "c1", "c2", "d0", "d1", "d2"]
    assert [r[1:] for r in rows[:3]] == [r[1:] for r in rows[3:]]
    assert rows[4][4] != rows[3][4]  # the rows' own values, not the first row's

    async def load(session: AsyncSession) -> dt.datetime:
        found = await session.get(RevokedCertificateRow, "d1")
        assert found is not None
        return found.revoked_at

    assert await database.read("test.load", load) == times[1] + dt.timedelta(1)

    def naive(connection: Connection) -> None:
        bad = (*row("e0", 0)[:4], dt.datetime(2025, 3, 1, 16, 30), "p")  # naive on purpose
        insert_rows(connection, table, columns, [bad])

    with pytest.raises(ValueError, match="refusing to store naive datetime"):
        await database.write_sync("test.naive", naive)


async def test_naive_datetimes_are_refused(database: Database) -> None:
    async def store(session: AsyncSession) -> None:
        session.add(
            RevokedCertificateRow(
                serial_hex="1a2b",
                issuer_region=NODE_REGION,
                identity="x",
                reason="superseded",
                revoked_at=dt.datetime(2025, 3, 1, 16, 30),  # naive on purpose
                revoked_by="y",
            )
        )

    with pytest.raises(StatementError, match="naive datetime"):
        await database.write("test.naive", store)


async def test_a_cancelled_transaction_runs_to_its_end_and_returns_its_connection(
    database: Database,
) -> None:
    """A caller cancelled inside a transaction (a stream ending, a node stopping) does not
    abandon it half-way: the write commits, the connection goes back to the pool, and only
    then does the cancellation reach the caller."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_write(session: AsyncSession) -> None:
        connection = await session.connection()
        await connection.execute(
            text("INSERT INTO node_meta (key, value) VALUES ('cancel-test', 'written')")
        )
        started.set()
        await release.wait()

    task = asyncio.create_task(database.write("slow", slow_write))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    await asyncio.sleep(0)  # the cancellation is delivered while the transaction waits
    assert not task.done(), "the caller waits for its transaction"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    row = await database.fetch_one("SELECT value FROM node_meta WHERE key = 'cancel-test'", {})
    assert row is not None and row[0] == "written"  # committed whole, not abandoned half-way
