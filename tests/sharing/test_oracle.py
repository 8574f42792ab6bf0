"""Verify oracle protection (node.sharing._oracle, 第三十七条): rate limits and daily quotas per
caller and resource, held under concurrent callers and answered with RESOURCE_EXHAUSTED and retry
information, and enumeration flagged in the audit log and to the provider.

The limits live in the node's database, so every test runs on a real one (SQLite, and PostgreSQL
when GOVNODE_TEST_POSTGRES_URL is set): across a restart, and shared by two nodes or two guards
at once. The limiter's clocks are replaced by hand-moved ones, so nothing here depends on how
fast the machine runs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import event

from bench import dataset as bench_dataset
from gateway.forward import Forwarder
from gateway.identity import Identity, Role
from gateway.refusal import Refusal
from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.audit import AuditLog
from node.config import OracleSection, load_config
from node.demo._main import free_port
from node.errors import ResourceExhausted
from node.servicers.convert import entry_to_proto
from node.servicers.status import RETRY_AFTER_KEY, trailing_metadata_for
from node.sharing import NotificationKind, Notifications, OracleGuard
from node.sharing import _oracle as oracle
from node.storage import Database
from node.times import CST
from tests.support.entries import agency_code, item
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
)
from tests.support.oracle import (
    START,
    TRUST_DOMAIN,
    admitted,
    caller,
    guard_on,
    limited_entry,
    retry_after_ms,
    sensitive,
)


class Clocks:
    """The limiter's monotonic and wall clocks, moved only by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        self.wall = START
        monkeypatch.setattr(oracle, "monotonic", lambda: self.now)
        monkeypatch.setattr(oracle, "wall_clock", lambda: self.wall)

    def advance(self, seconds: float) -> None:
        """Let time pass: the budgets run on the wall clock, pruning is paced by the other."""
        self.now += seconds
        self.wall += dt.timedelta(seconds=seconds)


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Clocks:
    return Clocks(monkeypatch)


# --- the limiter on its own, on a real database ----------------------------------------------


async def count_rows(db: Database, table: str, who: Identity | None = None) -> int:
    """Rows in ``table`` (of ``who`` only, when given)."""
    if who is None:
        row = await db.fetch_one(f"SELECT count(*) FROM {table}", {})
    else:
        row = await db.fetch_one(
            f"SELECT count(*) FROM {table} WHERE caller = :caller", {"caller": str(who)}
        )
    assert row is not None
    return int(row[0])


@contextlib.contextmanager
def statements_run_by(db: Database) -> Iterator[list[str]]:
    """Every SQL statement ``db`` runs inside the block, on any of its engines."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engines = [db.engine.sync_engine]
    if db._sync_writer is not None:  # SQLite's writer thread has an engine of its own
        engines.append(db._sync_writer)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_concurrent_callers_never_overspend_the_bucket(
    clocks: Clocks, database: Database
) -> None:
    guard = guard_on(database, verify_per_minute=20)
    entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
    outcomes = await asyncio.gather(*(admitted(guard, who, str(i), entry) for i in range(50)))
    assert outcomes.count(True) == 20
    clocks.advance(3.0)  # 20 per minute: one more call every 3 s
    assert await admitted(guard, who, "100", entry)
    assert not await admitted(guard, who, "101", entry)


async def test_two_guards_on_one_database_never_admit_more_than_the_limit_together(
    clocks: Clocks, database: Database, db_url: str
) -> None:
    """What two processes of one node behind a load balancer do: each has its own engine and
    connections, and the budget they spend from is one."""
    other = await Database.open(db_url)
    try:
        guards = [guard_on(db, verify_per_minute=20, verify_per_day=50) for db in (database, other)]
        entry, who = limited_entry(), caller(CIVIL_AFFAIRS)

        async def burst() -> list[bool]:
            return await asyncio.gather(
                *(admitted(guards[i % 2], who, f"key-{i}", entry) for i in range(60))
            )

        assert (await burst()).count(True) == 20  # the bucket holds 20 for both
        clocks.advance(60.0)  # full again; 30 of the day's 50 are left
        assert (await burst()).count(True) == 20
        clocks.advance(60.0)  # full again; 10 of the day's 50 are left
        assert (await burst()).count(True) == 10
        with pytest.raises(ResourceExhausted, match=r"50 Verify calls per day .*, 50 used today"):
            await guards[1].admit_verify(who, entry, {"zjhm": "1"})
        assert await admitted(guards[0], caller(MARKET_REGULATION), "1", entry)  # its own budget
    finally:
        await other.close()


REPOSITORY = Path(__file__).resolve().parents[2]

#: Another OS process spending from the same budget: waits for "go", then makes ``calls``
#: admissions at once and prints how many were admitted.
OTHER_PROCESS = """
import asyncio, sys
import structlog
from node.sharing import _oracle as oracle
from node.storage import Database
from tests.support import oracle as t
from tests.support.nodes import CIVIL_AFFAIRS

async def main(url: str, calls: int) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: ours
    oracle.wall_clock = lambda: t.START
    db = await Database.open(url)
    try:
        guard = t.guard_on(db, verify_per_day=50)
        who, entry = t.caller(CIVIL_AFFAIRS), t.limited_entry()
        print("ready", flush=True)
        sys.stdin.readline()
        outcomes = await asyncio.gather(
            *(t.admitted(guard, who, str(i), entry) for i in range(calls))
        )
        print(outcomes.count(True), flush=True)
    finally:
        await db.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.slow
async def test_two_os_processes_never_admit_more_than_the_daily_quota_together(
    clocks: Clocks, database: Database, db_url: str
) -> None:
    guard = guard_on(database, verify_per_day=50)
    who, entry = caller(CIVIL_AFFAIRS), limited_entry()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OTHER_PROCESS,
        db_url,
        "40",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPOSITORY,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        ready = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert ready == b"ready\n", ready
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        mine = await asyncio.gather(*(admitted(guard, who, str(i), entry) for i in range(40)))
        theirs = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert await asyncio.wait_for(proc.wait(), 60) == 0, await proc.stderr.read()
        assert mine.count(True) + int(theirs) == 50
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_compare_rows_from_two_guards_never_pass_the_daily_quota(
    clocks: Clocks, database: Database, db_url: str
) -> None:
    other = await Database.open(db_url)
    try:
        guards = [guard_on(db, verify_per_day=100) for db in (database, other)]
        entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
        rows = [{"zjhm": str(i)} for i in range(7)]

        async def compare(i: int) -> bool:
            try:
                await guards[i % 2].admit_compare(who, entry, rows)
            except ResourceExhausted:
                return False
            return True

        outcomes = await asyncio.gather(*(compare(i) for i in range(20)))
        assert outcomes.count(True) == 14  # 98 rows; a 15th Compare would make 105
        assert await admitted(guards[1], who, "1", entry)
        assert await admitted(guards[0], who, "1", entry)
        assert not await admitted(guards[1], who, "1", entry)
    finally:
        await other.close()


async def test_a_refusal_says_which_limit_and_when_to_retry(
    clocks: Clocks, database: Database
) -> None:
    guard = guard_on(database, verify_per_minute=2)
    entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
    for _ in range(2):
        await guard.admit_verify(who, entry, {"zjhm": "1"})
    clocks.advance(15.0)  # half a token back
    with pytest.raises(ResourceExhausted) as caught:
        await guard.admit_verify(who, entry, {"zjhm": "1"})
    assert caught.value.message == (
        f"Verify rate limit exceeded: 2 Verify calls per minute for {who} on resource "
        f"{entry.resource_code} ({entry.name}) (oracle protection, 第三十七条); retry after 15.0 s"
    )
    # Under gRPC's own key too, so that a stock client's retry policy waits as long.
    assert trailing_metadata_for(caught.value) == (
        (RETRY_AFTER_KEY, "15000"),
        ("grpc-retry-pushback-ms", "15000"),
    )


async def test_the_daily_quota_resets_at_midnight_china_time(
    clocks: Clocks, database: Database
) -> None:
    guard = guard_on(database, verify_per_day=3)
    entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
    clocks.wall = dt.datetime(2026, 3, 2, 23, 59, tzinfo=CST)
    for _ in range(3):
        await guard.admit_verify(who, entry, {"zjhm": "1"})
    with pytest.raises(ResourceExhausted) as caught:
        await guard.admit_verify(who, entry, {"zjhm": "1"})
    assert "daily quota exhausted: 3 Verify calls per day" in caught.value.message
    assert "retry after 00:00 China Standard Time, in 60.0 s" in caught.value.message
    assert caught.value.retry_after_s == 60.0
    clocks.wall = dt.datetime(2026, 3, 3, 0, 0, 1, tzinfo=CST)
    await guard.admit_verify(who, entry, {"zjhm": "1"})


async def test_a_clock_that_lags_neither_refills_the_bucket_nor_resets_the_day(
    clocks: Clocks, database: Database
) -> None:
    """Processes share the budget by the wall clock; one whose clock is behind gains nothing."""
    entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
    bucket = guard_on(database, verify_per_minute=2)
    for _ in range(2):
        await bucket.admit_verify(who, entry, {"zjhm": "1"})
    clocks.wall -= dt.timedelta(minutes=10)
    with pytest.raises(ResourceExhausted, match=r"retry after 30\.0 s"):
        await bucket.admit_verify(who, entry, {"zjhm": "1"})
    clocks.wall += dt.timedelta(minutes=10, seconds=30)
    await bucket.admit_verify(who, entry, {"zjhm": "1"})

    quota, other = guard_on(database, verify_per_day=3), caller(MARKET_REGULATION)
    clocks.wall = dt.datetime(2026, 3, 2, 23, 59, 50, tzinfo=CST)
    for _ in range(2):
        await quota.admit_verify(other, entry, {"zjhm": "1"})
    clocks.wall = dt.datetime(2026, 3, 3, 0, 0, 5, tzinfo=CST)  # a process already past midnight
    await quota.admit_verify(other, entry, {"zjhm": "1"})
    clocks.wall = dt.datetime(2026, 3, 2, 23, 59, 55, tzinfo=CST)  # one not yet: counts on 3 March
    for _ in range(2):
        await quota.admit_verify(other, entry, {"zjhm": "1"})
    with pytest.raises(ResourceExhausted, match=r"3 Verify calls per day .*, 3 used today"):
        await quota.admit_verify(other, entry, {"zjhm": "1"})


async def test_who_and_what_is_limited(clocks: Clocks, database: Database) -> None:
    guard = guard_on(database, verify_per_minute=1)
    entry = limited_entry()
    public = entry.model_copy(update={"items": (item("zjhm", key=True, sensitivity_level=2),)})
    probe = entry.model_copy(update={"probe": True})
    tester = Identity(PROVINCE, TRUST_DOMAIN, Role.TESTER, "lab-1")
    assert guard.applies(caller(CIVIL_AFFAIRS), entry)
    assert guard.applies(tester, probe)  # probe resources count like any other
    assert not guard.applies(caller(entry.provider_code), entry)  # the provider's own data
    assert not guard.applies(caller(CIVIL_AFFAIRS), public)  # below min_sensitivity_level 3
    with statements_run_by(database) as statements:  # the hot path: no database at all
        for _ in range(5):
            await guard.admit_verify(caller(entry.provider_code), entry, {"zjhm": "1"})
            await guard.admit_verify(caller(CIVIL_AFFAIRS), public, {"zjhm": "1"})
    assert statements == []
    await guard.admit_verify(caller(CIVIL_AFFAIRS), entry, {"zjhm": "1"})  # prunes, once
    with statements_run_by(database) as statements:  # a limited call: one statement decides
        await guard.admit_verify(caller(MARKET_REGULATION), entry, {"zjhm": "1"})
    decisions = [s.split()[:3] for s in statements if "oracle" in s]
    assert decisions == [["INSERT", "INTO", "oracle_budget"]]


async def test_storage_stays_bounded(clocks: Clocks, database: Database) -> None:
    guard = guard_on(database, enumeration_distinct_keys=50)
    entry = limited_entry()
    for n in range(150):  # one budget row per (caller, resource) pair in use today
        await guard.admit_verify(caller(agency_code(n, PROVINCE)), entry, {"zjhm": "1"})
    assert await count_rows(database, "oracle_budget") == 150

    who = caller(CIVIL_AFFAIRS)
    run = [{"zjhm": f"350102199001{i:06d}"} for i in range(1000)]
    assert await guard.admit_compare(who, entry, run) is True  # flagged, and the run forgotten
    assert await count_rows(database, "oracle_key", who) == 0
    # In the quiet window after a flag, runs are trimmed to the newest keys, never flagged again.
    again = [{"zjhm": f"350102199101{i:06d}"} for i in range(1000)]
    assert await guard.admit_compare(who, entry, again) is False
    assert await count_rows(database, "oracle_key", who) == 49
    for i in range(30):
        assert await guard.admit_verify(who, entry, {"zjhm": f"350102199201{i:06d}"}) is False
    assert await count_rows(database, "oracle_key", who) == 49

    # Digests only: nothing in the table is a key's value.
    digests = await database.fetch_all("SELECT digest FROM oracle_key", {})
    assert len(digests) == 150 + 49
    assert all(re.fullmatch("[0-9a-f]{24}", digest) for (digest,) in digests)

    # A day later the rows of yesterday's pairs and expired keys are pruned by the next call.
    clocks.advance(86_400.0)
    await guard.admit_verify(who, entry, {"zjhm": "1"})
    assert await count_rows(database, "oracle_budget") == 1
    assert await count_rows(database, "oracle_key") == 1


async def test_compare_rows_count_toward_the_daily_quota(
    clocks: Clocks, database: Database
) -> None:
    guard = guard_on(database, verify_per_day=100)
    entry, who = limited_entry(), caller(CIVIL_AFFAIRS)
    await guard.admit_compare(who, entry, [{"zjhm": str(i)} for i in range(60)])
    with pytest.raises(ResourceExhausted, match="60 used today"):
        await guard.admit_compare(who, entry, [{"zjhm": str(i)} for i in range(60)])
    await guard.admit_verify(who, entry, {"zjhm": "1"})
    with pytest.raises(ResourceExhausted, match="61 used today"):  # never fits in one day
        await guard.admit_compare(who, entry, [{"zjhm": str(i)} for i in range(101)])


async def test_the_defaults_leave_the_benchmark_and_public_data_alone(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path, "sqlite+aiosqlite:///node.db")
    assert setup.config.oracle == OracleSection()  # the file `govnode init` writes says so too
    db = await Database.open(sqlite_url)
    try:
        guard = OracleGuard(db, setup.config.oracle, None, TRUST_DOMAIN)
        bench_entry = bench_dataset.resource_entry().model_copy(update={"region": PROVINCE})
        assert not guard.applies(caller(bench_dataset.CONSUMER_CODE), bench_entry)
        assert guard.applies(caller(bench_dataset.CONSUMER_CODE), sensitive(1))
    finally:
        await db.close()


def test_a_config_from_before_the_database_budgets_still_loads(tmp_path: Path) -> None:
    """`govnode init` used to write oracle.max_tracked (the in-memory bound); it is ignored."""
    setup = make_province(tmp_path, "sqlite+aiosqlite:///node.db")
    setup = with_oracle(setup, "max_tracked = 100000\n")
    assert setup.config.oracle == OracleSection()


def test_the_refusal_carries_its_metadata() -> None:
    refusal = Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", ((RETRY_AFTER_KEY, "5"),))
    assert refusal.trailing_metadata == (("retry-after-ms", "5"),)
    assert Refusal(grpc.StatusCode.NOT_FOUND, "no").trailing_metadata == ()


def test_a_forwarding_node_passes_the_owners_retry_information_back(tmp_path: Path) -> None:
    owner_said = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((RETRY_AFTER_KEY, "3000"), ("other", "kept at the owner")),
        "Verify rate limit exceeded",
        None,
    )
    forwarder = Forwarder(TlsFiles(tmp_path / "k", tmp_path / "c", tmp_path / "r"))
    refusal = forwarder._refusal(owner_said, "127.0.0.1:1", "350100")
    assert refusal.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.message == "Verify rate limit exceeded"
    assert refusal.trailing_metadata == (
        (RETRY_AFTER_KEY, "3000"),
        ("grpc-retry-pushback-ms", "3000"),
    )


# --- a real node ----------------------------------------------------------------------------

Node = tuple[ProvinceSetup, RunningNode]


def with_oracle(setup: ProvinceSetup, section: str) -> ProvinceSetup:
    """The same node with its [oracle] section (as `govnode init` wrote it) replaced."""
    path = setup.config_path
    text = re.sub(r"\n\[oracle\]\n.*?\n(?=\[)", "\n", path.read_text(encoding="utf-8"), flags=re.S)
    path.write_text(text + "\n[oracle]\n" + section, encoding="utf-8")
    return ProvinceSetup(setup.base, path, load_config(path), setup.bundles)


@contextlib.asynccontextmanager
async def limited_node(tmp_path: Path, db_url: str, section: str) -> AsyncIterator[Node]:
    """A province node with ``section`` as its [oracle] config and two sensitive resources."""
    setup = with_oracle(make_province(tmp_path / "province", db_url), section)
    node = await start(setup)
    try:
        async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
            for n in (1, 2):
                await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                    catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(sensitive(n)))
                )
        yield setup, node
    finally:
        await node.stop(grace=0)


@pytest.fixture
async def rate_limited(tmp_path: Path, db_url: str, clocks: Clocks) -> AsyncIterator[Node]:
    section = "verify_per_minute = 20\nverify_per_day = 0\nenumeration_distinct_keys = 0\n"
    async with limited_node(tmp_path, db_url, section) as node:
        yield node


@pytest.fixture
async def watched(tmp_path: Path, db_url: str, clocks: Clocks) -> AsyncIterator[Node]:
    section = "enumeration_distinct_keys = 5\nenumeration_window_seconds = 600\n"
    async with limited_node(tmp_path, db_url, section) as node:
        yield node


def verify_request(n: int, key: str) -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=sensitive(n).resource_code, key={"zjhm": key}, claimed={"xm": "张三"}
    )


async def verify(
    node: RunningNode, setup: ProvinceSetup, code: str, n: int = 1, key: str = "k"
) -> grpc.aio.AioRpcError | None:
    """One Verify; None when answered, else the error."""
    async with channel(node, setup.agency(code)) as ch:
        try:
            await sharing_pb2_grpc.SharingServiceStub(ch).Verify(verify_request(n, key))
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def test_the_rate_limit_holds_under_50_concurrent_callers(
    rate_limited: Node, clocks: Clocks
) -> None:
    setup, node = rate_limited
    channels = [channel(node, setup.agency(CIVIL_AFFAIRS)) for _ in range(5)]
    try:
        stubs = [sharing_pb2_grpc.SharingServiceStub(ch) for ch in channels]

        async def one(i: int) -> grpc.aio.AioRpcError | None:
            try:
                await stubs[i % 5].Verify(verify_request(1, f"key-{i}"))
            except grpc.aio.AioRpcError as exc:
                return exc
            return None

        outcomes = await asyncio.gather(*(one(i) for i in range(50)))
    finally:
        for ch in channels:
            await ch.close(None)
    refusals = [o for o in outcomes if o is not None]
    assert len(refusals) == 30
    for err in refusals:
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "20 Verify calls per minute" in (err.details() or "")
        assert "retry after 3.0 s" in (err.details() or "")
        assert retry_after_ms(err) == "3000"

    # Its own budget for every (caller, resource) pair.
    assert await verify(node, setup, MARKET_REGULATION) is None
    assert await verify(node, setup, CIVIL_AFFAIRS, n=2) is None
    refused = await verify(node, setup, CIVIL_AFFAIRS)
    assert refused is not None and refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    clocks.advance(3.0)
    assert await verify(node, setup, CIVIL_AFFAIRS) is None

    # Every refusal is in the audit log, and the node is healthy.
    records = await AuditLog(node.db).query(resource_code=sensitive(1).resource_code, limit=1000)
    outcomes_logged = [r.outcome for r in records if r.method.endswith("/Verify")]
    assert outcomes_logged.count("RESOURCE_EXHAUSTED") == 31
    assert outcomes_logged.count("OK") == 22
    assert (await AuditLog(node.db).verify_chain()).ok
    async with channel(node, setup.agency(CIVIL_AFFAIRS)) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_enumeration_is_flagged_once_per_window(watched: Node, clocks: Clocks) -> None:
    setup, node = watched
    code = sensitive(1).resource_code
    provider = f"spiffe://{PROVINCE}.{TRUST_DOMAIN}/agency/{PUBLIC_SECURITY}"
    authority = f"spiffe://{PROVINCE}.{TRUST_DOMAIN}/authority"
    for _ in range(10):  # one key asked again and again is no enumeration
        assert await verify(node, setup, CIVIL_AFFAIRS, key="same") is None
    for i in range(4 + 5):  # "same" + 4 new keys: flagged; 5 more in the window: not again
        assert await verify(node, setup, CIVIL_AFFAIRS, key=f"k{i}") is None
    clocks.advance(601.0)
    for i in range(5):  # a new window, a new run: flagged again
        assert await verify(node, setup, CIVIL_AFFAIRS, key=f"m{i}") is None

    records = await AuditLog(node.db).query(resource_code=code, limit=1000)
    verifies = [r for r in records if r.method.endswith("/Verify")]
    assert len(verifies) == 24
    flagged = [i for i, r in enumerate(verifies) if r.detail.get("enumeration_suspected") == 1]
    assert flagged == [13, 23]
    assert all(verifies[i].caller.endswith(CIVIL_AFFAIRS) for i in flagged)

    notifications = Notifications(node.db)
    for recipient in (provider, authority):
        notes = await notifications.list_for(
            recipient, kinds=[NotificationKind.ENUMERATION_SUSPECTED]
        )
        assert len(notes) == 2
        assert all(n.resource_code == code for n in notes)
        assert CIVIL_AFFAIRS in notes[0].message and "5 different keys" in notes[0].message
        assert verifies[13].request_id in notes[0].message
    assert await notifications.list_for(f"spiffe://{PROVINCE}.{TRUST_DOMAIN}/agency/x") == []


async def test_a_restart_forgets_no_budget(tmp_path: Path, db_url: str, clocks: Clocks) -> None:
    section = "verify_per_minute = 0\nverify_per_day = 6\nenumeration_distinct_keys = 5\n"
    async with limited_node(tmp_path, db_url, section) as (setup, node):
        for _ in range(6):
            assert await verify(node, setup, CIVIL_AFFAIRS, key="same") is None
        for i in range(3):  # three different keys of the other resource: no run yet
            assert await verify(node, setup, CIVIL_AFFAIRS, n=2, key=f"k{i}") is None
        assert await verify(node, setup, CIVIL_AFFAIRS) is not None
    # Stopped; started again on the same database, as after a crash or a deployment.
    node = await start(setup)
    try:
        refused = await verify(node, setup, CIVIL_AFFAIRS)
        assert refused is not None and refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "6 Verify calls per day" in (refused.details() or "")
        assert "6 used today" in (refused.details() or "")
        for i in (3, 4):  # the run goes on where it was: the fifth key is flagged
            assert await verify(node, setup, CIVIL_AFFAIRS, n=2, key=f"k{i}") is None
        records = await AuditLog(node.db).query(resource_code=sensitive(2).resource_code, limit=100)
        verifies = [r for r in records if r.method.endswith("/Verify")]
        assert [r.detail.get("enumeration_suspected") for r in verifies] == [None] * 4 + [1]

        clocks.wall = dt.datetime(2026, 3, 3, 0, 0, 1, tzinfo=CST)  # a new China day
        assert await verify(node, setup, CIVIL_AFFAIRS) is None
    finally:
        await node.stop(grace=0)


async def test_two_nodes_on_one_database_share_every_budget(
    tmp_path: Path, db_url: str, clocks: Clocks
) -> None:
    """Two processes of one node behind a load balancer: both serve on the same database (each
    with its own engine, connections and guard), and a caller spread over both gets one budget
    and one enumeration flag."""
    section = (
        "verify_per_minute = 20\nverify_per_day = 0\n"
        "enumeration_distinct_keys = 5\nenumeration_window_seconds = 600\n"
    )
    async with limited_node(tmp_path, db_url, section) as (setup, first):
        listen = f"127.0.0.1:{free_port()}"
        second_config = setup.config.model_copy(
            update={"node": setup.config.node.model_copy(update={"listen": listen})}
        )
        second = await start_node(second_config)
        try:
            nodes = (first, second)
            channels = [channel(nodes[i % 2], setup.agency(CIVIL_AFFAIRS)) for i in range(4)]
            try:
                stubs = [sharing_pb2_grpc.SharingServiceStub(ch) for ch in channels]

                async def one(i: int) -> grpc.aio.AioRpcError | None:
                    try:
                        await stubs[i % 4].Verify(verify_request(1, f"key-{i}"))
                    except grpc.aio.AioRpcError as exc:
                        return exc
                    return None

                outcomes = await asyncio.gather(*(one(i) for i in range(60)))
            finally:
                for ch in channels:
                    await ch.close(None)
            refusals = [o for o in outcomes if o is not None]
            assert len(refusals) == 40
            assert all(o.code() is grpc.StatusCode.RESOURCE_EXHAUSTED for o in refusals)
            assert all("20 Verify calls per minute" in (o.details() or "") for o in refusals)

            clocks.advance(3.0)  # one token back, for whichever node is asked first
            assert await verify(second, setup, CIVIL_AFFAIRS, key="late") is None
            assert await verify(first, setup, CIVIL_AFFAIRS, key="later") is not None
        finally:
            await second.stop(grace=0)

        # 21 different keys answered by two nodes within one window: flagged once, not per node.
        code = sensitive(1).resource_code
        records = await AuditLog(first.db).query(resource_code=code, limit=200)
        answered = [r for r in records if r.method.endswith("/Verify") and r.outcome == "OK"]
        assert len(answered) == 21
        assert [r.detail.get("enumeration_suspected") for r in answered].count(1) == 1
        notes = await Notifications(first.db).list_for(
            f"spiffe://{PROVINCE}.{TRUST_DOMAIN}/authority",
            kinds=[NotificationKind.ENUMERATION_SUSPECTED],
        )
        assert len(notes) == 1
