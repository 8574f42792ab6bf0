"""A node killed (SIGKILL) while it signs checkpoints every 0.1 s under load: after each restart
its checkpoints table holds only whole checkpoints, each signed by the node and equal to its
tree at that size, each extending the one before; it goes on signing, and `audit verify`
finds the log whole."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from govnode.v1 import catalog_pb2, catalog_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.audit import AuditLog, log_origin
from node.storage import Database
from node.tlog import EcdsaVerifier, open_note, parse_checkpoint, verify_consistency
from tests.support.cli import govnode
from tests.support.nodes import PUBLIC_SECURITY, make_province, serve_process

pytestmark = pytest.mark.slow

ROUNDS = 2


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


async def calls_until_killed(
    address: str, files: TlsFiles, proc: subprocess.Popen[bytes] | None, seconds: float
) -> int:
    """Audited calls for ``seconds`` (at most 2,000 of them), then SIGKILL ``proc``."""
    made = 0
    deadline = time.monotonic() + seconds
    async with secure_channel(address, files, timeout=2) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        while made < 2000 and time.monotonic() < deadline:
            await asyncio.gather(
                *(stub.GetCatalogDigest(catalog_pb2.GetCatalogDigestRequest()) for _ in range(5))
            )
            made += 5
    if proc is not None:
        proc.send_signal(signal.SIGKILL)
    return made


async def test_a_node_killed_while_checkpointing_keeps_only_whole_consistent_checkpoints(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    config_text = setup.config_path.read_text(encoding="utf-8")
    setup.config_path.write_text(
        config_text.replace("checkpoint_seconds = 60.0", "checkpoint_seconds = 0.1").replace(
            "checkpoint_records = 10000", "checkpoint_records = 5"
        ),
        encoding="utf-8",
    )
    files = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    address = setup.config.node.listen
    rng = random.Random(13)
    for _ in range(ROUNDS):
        proc = serve_process(setup.config_path, stderr=subprocess.DEVNULL)
        try:
            await wait_serving(address, files)
            await calls_until_killed(address, files, proc, rng.uniform(0.5, 1.5))
            assert await asyncio.to_thread(proc.wait, 20) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    proc = serve_process(setup.config_path, stderr=subprocess.DEVNULL)
    try:
        await wait_serving(address, files)
        await calls_until_killed(address, files, None, 1.0)
        await asyncio.sleep(0.5)  # one more checkpoint after the last crash
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)

    cert = x509.load_pem_x509_certificate(setup.config.path(setup.config.tls.cert).read_bytes())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    origin = log_origin("350000.fujian.gov.cn")
    db = await Database.open(setup.config.database_url)
    try:
        async with db.engine.connect() as connection:
            rows = list(
                await connection.execute(
                    text("SELECT size, root, note FROM audit_checkpoint ORDER BY size")
                )
            )
        assert len(rows) >= ROUNDS + 1, "the node went on signing after every restart"
        log = AuditLog(db)
        previous: tuple[int, bytes] | None = None
        for size, root, note in rows:
            checkpoint = parse_checkpoint(
                open_note(note.encode(), [EcdsaVerifier(origin, public)])[0].text
            )
            assert (checkpoint.size, checkpoint.root.hex()) == (size, root)
            assert (await log.tree_head(size)).root == checkpoint.root
            if previous is not None:
                proof = await log.consistency_proof(previous[0], size)
                verify_consistency(previous[0], size, proof, previous[1], checkpoint.root)
            previous = (size, checkpoint.root)
    finally:
        await db.close()
    verified = await asyncio.to_thread(
        govnode, "audit", "verify", "--config", setup.config_path, "--offline"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("audit chain intact: ")
