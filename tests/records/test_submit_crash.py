"""Killing the node in the middle of a Submit stream loses no acknowledged record and applies
no batch twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
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
from tests.support.nodes import MARKET_REGULATION, make_province, serve_process

pytestmark = pytest.mark.slow

COMPANIES = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml").resources[1]
BATCHES, PER_BATCH = 40, 100


def spawn(config: Path) -> subprocess.Popen[bytes]:
    return serve_process(config, stderr=subprocess.DEVNULL)


async def wait_serving(address: str, files: TlsFiles) -> None:
    for _ in range(150):
        try:
            async with secure_channel(address, files, timeout=1) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("node did not come up")


def make_batch(n: int) -> sharing_pb2.SubmitBatch:
    return sharing_pb2.SubmitBatch(
        resource_code=COMPANIES.resource_code,
        batch_id=f"batch-{n:03d}",
        records=[
            common_pb2.Record(
                values={
                    "tyshxydm": make_credit_code(f"9135000000{n:03d}{i:04d}"),
                    "dwmc": f"单位{n}-{i}",
                    "djzt": "存续",
                }
            )
            for i in range(PER_BATCH)
        ],
    )


async def stream(
    address: str, files: TlsFiles, kill_after: int | None, proc: subprocess.Popen[bytes]
) -> dict[str, bool]:
    """Send every batch; return the acknowledged ones (batch id -> duplicate)."""
    acked: dict[str, bool] = {}

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for n in range(BATCHES):
            yield make_batch(n)

    async with secure_channel(address, files, streaming_timeout=60) as ch:
        try:
            async for ack in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches()):
                acked[ack.batch_id] = ack.duplicate
                if kill_after is not None and len(acked) == kill_after:
                    proc.send_signal(signal.SIGKILL)
        except grpc.aio.AioRpcError as exc:
            assert kill_after is not None, exc
    return acked


async def test_a_killed_node_keeps_every_acknowledged_batch_and_applies_none_twice(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    files = setup.agency(MARKET_REGULATION, "福建省市场监督管理局")
    address = setup.config.node.listen
    proc = spawn(setup.config_path)
    try:
        await wait_serving(address, files)
        async with secure_channel(address, files) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(COMPANIES))
            )
        before_crash = await stream(address, files, kill_after=5, proc=proc)
        assert proc.wait(timeout=20) == -signal.SIGKILL
        assert 5 <= len(before_crash) < BATCHES

        proc = spawn(setup.config_path)
        await wait_serving(address, files)
        after = await stream(address, files, kill_after=None, proc=proc)
        assert set(after) == {f"batch-{n:03d}" for n in range(BATCHES)}
        # Every batch acknowledged before the crash was kept: the resend says it is a duplicate.
        assert all(after[batch_id] for batch_id in before_crash)
        # Nothing was applied twice: one record version per record, and all of them there.
        async with secure_channel(address, files) as ch:
            reply = await sharing_pb2_grpc.SharingServiceStub(ch).GetAggregationStatus(
                sharing_pb2.GetAggregationStatusRequest()
            )
        [status] = reply.statuses
        assert status.record_count == BATCHES * PER_BATCH
        assert status.data_version == BATCHES * PER_BATCH
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
