"""Faults of the node's own database reach callers as UNAVAILABLE, never INTERNAL or UNKNOWN,
with a message they can act on (try again later) and the driver's text only in the node log;
the node recovers by itself, and its gRPC health says NOT_SERVING while it cannot write.

PostgreSQL faults need a server (skipped without GOVNODE_TEST_POSTGRES_URL): connections are
cut with ``pg_terminate_backend`` and the database is made unreachable with ``ALTER DATABASE
... ALLOW_CONNECTIONS false`` (the server itself keeps running). The full disk is a SQLite node
run as its own process under a file-size limit (RLIMIT_FSIZE, set and lifted with prlimit), so
its writes fail as on a full disk: no root, no real disk filled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import resource
import signal
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import grpc.aio
import pytest
import structlog
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, make_url

from bench.databases import fresh_postgres_database, postgres_url
from gateway.channel import secure_channel
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.codes import make_credit_code
from node.errors import StorageUnavailable
from node.servicers.convert import entry_to_proto
from node.storage import RECOVERY_PROBE_BYTES, Database
from tests.support.cli import govnode
from tests.support.databases import POSTGRES_SKIP
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    ProvinceSetup,
    channel,
    make_province,
    serve_process,
    start,
)
from tests.support.sharing import COMPANIES, NAMES

#: The node probes its database this often in these tests (storage.health_probe_seconds).
PROBE_ENV = "GOVNODE_STORAGE__HEALTH_PROBE_SECONDS"
PROBE_S = "0.3"
#: Health is polled every 0.1 s for at most this long before a test gives up.
HEALTH_WAIT_S = 15.0
#: What a caller is told when the node's database is at fault (no driver text).
UNAVAILABLE_TEXT = "database is unavailable"
#: Driver text that must never reach a caller (asyncpg, PostgreSQL, SQLite).
DRIVER_TEXT = (
    "terminating connection",
    "asyncpg",
    "sqlalchemy",
    "another operation",
    "connection was closed",
    "not currently accepting",
    "disk is full",
    "disk I/O error",
    "Background on this error",
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def company(n: int, filler: str = "") -> dict[str, str]:
    return {
        "tyshxydm": make_credit_code(f"9135{n:013d}"),
        "dwmc": f"测试公司{n}{filler}",
        "fddbr": "王五",
        "djzt": "存续",
    }


def batch(batch_id: str, rows: Sequence[dict[str, str]]) -> sharing_pb2.SubmitBatch:
    return sharing_pb2.SubmitBatch(
        resource_code=COMPANIES.resource_code,
        batch_id=batch_id,
        records=[common_pb2.Record(values=r) for r in rows],
    )


async def submit(
    address: str, files: TlsFiles, batches: Sequence[sharing_pb2.SubmitBatch], request_id: str = ""
) -> list[sharing_pb2.SubmitAck]:
    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for b in batches:
            yield b

    metadata = ((REQUEST_ID_KEY, request_id),) if request_id else None
    async with secure_channel(address, files, timeout=20, streaming_timeout=30) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        return [ack async for ack in stub.Submit(requests(), metadata=metadata)]


async def register_companies(address: str, files: TlsFiles) -> None:
    async with secure_channel(address, files) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(COMPANIES))
        )


async def health_of(address: str, files: TlsFiles) -> int:
    async with secure_channel(address, files, timeout=5) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def wait_health(address: str, files: TlsFiles, wanted: int) -> None:
    """Poll the node's health (bounded) until it reports ``wanted``."""
    seen: list[int] = []
    for _ in range(int(HEALTH_WAIT_S / 0.1)):
        with contextlib.suppress(grpc.aio.AioRpcError):
            seen.append(await health_of(address, files))
            if seen[-1] == wanted:
                return
        await asyncio.sleep(0.1)
    names = health_pb2.HealthCheckResponse.ServingStatus.Name
    pytest.fail(f"health never became {names(wanted)} (last seen: {[names(s) for s in seen[-3:]]})")


def assert_caller_safe(err: grpc.aio.AioRpcError, saying: str = "try again later") -> None:
    """UNAVAILABLE with a message a caller can act on, and nothing of the driver's."""
    details = err.details() or ""
    assert err.code() is grpc.StatusCode.UNAVAILABLE, (err.code(), details)
    assert "try again later" in details and saying in details, details
    for text in DRIVER_TEXT:
        assert text.lower() not in details.lower(), details


# --- PostgreSQL: connections cut, the database unreachable ---------------------------------


@contextlib.asynccontextmanager
async def postgres_admin() -> AsyncIterator[asyncpg.Connection]:
    base = postgres_url()
    assert base is not None
    dsn = make_url(base).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        yield admin
    finally:
        await admin.close()


async def cut_connections(database: str) -> int:
    """Terminate every server process serving ``database``: what a PostgreSQL restart, a
    failover or a network cut does to the node's pooled connections."""
    async with postgres_admin() as admin:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    return int(killed)


async def refuse_connections(database: str, refuse: bool) -> None:
    """Make ``database`` refuse (or accept again) new connections, and cut the open ones."""
    async with postgres_admin() as admin:
        allow = "false" if refuse else "true"
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}')
    if refuse:
        await cut_connections(database)


PgProvince = tuple[ProvinceSetup, RunningNode, str]


@pytest.fixture
async def pg_province(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PgProvince]:
    """A province node on a PostgreSQL database of its own, probing it every PROBE_S seconds,
    with 法人单位基础信息 (unconditionally shared) registered and one company in it."""
    base = postgres_url()
    if base is None:
        pytest.skip(POSTGRES_SKIP)
    monkeypatch.setenv(PROBE_ENV, PROBE_S)
    async with fresh_postgres_database(base) as url:
        database = str(make_url(url).database)
        setup = make_province(tmp_path / "province", url)
        node = await start(setup)
        try:
            provider = setup.agency(MARKET_REGULATION, NAMES[MARKET_REGULATION])
            await register_companies(node.address, provider)
            acks = await submit(node.address, provider, [batch("first", [company(0)])])
            assert acks[0].accepted == 1
            yield setup, node, database
        finally:
            with contextlib.suppress(Exception):
                await refuse_connections(database, False)
            await node.stop(grace=0)


async def verify(node: RunningNode, files: TlsFiles, request_id: str = "") -> None:
    metadata = ((REQUEST_ID_KEY, request_id),) if request_id else None
    async with channel(node, files, timeout=20) as ch:
        reply = await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
            sharing_pb2.VerifyRequest(
                resource_code=COMPANIES.resource_code,
                key={"tyshxydm": make_credit_code(f"9135{0:013d}")},
                claimed={"djzt": "存续"},
            ),
            metadata=metadata,
        )
    assert reply.found


async def test_cut_connections_under_load_answer_ok_or_unavailable_and_the_next_calls_work(
    pg_province: PgProvince,
) -> None:
    setup, node, database = pg_province
    consumer = setup.agency(CIVIL_AFFAIRS, NAMES[CIVIL_AFFAIRS])
    provider = setup.agency(MARKET_REGULATION, NAMES[MARKET_REGULATION])
    outcomes: collections.Counter[str] = collections.Counter()
    refusals: list[grpc.aio.AioRpcError] = []
    cuts_done = asyncio.Event()

    async def calls(kind: str, worker: int) -> None:
        # Bounded in count (and by the cuts: workers stop once the last cut is behind them).
        for n in range(400):
            if cuts_done.is_set():
                return
            try:
                if kind == "verify":
                    await verify(node, consumer)
                elif kind == "read":
                    async with channel(node, consumer, timeout=20) as ch:
                        await catalog_pb2_grpc.CatalogServiceStub(ch).GetCatalogDigest(
                            catalog_pb2.GetCatalogDigestRequest()
                        )
                else:
                    rows = [company(1000 * worker + n + 1)]
                    await submit(node.address, provider, [batch(f"w{worker}-{n}", rows)])
                outcomes["OK"] += 1
            except grpc.aio.AioRpcError as err:
                outcomes[err.code().name] += 1
                refusals.append(err)

    async def cutter() -> None:
        killed = 0
        for _ in range(6):
            await asyncio.sleep(0.3)
            killed += await cut_connections(database)
        cuts_done.set()
        assert killed >= 6, "the node had connections to cut"

    kinds = ["verify"] * 6 + ["read"] * 3 + ["submit"] * 3
    await asyncio.wait_for(
        asyncio.gather(cutter(), *(calls(k, i) for i, k in enumerate(kinds))), timeout=120
    )
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, (outcomes, [e.details() for e in refusals])
    for err in refusals:
        assert_caller_safe(err)
    assert outcomes["OK"] > 0

    # An idle node whose connections were all cut: its very next calls succeed, each kind.
    await cut_connections(database)
    await verify(node, consumer)
    await submit(node.address, provider, [batch("after-the-cut", [company(999_999)])])
    async with channel(node, consumer) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).GetCatalogDigest(
            catalog_pb2.GetCatalogDigestRequest()
        )
    # A call whose retry met a cut too turned health NOT_SERVING until the next probe.
    await wait_health(node.address, consumer, SERVING)


async def test_an_unreachable_database_is_unavailable_and_not_serving_until_it_is_back(
    pg_province: PgProvince,
) -> None:
    setup, node, database = pg_province
    consumer = setup.agency(CIVIL_AFFAIRS, NAMES[CIVIL_AFFAIRS])
    assert await health_of(node.address, consumer) == SERVING
    with structlog.testing.capture_logs() as logs:
        await refuse_connections(database, True)
        # Every call needs the database (the caller's certificate is checked against the
        # revocation list in it), so the first one already fails, whatever it asks.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await verify(node, consumer, request_id="dbfaults-unreachable-1")
        assert_caller_safe(err.value, UNAVAILABLE_TEXT)
        assert "dbfaults-unreachable-1" in (err.value.details() or "")
        await wait_health(node.address, consumer, NOT_SERVING)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await verify(node, consumer, request_id="dbfaults-unreachable-2")
        assert_caller_safe(err.value)
    # The operator finds the driver's own words in the node log, under the call's request id.
    about = [e for e in logs if e.get("request_id") == "dbfaults-unreachable-1"]
    assert any("not currently accepting connections" in json.dumps(e) for e in about), logs

    await refuse_connections(database, False)
    await wait_health(node.address, consumer, SERVING)
    await verify(node, consumer)


# --- SQLite: a full disk --------------------------------------------------------------------

#: The largest file the node may write while its "disk is full" (RLIMIT_FSIZE): room for the
#: small writes after a checkpoint (audit records, probes), none for a large Submit batch.
FULL_DISK_BYTES = 512 * 1024


class ServedNode:
    """``govnode serve`` as a process, its JSON log lines collected from a pipe (a pipe, not a
    file: the file-size limit applies to every file the node writes)."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = serve_process(config, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append(raw.decode("utf-8", "replace"))

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def checkpoint(db_path: Path) -> None:
    """Move the WAL into the database file and truncate it (as SQLite does by itself from time
    to time), so the next writes start at the beginning of an empty WAL."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        for _ in range(100):
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return
            threading.Event().wait(0.05)
    pytest.fail("could not checkpoint the node's WAL")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs Linux prlimit")
async def test_a_full_disk_is_unavailable_and_not_serving_until_space_returns(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    provider = setup.agency(MARKET_REGULATION, NAMES[MARKET_REGULATION])
    address = setup.config.node.listen
    node = ServedNode(setup.config_path, {PROBE_ENV: PROBE_S})
    try:
        await wait_health(address, provider, SERVING)
        await register_companies(address, provider)
        assert (await submit(address, provider, [batch("small", [company(0)])]))[0].accepted == 1

        # About 3 MiB of records to write: more than the disk has room for.
        big = batch("big", [company(n, "有限责任公司" * 40) for n in range(1, 3001)])
        checkpoint(Path(setup.config.database_url.removeprefix("sqlite+aiosqlite:///")))
        _, hard = resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, hard))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await submit(address, provider, [big], request_id="dbfaults-full-disk")
            assert_caller_safe(err.value, UNAVAILABLE_TEXT)
            await wait_health(address, provider, NOT_SERVING)
            # It stays so: the node probes with a write as large as a batch, which fails too.
            await asyncio.sleep(float(PROBE_S) * 4)
            assert await health_of(address, provider) == NOT_SERVING
            # What the operator's check and Docker's HEALTHCHECK run.
            checked = govnode("health", "--config", setup.config_path)
            assert checked.returncode == 1 and "NOT_SERVING" in checked.stdout, checked
        finally:
            resource.prlimit(node.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
        # The driver's words, in the log under the call's request id. A write past the file-size
        # limit fails with EFBIG, which SQLite reports as a disk I/O error; on a real full disk
        # (ENOSPC) it says "database or disk is full" (test_sqlite_full_reports_disk_full).
        logged = [e for e in node.events() if e.get("request_id") == "dbfaults-full-disk"]
        assert any("disk I/O error" in json.dumps(e) for e in logged), node.lines[-20:]

        await wait_health(address, provider, SERVING)
        acks = await submit(address, provider, [big])
        assert (acks[0].accepted, acks[0].duplicate) == (3000, False)
    finally:
        node.stop()
    assert node.proc.returncode == 0, node.lines[-20:]


async def test_sqlite_full_reports_disk_full_and_only_a_probe_brings_it_back(
    sqlite_url: str,
) -> None:
    """SQLite's own full-disk answer ("database or disk is full", SQLITE_FULL), made with
    ``PRAGMA max_page_count`` on the node's writer connection: a fault, not a bug."""
    db = await Database.open(sqlite_url)
    try:
        await db.migrate()

        def cap(pages: int | None) -> Callable[[Connection], None]:
            def txn(connection: Connection) -> None:
                if pages is None:
                    connection.exec_driver_sql("PRAGMA max_page_count = 1073741823")
                else:
                    size = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
                    connection.exec_driver_sql(f"PRAGMA max_page_count = {int(size) + pages}")

            return txn

        await db.write_sync("test.cap", cap(8))
        with pytest.raises(StorageUnavailable) as err:
            await db.probe(RECOVERY_PROBE_BYTES)
        assert err.value.kind == "disk full"
        assert "database or disk is full" in err.value.cause
        assert "disk" not in err.value.message  # what a caller reads: no driver text
        assert db.health.fault is not None and db.health.fault.kind == "disk full"

        await db.write_sync("test.small", cap(0))  # a small write still commits...
        assert db.health.fault is not None  # ...and proves nothing: only a probe does
        await db.write_sync("test.uncap", cap(None))
        await db.probe(RECOVERY_PROBE_BYTES)
        assert db.health.available
    finally:
        await db.close()
