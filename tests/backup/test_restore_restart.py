"""A city restored from a backup older than what its province cosigned (第三十九条): it signs no
checkpoint until it has asked its witness, then goes on under a new log origin whose first
record names the old log's witnessed checkpoint and the gap. It never signs another history
for the sizes the province cosigned, and the province will not cosign the old origin again."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest
from govnode.v1 import witness_pb2, witness_pb2_grpc

from node.app import node_tls_files
from node.audit import (
    RESTART_ACTION,
    AuditLog,
    StoredCheckpoint,
    epochs,
    log_origin,
    log_signer,
    witness_evidence,
)
from node.pki import load_private_key
from node.tlog import AddCheckpoint, Checkpoint, format_add_checkpoint, parse_note, sign_note
from tests.support.backup import backup_cli
from tests.support.cli import govnode
from tests.support.databases import sqlite_urls
from tests.support.nodes import Member, channel, federation

WAIT_S = 30.0


async def _cosigned(member: Member, size: int) -> StoredCheckpoint:
    """The newest checkpoint of ``member``'s log its province cosigned, once it covers ``size``
    records."""
    checkpoints = member.running.checkpoints
    assert checkpoints is not None
    for _ in range(int(WAIT_S / 0.1)):
        cosigned = await checkpoints.newest_cosigned()
        if cosigned is not None and cosigned.size >= size:
            return cosigned
        await asyncio.sleep(0.1)
    raise AssertionError(f"no cosigned checkpoint of {size} records within {WAIT_S} s")


async def test_a_city_restored_behind_its_witness_goes_on_under_a_new_origin(
    tmp_path: Path,
) -> None:
    async with federation(tmp_path / "fed", sqlite_urls(tmp_path), checkpoint_seconds=0.3) as fed:
        fuzhou = fed.fuzhou
        host = fuzhou.running.identity.host
        for _ in range(10):
            await fuzhou.digest()
        await _cosigned(fuzhou, 10)
        backup = tmp_path / "backup"
        config = fuzhou.setup.config_path
        made = await asyncio.to_thread(backup_cli, "create", "--config", config, "--out", backup)
        assert made.returncode == 0, made.stderr
        for _ in range(15):
            await fuzhou.digest()
        head, _ = await fuzhou.running.audit.head()
        witnessed = await _cosigned(fuzhou, head)
        await fuzhou.stop()

        # The operator restores the backup in 福州's place.
        restored = await asyncio.to_thread(
            backup_cli, "restore", backup, "--dir", tmp_path / "restored"
        )
        assert restored.returncode == 0, restored.stdout + restored.stderr
        database = Path(fuzhou.setup.config.database_url.removeprefix("sqlite+aiosqlite:///"))
        for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        shutil.copyfile(tmp_path / "restored" / "node.db", database)
        await fuzhou.start()
        node = fuzhou.running
        assert node.checkpoints is not None

        # It asks the province, learns that records #n+1.. were cosigned and are not here,
        # and goes on as <host>/audit/1 with a record naming the gap.
        for _ in range(int(WAIT_S / 0.1)):
            restarts = await epochs(node.db)
            if restarts:
                break
            await asyncio.sleep(0.1)
        [restart] = restarts
        assert restart.origin == log_origin(host, 1)
        assert restart.previous_origin == log_origin(host)
        assert restart.previous_size == witnessed.size
        assert restart.previous_root == witnessed.root
        assert restart.restored_size < witnessed.size
        [record] = await AuditLog(node.db).query(after_sequence=restart.first_sequence - 1, limit=1)
        assert record.method == RESTART_ACTION
        assert record.detail["previous_size"] == witnessed.size
        assert f"lacks records #{restart.restored_size + 1} to #{witnessed.size}" in record.message

        # The province cosigns the new origin and keeps the fact as evidence.
        for _ in range(10):
            await fuzhou.digest()
        cosigned = await _cosigned(fuzhou, restart.first_sequence)
        assert cosigned.checkpoint.origin == log_origin(host, 1)
        kinds = [(e.origin, e.kind) for e in await witness_evidence(fed.province.running.db)]
        assert (log_origin(host, 1), "restarted") in kinds

        # No checkpoint of the old origin was signed past what the backup held.
        rows = await node.db.fetch_all("SELECT size, note FROM audit_checkpoint", {})
        for size, note in rows:
            origin = parse_note(str(note).encode()).text.split("\n")[0]
            if int(size) > restart.restored_size:
                assert origin == log_origin(host, 1), (size, origin)

        # A checkpoint of the old origin is refused now, even one the log key signed.
        key = load_private_key(fuzhou.setup.config.path(fuzhou.setup.config.tls.key))
        old_note = sign_note(
            Checkpoint(log_origin(host), witnessed.size, witnessed.root).body(),
            log_signer(host, key),
        )
        chain_pem = fuzhou.setup.config.path(fuzhou.setup.config.tls.cert).read_text()
        request = witness_pb2.AddCheckpointRequest(
            body=format_add_checkpoint(AddCheckpoint(witnessed.size, (), old_note)),
            log_certificate_chain_pem=chain_pem,
        )
        async with channel(fed.province.running, node_tls_files(fuzhou.setup.config)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await witness_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert f"went on as {log_origin(host, 1)}" in (refused.value.details() or "")

        # audit verify checks the new origin against the province and names the gap.
        result = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"went on as {log_origin(host, 1)}" in result.stdout
        assert f"records #{restart.restored_size + 1} to #{witnessed.size}" in result.stdout
        status = await asyncio.to_thread(govnode, "status", "--config", config)
        assert f"RESTARTED this log goes on as {log_origin(host, 1)}" in status.stdout
