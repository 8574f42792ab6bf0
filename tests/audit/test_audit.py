"""The audit log (第三十九条): durable, gap-free, hash-chained, group-committed; `govnode audit`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text

from gateway.audit import MAX_DETAIL_CHARS, MAX_IDENTITY_CHARS, CallRecord, bounded, cut
from gateway.quote import clip_message
from node.audit import AuditLog, AuditLogClosed, AuditWriteFailed, Operation
from node.audit import _log as audit_module
from node.audit._log import GENESIS_HASH, AuditEntry, request_digest
from node.config import NodeConfig, load_config
from node.errors import InvalidArgument
from node.pki import provision_province
from node.storage import Database
from tests.support.nodes import GOVNODE

AGENCY = "spiffe://350000.fujian.gov.cn/agency/11350000003591001X"
OTHER = "spiffe://350000.fujian.gov.cn/agency/11350000003591002X"
QUERY = "/govnode.v1.SharingService/Query"
T0 = dt.datetime(2026, 11, 25, 2, 31, 2, 123456, tzinfo=dt.UTC)


def entry(n: int = 0, **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "caller": AGENCY,
        "method": QUERY,
        "operation": Operation.QUERY,
        "outcome": "OK",
        "request_digest": request_digest(f"request {n}".encode()),
        "resource_code": "350000-1-000001",
        "request_id": f"req-{n}",
        "detail": {"rows": n},
        "at": T0 + dt.timedelta(seconds=n),
    } | fields
    return AuditEntry(**values)  # type: ignore[arg-type]


@pytest.fixture
async def audit(database: Database) -> AsyncIterator[AuditLog]:
    log = AuditLog(database)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def sql(db: Database, statement: str) -> None:
    """Change the database behind the log's back, as someone with database access could."""
    async with db.engine.begin() as connection:
        await connection.execute(text(statement))


# --- appending ----------------------------------------------------------------------------


async def test_append_returns_consecutive_sequences_once_committed(audit: AuditLog) -> None:
    assert [await audit.append(entry(n)) for n in range(5)] == [1, 2, 3, 4, 5]
    assert await audit.count() == 5
    records = await audit.tail(5)
    assert [r.sequence for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    first = records[0]
    assert (first.caller, first.operation, first.detail, first.at) == (
        AGENCY,
        Operation.QUERY,
        {"rows": 0},
        T0,
    )


async def test_concurrent_appends_are_gap_free_and_group_committed(audit: AuditLog) -> None:
    sequences = await asyncio.gather(*(audit.append(entry(n)) for n in range(200)))
    assert sorted(sequences) == list(range(1, 201))
    assert audit.records_written == 200
    assert audit.batches_written <= 5, "200 concurrent appends should share a few transactions"
    assert (await audit.verify_chain()).ok


async def test_close_writes_everything_pending_and_refuses_later_appends(
    database: Database,
) -> None:
    log = AuditLog(database)
    with pytest.raises(AuditLogClosed, match="not started"):
        await log.append(entry())
    await log.start()
    waiting = [asyncio.create_task(log.append(entry(n))) for n in range(50)]
    await asyncio.sleep(0)  # queued, not yet written
    await log.close()
    assert sorted([t.result() for t in waiting]) == list(range(1, 51))
    with pytest.raises(AuditLogClosed, match="closed"):
        await log.append(entry())
    await log.close()  # idempotent
    assert await log.count() == 50


async def test_a_failed_transaction_fails_every_waiter_of_the_batch(
    database: Database, audit: AuditLog
) -> None:
    await sql(database, "ALTER TABLE audit_record RENAME TO audit_record_away")
    results = await asyncio.gather(
        *(audit.append(entry(n)) for n in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, AuditWriteFailed) for r in results), results
    assert audit.batches_written == 0
    # The log keeps working once the database does, and the failure left no gap.
    await sql(database, "ALTER TABLE audit_record_away RENAME TO audit_record")
    assert await audit.append(entry()) == 1


async def test_two_processes_on_one_database_share_one_chain(db_url: str) -> None:
    dbs = [await Database.open(db_url) for _ in range(2)]
    try:
        await dbs[0].migrate()
        logs = [AuditLog(db) for db in dbs]
        for log in logs:
            await log.start()

        async def burst(log: AuditLog, who: str) -> list[int]:
            got: list[int] = []
            for n in range(5):
                got += await asyncio.gather(
                    *(log.append(entry(n, caller=f"{who}/{i}")) for i in range(8))
                )
            return got

        first, second = await asyncio.gather(burst(logs[0], AGENCY), burst(logs[1], OTHER))
        for log in logs:
            await log.close()
        assert sorted(first + second) == list(range(1, 81))
        check = await logs[0].verify_chain()
        assert (check.ok, check.checked) == (True, 80), check
    finally:
        for db in dbs:
            await db.close()


async def test_caller_supplied_values_cannot_fail_a_batch(audit: AuditLog) -> None:
    junk = entry(
        caller="spiffe://x/" + "a" * 1000 + "\x00",
        request_id="r" * 200,
        method="/" + "m" * 500,
        message="bad \x00 byte and a lone surrogate \ud800",
        outcome="UNAUTHENTICATED",
    )
    sequences = await asyncio.gather(audit.append(junk), audit.append(entry(1)))
    assert sorted(sequences) == [1, 2]
    stored = (await audit.query(outcome="UNAUTHENTICATED"))[0]
    assert len(stored.caller) == 300 and stored.caller.endswith("…")
    assert len(stored.request_id) == 64
    assert "\x00" not in stored.message
    assert (await audit.verify_chain()).ok


async def test_entries_the_code_got_wrong_are_refused_before_queueing(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="naive"):
        await audit.append(entry(at=dt.datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="SHA-256"):
        await audit.append(entry(request_digest="abc"))
    assert await audit.count() == 0


def test_operations_carry_the_terms_of_the_measures() -> None:
    assert [(op.term, op.label) for op in Operation] == [
        ("汇聚", "Aggregate"),
        ("共享", "Share"),
        ("查询", "Query"),
        ("比对", "Compare"),
        ("下载", "Download"),
        ("分析", "Analyze"),
        ("访问", "Access"),
        ("更新维护", "Maintain"),
    ]
    assert Operation.MAINTAIN.value == "maintain"


# --- the chain ----------------------------------------------------------------------------


async def test_the_chain_verifies_in_whole_and_in_parts(audit: AuditLog) -> None:
    await asyncio.gather(*(audit.append(entry(n)) for n in range(30)))
    assert (await audit.verify_chain()).checked == 30
    part = await audit.verify_chain(after=10, limit=5)
    assert (part.ok, part.checked) == (True, 5)
    assert (await audit.verify_chain(after=30)).checked == 0
    missing = await audit.verify_chain(after=31)
    assert (missing.ok, missing.first_bad_sequence) == (False, 31)


async def test_a_record_edited_in_the_database_is_detected(
    database: Database, audit: AuditLog
) -> None:
    for n in range(6):
        await audit.append(entry(n))
    await sql(database, "UPDATE audit_record SET message = 'nothing happened' WHERE sequence = 4")
    check = await audit.verify_chain()
    assert (check.ok, check.checked, check.first_bad_sequence) == (False, 3, 4)
    assert "#4 was altered" in check.reason


async def test_a_record_rehashed_in_the_database_breaks_the_next_link(
    database: Database, audit: AuditLog
) -> None:
    for n in range(6):
        await audit.append(entry(n))
    await sql(database, f"UPDATE audit_record SET hash = '{'f' * 64}' WHERE sequence = 2")
    check = await audit.verify_chain()
    assert check.first_bad_sequence == 2  # its own hash no longer matches its contents


async def test_a_record_deleted_from_the_database_is_detected(
    database: Database, audit: AuditLog
) -> None:
    for n in range(6):
        await audit.append(entry(n))
    await sql(database, "DELETE FROM audit_record WHERE sequence = 3")
    check = await audit.verify_chain()
    assert (check.ok, check.first_bad_sequence) == (False, 3)
    assert "#3 is missing" in check.reason


_text = st.text(max_size=40)
_details = st.dictionaries(st.text(max_size=8), st.text(max_size=12) | st.integers(), max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    caller=_text,
    message=_text,
    request_id=_text,
    detail=_details,
    sequence=st.integers(min_value=1, max_value=10**15),
    micro=st.integers(min_value=0, max_value=999_999),
)
def test_the_batch_writer_hashes_exactly_as_record_hash(
    caller: str,
    message: str,
    request_id: str,
    detail: dict[str, str | int],
    sequence: int,
    micro: int,
) -> None:
    # The writer hashes a prefix prepared before its transaction; verify_chain (and any
    # auditor's tool) uses record_hash. They must agree on every input, or the chain breaks.
    fitted = audit_module._fit(
        entry(
            caller=caller,
            message=message,
            request_id=request_id,
            detail=detail,
            at=T0.replace(microsecond=micro),
        )
    )
    prev = request_digest(caller.encode("utf-8", "replace"))
    expected = audit_module.record_hash(prev, audit_module._hashed_fields(fitted, sequence))
    prepared = audit_module._prepare(fitted)
    assert audit_module._chain_hash(prev, prepared, sequence) == expected


# Mostly ASCII, sometimes over a column's length, NUL or a lone surrogate: both sides of the
# quick checks that let the usual record through uncopied.
_edgy = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20) | st.sampled_from(
    ["x" * 301, "a\x00b", "\ud800", "引号", "x" * 2000]
)


@settings(max_examples=300, deadline=None)
@given(
    caller=_edgy,
    message=_edgy,
    request_id=_edgy,
    detail=st.dictionaries(_edgy, _edgy | st.integers(), max_size=3),
    at=st.sampled_from([T0, T0.astimezone(dt.timezone(dt.timedelta(hours=8)))]),
)
def test_the_quick_paths_leave_records_exactly_as_the_general_ones(
    caller: str, message: str, request_id: str, detail: dict[str, str | int], at: dt.datetime
) -> None:
    # The guard's bounds and the log's fitting skip the copy when nothing needs changing; what
    # is stored and hashed must be the same either way.
    record = CallRecord(
        method=QUERY,
        caller=caller,
        origin_node=caller,
        resource_code="350000-1-000001",
        outcome="OK",
        message=message,
        request_digest=request_digest(b"x"),
        request_id=request_id,
        detail=detail,
    )
    general = dataclasses.replace(
        record,
        caller=cut(record.caller, MAX_IDENTITY_CHARS),
        origin_node=cut(record.origin_node, MAX_IDENTITY_CHARS),
        message=clip_message(record.message),
        detail={
            k: cut(v, MAX_DETAIL_CHARS) if isinstance(v, str) else v for k, v in detail.items()
        },
    )
    assert bounded(record) == general
    one = entry(caller=caller, message=message, request_id=request_id, detail=detail, at=at)
    assert audit_module._fit(one) == audit_module._refit(one)


async def test_a_batch_stores_the_values_the_general_insert_stores(
    database: Database, audit: AuditLog
) -> None:
    # The batch goes to the driver as tuples; the same entry inserted through SQLAlchemy Core
    # must be stored identically (SQLite keeps datetimes as text: the format must not drift).
    odd = entry(7, message='引号"和\n换行', detail={"键": "值", "rows": 3})
    await audit.append(odd)
    fitted = audit_module._fit(odd)
    general = audit_module._hashed_fields(fitted, 1000) | {
        "detail": audit_module._canonical(fitted.detail),
        "prev_hash": GENESIS_HASH,
        "hash": GENESIS_HASH,
    }
    async with database.engine.begin() as connection:
        await connection.execute(insert(audit_module._table), [general])
    columns = ", ".join(audit_module._PREPARED_COLUMNS)
    async with database.engine.connect() as connection:
        rows = (
            await connection.execute(text(f"SELECT {columns} FROM audit_record ORDER BY sequence"))
        ).all()
    assert len(rows) == 2
    assert tuple(rows[0]) == tuple(rows[1])
    assert (await audit.verify_chain(limit=1)).ok


# --- reading ------------------------------------------------------------------------------


async def test_query_filters_and_pages(audit: AuditLog) -> None:
    await audit.append(entry(0))
    await audit.append(entry(1, caller=OTHER, outcome="PERMISSION_DENIED", message="no grant"))
    await audit.append(entry(2, operation=Operation.MAINTAIN, resource_code="350000-3-000002"))
    await audit.append(entry(3, origin_node="spiffe://350100.fujian.gov.cn/node"))

    async def sequences(**filters: object) -> list[int]:
        return [r.sequence for r in await audit.query(**filters)]  # type: ignore[arg-type]

    assert await sequences() == [1, 2, 3, 4]
    assert await sequences(caller=OTHER) == [2]
    assert await sequences(outcome="PERMISSION_DENIED") == [2]
    assert await sequences(operation=Operation.MAINTAIN) == [3]
    assert await sequences(resource_code="350000-3-000002") == [3]
    assert await sequences(request_id="req-3") == [4]
    assert await sequences(since=T0 + dt.timedelta(seconds=1)) == [2, 3, 4]
    assert await sequences(until=T0 + dt.timedelta(seconds=1)) == [1]
    assert await sequences(caller=AGENCY, operation=Operation.QUERY) == [1, 4]
    assert await sequences(after_sequence=1, limit=2) == [2, 3]
    assert [r.sequence for r in await audit.tail(2)] == [3, 4]
    assert [r.sequence for r in await audit.tail(2, caller=AGENCY)] == [3, 4]
    assert [r.sequence for r in await audit.tail(9, caller=OTHER)] == [2]
    assert (await audit.query(request_id="req-3"))[0].origin_node.endswith("/node")
    with pytest.raises(InvalidArgument, match="limit"):
        await audit.query(limit=1001)
    with pytest.raises(InvalidArgument, match="time zone"):
        await audit.query(since=dt.datetime(2026, 1, 1))


# --- govnode audit ------------------------------------------------------------------------

# `govnode audit` as an operator runs it.
ENV = {**os.environ, "GOVNODE_LOG__FORMAT": "json"}


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def ended_or_dumped(
    proc: asyncio.subprocess.Process, what: str, within_s: float = 15.0
) -> tuple[bytes, bytes]:
    """``proc``'s output once it has ended (within ``within_s``); if it has not, the test fails
    with where each of its threads is (py-spy dump), and the process is killed, so that nothing
    of it is left to the tests after this one."""
    try:
        return await asyncio.wait_for(proc.communicate(), within_s)
    except TimeoutError:
        spy = Path(sys.executable).parent / "py-spy"
        dump = await asyncio.create_subprocess_exec(
            str(spy), "dump", "--pid", str(proc.pid),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        stacks, _ = await asyncio.wait_for(dump.communicate(), 60)
        proc.kill()
        await proc.wait()
        pytest.fail(
            f"{what}: still running after {within_s:g} s; where its threads were:\n"
            f"{stacks.decode(errors='replace')}"
        )


def province_config(base: Path, db_url: str) -> tuple[Path, NodeConfig]:
    """A province node's govnode.toml over ``db_url`` (no node is started: the CLI only needs
    the node's configuration and database)."""
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen="127.0.0.1:7443",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1"],
    )
    path = made.config_path
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )
    return path, load_config(path)


def govnode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GOVNODE, *map(str, args)], capture_output=True, text=True, timeout=60, env=ENV
    )


def test_cli_refuses_a_bad_line_count_in_one_line(tmp_path: Path) -> None:
    result = govnode("audit", "tail", "--config", tmp_path / "govnode.toml", "-n", "-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: -n/--lines: must be 0 to 1000, got -1"


async def test_cli_tail_and_verify(tmp_path: Path, db_url: str) -> None:
    config, cfg = province_config(tmp_path / "province", db_url)
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        log = AuditLog(db)
        await log.start()
        await log.append(entry(0))
        await log.append(entry(1, caller=OTHER, outcome="PERMISSION_DENIED", message="无授权"))
        await log.append(entry(2, operation=Operation.MAINTAIN))

        shown, as_json, intact = await asyncio.gather(
            asyncio.to_thread(govnode, "audit", "tail", "--config", config),
            asyncio.to_thread(
                govnode, "audit", "tail", "--config", config, "-n", "2", "--caller", OTHER, "--json"
            ),
            asyncio.to_thread(govnode, "audit", "verify", "--config", config),
        )
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert len(lines) == 3
        # 02:31:02 UTC is 10:31:02 in China Standard Time.
        assert lines[0].startswith("2026-11-25 10:31:02 CST  #1  OK  查询 Query  350000-1-000001")
        assert lines[0].endswith(f"{AGENCY}  (request req-0)")
        assert "PERMISSION_DENIED" in lines[1] and lines[1].endswith("— 无授权")
        assert "更新维护 Maintain" in lines[2]

        assert as_json.returncode == 0, as_json.stderr
        (line,) = as_json.stdout.splitlines()
        record = json.loads(line)
        assert (record["sequence"], record["operation"], record["message"]) == (
            2,
            "query",
            "无授权",
        )
        assert record["at"] == "2026-11-25T02:31:03.123456Z"

        assert (intact.returncode, intact.stdout.splitlines()) == (
            0,
            ["audit chain intact: 3 records", "no witnessed checkpoint to compare with yet"],
        )

        await sql(db, "UPDATE audit_record SET outcome = 'OK' WHERE sequence = 2")
        broken = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
        assert broken.returncode == 1
        assert "BROKEN at record #2" in broken.stdout
        await log.close()
    finally:
        await db.close()


async def test_cli_tail_follow_prints_new_records_until_interrupted(
    tmp_path: Path, db_url: str
) -> None:
    config, cfg = province_config(tmp_path / "province", db_url)
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        log = AuditLog(db)
        await log.start()
        await log.append(entry(0))
        await log.append(entry(1, resource_code="350000-3-000009"))
        proc = await asyncio.create_subprocess_exec(
            *GOVNODE,
            "audit",
            "tail",
            "--config",
            str(config),
            "--follow",
            "--resource",
            "350000-3-000009",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
            # As at a terminal: a test run started in the background by a shell without job
            # control inherits SIGINT ignored, and so would the command, Ctrl-C and all.
            preexec_fn=_sigint_as_at_a_terminal,
        )
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
            assert b"#2  OK" in first  # the tail: following has begun
            await log.append(entry(2))  # another resource: not shown
            await log.append(entry(3, resource_code="350000-3-000009"))
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
            assert b"#4  OK" in line and b"350000-3-000009" in line
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = await ended_or_dumped(proc, "govnode audit tail --follow, after Ctrl-C")
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
        await log.close()
    finally:
        await db.close()
