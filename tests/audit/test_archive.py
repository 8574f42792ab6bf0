"""Retention and archive of the audit log (第三十九条: kept at least three years): closed
segments sealed into an archive that verifies offline with the province root certificate alone,
segment by segment, naming what fails; pruning refused unless a segment is past its retention,
archived and verified, and witnessed; and after a prune, old proofs and `audit verify` still
work while a pruned record is answered with the segment that holds it."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import shutil
from pathlib import Path

import grpc
import pytest
from govnode.v1 import audit_pb2, audit_pb2_grpc
from sqlalchemy import text

from bench.archived_log import OLD, SEGMENT, ArchivedNode, append, make_node, witnessed
from node.audit import AuditLog, PruneRefused, RecordsPruned, prune
from node.storage import Database
from node.tlog import leaf_hash, parse_note, verify_consistency, verify_inclusion
from tests.support.cli import govnode
from tests.support.nodes import ProvinceSetup, channel, make_province, start


async def run(*args: str | Path) -> tuple[int, str, str]:
    result = await asyncio.to_thread(govnode, *args)
    return result.returncode, result.stdout, result.stderr


async def archive(node: ArchivedNode, out: Path) -> str:
    code, stdout, stderr = await run("audit", "archive", "--config", node.config, "--out", out)
    assert code == 0, stdout + stderr
    return stdout + stderr


async def verify_archive(directory: Path, root: Path) -> tuple[int, str]:
    code, stdout, stderr = await run("audit", "verify-archive", directory, "--root", root)
    assert "Traceback" not in stderr, stderr
    return code, stdout


def tampered(source: Path, name: str) -> Path:
    copy = source.parent / name
    shutil.copytree(source, copy)
    return copy


async def test_an_archive_verifies_offline_and_each_tampering_is_named(tmp_path: Path) -> None:
    # The archive's files are checked offline: SQLite is enough here (sealing and pruning on
    # PostgreSQL are covered by the prune tests below).
    node = make_node(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'node.db'}")
    await append(node, 3 * SEGMENT + 40, OLD)
    await witnessed(node)
    out = tmp_path / "archive"
    said = await archive(node, out)
    assert "sealed segment 2: records #513 to #768" in said
    assert "sealed 3 segment(s)" in said
    assert "sealed 0 segment(s)" in await archive(node, out)  # idempotent
    assert sorted(p.name for p in out.iterdir())[:2] == [
        "segment-000000.json",
        "segment-000000.records.jsonl.gz",
    ]

    code, stdout = await verify_archive(out, node.root)
    assert code == 0, stdout
    assert "archive OK: 3 segment(s), records #1 to #768" in stdout

    # Three segments, each altered in its own way: each is named with the check it fails.
    bad = tampered(out, "tampered")
    flipped = bad / "segment-000001.records.jsonl.gz"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    records = bad / "segment-000002.records.jsonl.gz"
    lines = gzip.decompress(records.read_bytes()).split(b"\n")
    records.write_bytes(gzip.compress(b"\n".join(lines[:10] + lines[11:]), mtime=0))
    manifest = bad / "segment-000000.json"
    evidence = json.loads(manifest.read_text("utf-8"))
    text = parse_note(evidence["manifest"].encode()).text
    evidence["manifest"] = evidence["manifest"].replace(text, text.replace("time ", "time 2"))
    manifest.write_text(json.dumps(evidence), encoding="utf-8")
    code, stdout = await verify_archive(bad, node.root)
    assert code == 1, stdout
    assert "segment 0 FAILED (manifest signature): not signed by spiffe://350000." in stdout
    assert "segment 1 FAILED (records)" in stdout
    assert "segment 2 FAILED (chain): record #523 is missing (the next is #524)" in stdout

    other = make_province(tmp_path / "other", "sqlite+aiosqlite:///other.db")
    code, stdout = await verify_archive(out, other.config.path(other.config.tls.root))
    assert code == 1, stdout
    for k in range(3):
        assert f"segment {k} FAILED (signers)" in stdout


async def prune_in_process(node: ArchivedNode, before: int, directory: Path) -> None:
    """What `govnode audit prune` does, for the refusals that need no subprocess."""
    cfg = node.log
    db = await Database.open(node.db_url)
    try:
        log = AuditLog(db)
        head = await log.tree_head()
        async with db.engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT max(size) FROM audit_checkpoint WHERE cosigned_by != ''")
                )
            ).first()
        await prune(
            db=db,
            audit=log,
            before=before,
            segment_records=SEGMENT,
            retention_days=cfg.audit.retention_days,
            witnessed_size=int(row[0]) if row and row[0] else 0,
            archive=directory,
            root_pem=node.root.read_bytes(),
            trust_domain=cfg.node.trust_domain,
            now=dt.datetime.now(dt.UTC),
        )
        assert head.size  # the log was there
    finally:
        await db.close()


async def test_prune_is_refused_until_old_archived_and_witnessed_and_old_proofs_survive_it(
    tmp_path: Path, db_url: str
) -> None:
    node = make_node(tmp_path, db_url)
    await append(node, 3 * SEGMENT, OLD)
    await append(node, 300, dt.datetime.now(dt.UTC))  # segment 3 is young; 1068 records
    early = await witnessed(node)  # of all 1068 records
    out = tmp_path / "archive"

    async def prune_cli(before: int, directory: Path = out) -> tuple[int, str]:
        code, stdout, stderr = await run(
            "audit", "prune", "--config", node.config,
            "--before-segment", str(before), "--archive", directory,
        )  # fmt: skip
        assert "Traceback" not in stderr, stderr
        return code, stdout + stderr

    with pytest.raises(PruneRefused, match="segment 0: not sealed in the archive"):
        await prune_in_process(node, 3, out)
    await archive(node, out)  # segments 0 to 3
    code, said = await prune_cli(4)
    assert code == 2, said
    assert "prune refused: segment 3: its newest record is from " in said
    assert "within the retention of 1095 days" in said
    broken = tampered(out, "broken")
    (broken / "segment-000001.records.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(PruneRefused, match=r"segment 1: the archive does not verify \(records\)"):
        await prune_in_process(node, 3, broken)

    # Before the prune: a proof of a live record and a consistency proof from a segment
    # boundary, both against the witnessed checkpoint.
    db = await Database.open(db_url)
    try:
        log = AuditLog(db)
        leaf, proof = await log.inclusion_proof(900, early.size)
        consistency = await log.consistency_proof(2 * SEGMENT, early.size)
        boundary_root = (await log.tree_head(2 * SEGMENT)).root
    finally:
        await db.close()

    code, said = await prune_cli(3)
    assert code == 0, said
    assert "pruned segments 0 to 2 (768 records); the live log starts at #769" in said

    with pytest.raises(PruneRefused, match="segments before 3 were pruned already"):
        await prune_in_process(node, 3, out)

    db = await Database.open(db_url)
    try:
        log = AuditLog(db)
        # Old proofs still verify, and the same ones are made again from the kept subtrees.
        verify_inclusion(leaf, 899, early.size, proof, early.root)
        assert await log.inclusion_proof(900, early.size) == (leaf, proof)
        assert await log.consistency_proof(2 * SEGMENT, early.size) == consistency
        verify_consistency(2 * SEGMENT, early.size, consistency, boundary_root, early.root)
        assert leaf == leaf_hash(bytes.fromhex((await log.record_content(900) or ({}, "", ""))[2]))
        # Reading pruned records names the segment to fetch.
        with pytest.raises(
            RecordsPruned, match=r"record #5 .* archive segment 0 \(records #1 to #256\)"
        ):
            await log.record_content(5)
        with pytest.raises(RecordsPruned, match="archive segment 1"):
            await log.record_hash(300)
        with pytest.raises(RecordsPruned, match="archive segment 2"):
            await log.inclusion_proof(700, early.size)
        with pytest.raises(RecordsPruned, match="archive segment 1"):
            await log.consistency_proof(300, early.size)
        with pytest.raises(RecordsPruned, match="archive segments 0 to 2"):
            await log.query(limit=10)
        later = await log.query(since=dt.datetime.now(dt.UTC) - dt.timedelta(days=1), limit=5)
        assert [r.sequence for r in later] == [769, 770, 771, 772, 773]
    finally:
        await db.close()

    code, stdout, stderr = await run(
        "audit", "prove", "--config", node.config, "--sequence", "5", "--out", tmp_path / "p"
    )
    assert code == 2 and "archive segment 0" in stderr, stderr

    # The log goes on from its live head, and verifies from the archive's anchor.
    await append(node, 10, dt.datetime.now(dt.UTC))
    await witnessed(node)
    code, stdout, stderr = await run("audit", "verify", "--config", node.config, "--offline")
    assert code == 0, stdout + stderr
    assert "audit chain intact: 310 records (#769 to #1078)" in stdout
    assert "records #1 to #768 were pruned into archive segments 0 to 2" in stdout
    assert "the log extends it" in stdout

    # Over the API a caller asking for pruned records is told which segment holds them, and
    # live records are proven as before.
    setup = ProvinceSetup(node.config.parent, node.config, node.log)
    running = await start(setup)
    try:
        async with channel(running, setup.authority()) as ch:
            stub = audit_pb2_grpc.AuditServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as pruned:
                await stub.GetInclusionProof(
                    audit_pb2.GetInclusionProofRequest(sequence=5, size=early.size)
                )
            assert pruned.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "archive segment 0 (records #1 to #256)" in (pruned.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as listed:
                await stub.QueryAudit(audit_pb2.QueryAuditRequest(page_size=10))
            assert listed.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "archive segments 0 to 2" in (listed.value.details() or "")
            live = await stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(sequence=900, size=early.size)
            )
            assert list(live.proof) == proof
    finally:
        await running.stop(grace=0)


async def test_prune_is_refused_when_no_witness_cosigned_past_the_segments(
    tmp_path: Path, db_url: str
) -> None:
    node = make_node(tmp_path, db_url)
    await append(node, SEGMENT + 10, OLD)
    await witnessed(node)  # 266: segment 0 is closed
    await append(node, 2 * SEGMENT, OLD + dt.timedelta(days=1))
    with pytest.raises(PruneRefused, match="segment 1: no witness has cosigned a checkpoint"):
        await prune_in_process(node, 2, tmp_path / "archive")


def test_segment_records_must_be_a_power_of_two_of_256_or_more() -> None:
    from pydantic import ValidationError

    from node.config import AuditSection

    assert AuditSection(segment_records=1024).segment_records == 1024
    for wrong in (100, 300, 128):
        with pytest.raises(ValidationError):
            AuditSection(segment_records=wrong)
