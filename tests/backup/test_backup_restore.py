"""A backup made while the node serves Submit and Verify restores, as a node of its own, every
record acknowledged before the backup began, with an intact audit chain; on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.codes import make_credit_code
from node.demo import EXAMPLES_DIR, load_example_catalog
from node.servicers.convert import entry_to_proto
from tests.support.backup import backup_cli, passphrase_file
from tests.support.cli import govnode
from tests.support.databases import NewDatabaseUrl
from tests.support.nodes import MARKET_REGULATION, make_province, serve_process

pytestmark = pytest.mark.slow

COMPANIES = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml").resources[1]
PER_BATCH = 50
MAX_BATCHES = 150  # the load's bound in count (7,500 records: one Compare call checks them all)
MAX_LOAD_S = 30.0  # and in time, whatever happens to the backup
BEFORE_BACKUP = 3  # batches acknowledged before the backup starts


def record(batch: int, i: int) -> dict[str, str]:
    return {
        "tyshxydm": make_credit_code(f"9135000000{batch:03d}{i:04d}"),
        "dwmc": f"单位{batch}-{i}",
        "djzt": "存续",
    }


class Load:
    """Submit batches on one stream and Verify acknowledged records, until stopped or bounded."""

    def __init__(self, address: str, files: TlsFiles) -> None:
        self.address, self.files = address, files
        self.acked: list[int] = []  # batch numbers, in ack order
        self.verified = 0
        self.stopped = asyncio.Event()
        self.enough = asyncio.Event()
        self.ack = asyncio.Event()
        self.began = time.monotonic()

    def done(self) -> bool:
        return self.stopped.is_set() or time.monotonic() - self.began > MAX_LOAD_S

    async def submit(self) -> None:
        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            for n in range(MAX_BATCHES):
                if self.done():
                    return
                self.ack.clear()
                yield sharing_pb2.SubmitBatch(
                    resource_code=COMPANIES.resource_code,
                    batch_id=f"batch-{n:03d}",
                    records=[common_pb2.Record(values=record(n, i)) for i in range(PER_BATCH)],
                )
                # One batch in flight at a time: the next goes once this one is acknowledged.
                await asyncio.wait_for(self.ack.wait(), timeout=10)

        async with secure_channel(self.address, self.files, streaming_timeout=60) as ch:
            async for ack in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches()):
                assert ack.accepted == PER_BATCH, ack
                self.acked.append(int(ack.batch_id.removeprefix("batch-")))
                self.ack.set()
                if len(self.acked) >= BEFORE_BACKUP:
                    self.enough.set()

    async def verify(self) -> None:
        async with secure_channel(self.address, self.files) as ch:
            stub = sharing_pb2_grpc.SharingServiceStub(ch)
            while not self.done():
                if not self.acked:
                    await asyncio.sleep(0.01)
                    continue
                values = record(self.acked[-1], self.verified % PER_BATCH)
                reply = await stub.Verify(
                    sharing_pb2.VerifyRequest(
                        resource_code=COMPANIES.resource_code,
                        key={"tyshxydm": values["tyshxydm"]},
                        claimed={"dwmc": values["dwmc"]},
                    )
                )
                assert reply.all_match, reply
                self.verified += 1


async def wait_serving(address: str, files: TlsFiles, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(150):
        assert proc.poll() is None, "govnode serve exited"
        with contextlib.suppress(grpc.aio.AioRpcError):
            async with secure_channel(address, files, timeout=1) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        await asyncio.sleep(0.2)
    raise AssertionError("node did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


async def compare(address: str, files: TlsFiles, batches: list[int]) -> list[str]:
    """The refs of the records of ``batches`` that the node does not hold as submitted."""
    records = [
        common_pb2.Record(values=values)
        for n in batches
        for values in (record(n, i) for i in range(PER_BATCH))
    ]
    request = sharing_pb2.CompareRequest(
        resource_code=COMPANIES.resource_code,
        records=[
            sharing_pb2.CompareRecord(
                ref=r.values["tyshxydm"],
                key={"tyshxydm": r.values["tyshxydm"]},
                claimed={"dwmc": r.values["dwmc"], "djzt": r.values["djzt"]},
            )
            for r in records
        ],
    )
    async with secure_channel(address, files, timeout=30) as ch:
        results = [r async for r in sharing_pb2_grpc.SharingServiceStub(ch).Compare(request)]
    assert len(results) == len(records)
    return [r.ref for r in results if not r.all_match]


async def test_a_backup_made_under_load_restores_every_acknowledged_record(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    setup = make_province(tmp_path / "province", await db_urls())
    files = setup.agency(MARKET_REGULATION, "福建省市场监督管理局")
    address = setup.config.node.listen
    secret = passphrase_file(tmp_path)
    out = tmp_path / "backup"
    proc = serve_process(setup.config_path, stderr=subprocess.DEVNULL)
    try:
        await wait_serving(address, files, proc)
        async with secure_channel(address, files) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(COMPANIES))
            )
        load = Load(address, files)
        running = asyncio.gather(load.submit(), load.verify())
        await asyncio.wait_for(load.enough.wait(), timeout=20)
        acknowledged_before = list(load.acked)
        created = await asyncio.to_thread(
            backup_cli,
            "create", "--config", setup.config_path, "--out", out, "--with-keys",
            "--passphrase-file", secret,
        )  # fmt: skip
        load.stopped.set()
        await running
        assert created.returncode == 0, created.stderr
        assert "copying the database" in created.stderr or "pg_dump" in created.stderr
        assert load.verified > 0
    finally:
        stop(proc)

    root = setup.config.path(setup.config.tls.root)
    verified = await asyncio.to_thread(backup_cli, "verify", out, "--root", root)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "backup verified" in verified.stdout

    restored_dir = tmp_path / "restored"
    target = (
        ()
        if setup.config.database_url.startswith("sqlite")
        else ("--database-url", await db_urls())
    )
    restored = await asyncio.to_thread(
        backup_cli, "restore", out, "--dir", restored_dir, "--passphrase-file", secret, *target
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    config = restored_dir / "govnode.toml"

    proc = serve_process(config, stderr=subprocess.DEVNULL)
    try:
        await wait_serving(address, files, proc)
        assert await compare(address, files, acknowledged_before) == []
        async with secure_channel(address, files) as ch:
            status = await sharing_pb2_grpc.SharingServiceStub(ch).GetAggregationStatus(
                sharing_pb2.GetAggregationStatusRequest()
            )
        [aggregated] = status.statuses
        assert aggregated.record_count >= len(acknowledged_before) * PER_BATCH
    finally:
        stop(proc)
    chain = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    assert "audit chain intact" in chain.stdout
