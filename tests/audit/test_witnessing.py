"""Checkpoints witnessed across the federation, over real mutual TLS (第三十九条): the province
cosigns each city's checkpoints and the cities cosign the province's; anyone holding the
province root certificate checks a checkpoint and an inclusion proof offline; a city whose log
lost records is refused by its witness, which keeps the evidence and tells its authority."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from govnode.v1 import audit_pb2, audit_pb2_grpc, witness_pb2, witness_pb2_grpc
from sqlalchemy import text

from gateway.identity import Role, make_identity
from node.app import node_tls_files
from node.audit import read_log_signer, read_witness_statement
from node.storage import Database
from node.tlog import (
    AddCheckpoint,
    format_add_checkpoint,
    leaf_hash,
    open_note,
    parse_checkpoint,
    parse_policy,
    verify_inclusion,
)
from tests.support.audit import rewrite, truncate
from tests.support.cli import govnode
from tests.support.databases import NewDatabaseUrl, sqlite_urls
from tests.support.nodes import Member, channel, federation

TRUST_DOMAIN = "fujian.gov.cn"
WAIT_S = 20.0


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
    """Poll ``check`` every 0.1 s until it holds, for at most WAIT_S."""
    for _ in range(int(WAIT_S / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"not within {WAIT_S} s: {what}")


def root_of(member: Member) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        member.setup.config.path(member.setup.config.tls.root).read_bytes()
    )


def node_id(region: str) -> str:
    return make_identity(region, TRUST_DOMAIN, Role.NODE).uri


async def get_checkpoint(member: Member, size: int = 0) -> audit_pb2.GetCheckpointResponse:
    async with channel(member.running, member.agency()) as ch:
        return await audit_pb2_grpc.AuditServiceStub(ch).GetCheckpoint(
            audit_pb2.GetCheckpointRequest(size=size)
        )


async def cosigned_size(member: Member) -> int:
    """The size of the member's newest checkpoint a witness has cosigned (new checkpoints keep
    coming: every call, these included, adds a record)."""
    assert member.running.checkpoints is not None
    cosigned = await member.running.checkpoints.newest_cosigned()
    return 0 if cosigned is None else cosigned.size


def cosigned_by(member: Member, *regions: str) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        assert member.running.checkpoints is not None
        newest = await member.running.checkpoints.newest()
        return newest is not None and all(node_id(r) in newest.cosigned_by for r in regions)

    return check


async def grown(member: Member, records: int) -> int:
    """Make ``records`` calls on the member (each one audited), then wait until a checkpoint
    covering them is cosigned; returns its size."""
    for _ in range(records):
        await member.digest()

    async def covered() -> bool:
        return await cosigned_size(member) >= records

    await eventually(covered, f"a cosigned checkpoint of {records} records or more")
    return await cosigned_size(member)


def verify_offline(reply: audit_pb2.GetCheckpointResponse, root: x509.Certificate) -> set[str]:
    """What a holder of the root certificate alone checks: the log's signature, and each
    cosigner's key statement and cosignature. Returns the cosigners' identities."""
    log_signer = reply.signers[0]
    identity, verifier = read_log_signer(log_signer.certificate_chain_pem, root, TRUST_DOMAIN)
    note, _ = open_note(reply.signed_note, [verifier])
    checkpoint = parse_checkpoint(note.text)
    assert checkpoint.origin == f"{identity.host}/audit"
    assert (checkpoint.size, checkpoint.root) == (reply.checkpoint.size, reply.checkpoint.root)
    cosigners = set()
    for signer in reply.signers[1:]:
        cosigner = read_witness_statement(
            signer.witness_key_statement, signer.certificate_chain_pem, root, TRUST_DOMAIN
        )
        _, verified = open_note(reply.signed_note, [cosigner.verifier])
        assert verified
        cosigners.add(cosigner.identity.uri)
    return cosigners


async def test_each_log_is_cosigned_by_its_witnesses_and_checks_offline(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls, checkpoint_seconds=0.3) as fed:
        await eventually(cosigned_by(fed.fuzhou, "350000"), "福州's checkpoint cosigned")
        await eventually(cosigned_by(fed.xiamen, "350000"), "厦门's checkpoint cosigned")
        await eventually(
            cosigned_by(fed.province, "350100", "350200"), "the province's cosigned by both"
        )
        status = await asyncio.to_thread(
            govnode, "status", "--config", fed.fuzhou.setup.config_path
        )
        assert status.returncode == 0, status.stderr
        assert "Audit     checkpoint of " in status.stdout
        assert "newest witnessed: " in status.stdout
        assert f"(cosigned by {node_id('350000')})" in status.stdout
        assert f"witnessed when it has the cosignature of {node_id('350000')}" in status.stdout
        root = root_of(fed.province)
        size = await cosigned_size(fed.fuzhou)
        reply = await get_checkpoint(fed.fuzhou, size)
        assert reply.checkpoint.origin == "350100.fujian.gov.cn/audit"
        assert verify_offline(reply, root) == {node_id("350000")}
        # The province signs a checkpoint every 0.3 s and each city cosigns on its own: the
        # newest one cosigned at all may so far have one cosignature; wait for one with both.
        both = {node_id("350100"), node_id("350200")}
        replies: list[audit_pb2.GetCheckpointResponse] = []

        async def cosigned_by_both() -> bool:
            candidate = await get_checkpoint(fed.province, await cosigned_size(fed.province))
            replies.append(candidate)
            return verify_offline(candidate, root) == both

        await eventually(cosigned_by_both, "a province checkpoint with both cosignatures")
        reply = replies[-1]
        assert verify_offline(reply, root) == both
        assert (reply.witness_rule, reply.missing) == ("2 of 2 cities", "")
        policy = parse_policy(reply.policy)  # the same rule, in tlog-policy form
        assert policy.satisfied(policy.verify_cosignatures(reply.signed_note))

        # An inclusion proof of 福州's first record, against its newest checkpoint.
        async with channel(fed.fuzhou.running, fed.fuzhou.agency()) as ch:
            stub = audit_pb2_grpc.AuditServiceStub(ch)
            proof = await stub.GetInclusionProof(
                audit_pb2.GetInclusionProofRequest(sequence=1, size=size)
            )
            assert verify_offline(proof.checkpoint, root) == {node_id("350000")}
            verify_inclusion(
                leaf_hash(proof.record_hash),
                proof.index,
                proof.checkpoint.checkpoint.size,
                list(proof.proof),
                proof.checkpoint.checkpoint.root,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetInclusionProof(
                    audit_pb2.GetInclusionProofRequest(sequence=size + 1_000_000, size=size)
                )
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(size=size + 1_000_000))
            assert err.value.code() is grpc.StatusCode.NOT_FOUND


async def _rows(db_url: str, sql: str) -> list[Any]:
    db = await Database.open(db_url)
    try:
        async with db.engine.connect() as connection:
            return list(await connection.execute(text(sql)))
    finally:
        await db.close()


async def test_a_city_whose_newest_records_were_deleted_is_caught_by_its_witness(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls, checkpoint_seconds=0.3) as fed:
        witnessed = await grown(fed.fuzhou, 20)
        await fed.fuzhou.stop()
        # An attacker with 福州's database removes its newest records and every trace of the
        # checkpoints it signed, so the node itself cannot tell.
        url = fed.fuzhou.setup.config.database_url
        db = await Database.open(url)
        try:
            await truncate(db, witnessed - 2)
            async with db.engine.begin() as connection:
                await connection.execute(text("DELETE FROM audit_checkpoint"))
        finally:
            await db.close()
        await fed.fuzhou.start()

        province_url = fed.province.setup.config.database_url

        async def evidence() -> bool:
            rows = await _rows(province_url, "SELECT origin, kind FROM witness_evidence")
            return any(r[0] == "350100.fujian.gov.cn/audit" for r in rows)

        await eventually(evidence, "the province keeps evidence against 福州")
        rows = await _rows(province_url, "SELECT kind, message FROM witness_evidence")
        assert rows[0][0] in ("rollback", "fork"), rows
        notices = await _rows(
            province_url,
            "SELECT recipient, message FROM notification WHERE kind = 'audit_log_misbehaved'",
        )
        assert notices and notices[0][0].endswith("350000.fujian.gov.cn/authority")
        # The province still holds the size it cosigned; 福州's new checkpoints stay unwitnessed.
        state = await _rows(
            province_url,
            "SELECT size FROM witness_state WHERE origin = '350100.fujian.gov.cn/audit'",
        )
        assert state[0][0] >= witnessed
        assert fed.fuzhou.running.checkpoints is not None
        newest = await fed.fuzhou.running.checkpoints.newest()
        assert newest is not None and node_id("350000") not in newest.cosigned_by

        # The province's operator sees the refusal in govnode status.
        status = await asyncio.to_thread(
            govnode, "status", "--config", fed.province.setup.config_path
        )
        assert status.returncode == 0, status.stderr
        assert f"REFUSED   {rows[0][0]} of 350100.fujian.gov.cn/audit at " in status.stdout

        # 福州's operator finds out: the chain is intact, the province's checkpoint is not.
        config = fed.fuzhou.setup.config_path
        result = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.splitlines()[0].startswith("audit chain intact: ")
        # The log has grown again since, so it may be short of the province's checkpoint or
        # already past it with other records: either way the first records are not those.
        size = state[0][0]
        short = re.search(
            rf"audit log NOT WHOLE: records #(\d+) to #{size} are missing: "
            rf"{re.escape(node_id('350000'))} cosigned a checkpoint of {size} records",
            result.stdout,
        )
        assert (
            (short is not None and witnessed - 1 <= int(short.group(1)) <= size)
            or f"audit log NOT WHOLE: the first {size} records are not the ones "
            f"{node_id('350000')} cosigned"
            in result.stdout
        ), result.stdout
        # Offline, with the checkpoints table emptied, nothing is left to tell.
        offline = await asyncio.to_thread(
            govnode, "audit", "verify", "--config", config, "--offline"
        )
        assert offline.returncode == 0, offline.stdout


async def test_a_city_whose_past_was_rewritten_is_caught_by_its_witness_and_audit_verify(
    tmp_path: Path,
) -> None:
    # On SQLite only: the same paths as the truncation test above, which runs on both.
    async with federation(tmp_path, sqlite_urls(tmp_path), checkpoint_seconds=0.3) as fed:
        await grown(fed.fuzhou, 20)
        config = fed.fuzhou.setup.config_path
        intact = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
        assert intact.returncode == 0, intact.stdout + intact.stderr
        assert f"witnessed: {node_id('350000')} cosigned " in intact.stdout
        await fed.fuzhou.stop()
        db = await Database.open(fed.fuzhou.setup.config.database_url)
        try:
            await rewrite(db, 10, "a call that never happened")
        finally:
            await db.close()
        await fed.fuzhou.start()
        # 福州 itself refuses to sign a tree that does not extend its own checkpoints ...
        publisher = fed.fuzhou.running.publisher
        assert publisher is not None

        async def refused() -> bool:
            return "records up to" in publisher.status.diverged

        await eventually(refused, "福州 refuses to sign its rewritten log")
        # ... and its operator is told what its witness cosigned.
        result = await asyncio.to_thread(govnode, "audit", "verify", "--config", config)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.splitlines()[0].startswith("audit chain intact: ")
        assert "are not the ones spiffe://350000.fujian.gov.cn/node cosigned" in result.stdout


async def test_only_a_node_may_ask_for_a_cosignature_and_only_for_its_own_log(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        config = fed.fuzhou.setup.config
        fuzhou_chain = config.path(config.tls.cert).read_text()
        request = witness_pb2.AddCheckpointRequest(
            body=format_add_checkpoint(AddCheckpoint(0, (), b"x\n")),
            log_certificate_chain_pem=fuzhou_chain,
        )
        # An agency of the province is not a node.
        async with channel(fed.province.running, fed.province.agency()) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await witness_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "witnesses the audit logs of the cities' nodes only" in (err.value.details() or "")
        # 厦门's node asking 福州 (a city witnesses only its province).
        xiamen_files = node_tls_files(fed.xiamen.setup.config)
        async with channel(fed.fuzhou.running, xiamen_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await witness_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # 厦门's node sending 福州's chain to the province.
        async with channel(fed.province.running, xiamen_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await witness_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "a node sends its own log's checkpoints" in (err.value.details() or "")
        # 福州 itself, with a malformed body.
        fuzhou_files = node_tls_files(fed.fuzhou.setup.config)
        async with channel(fed.province.running, fuzhou_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await witness_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
