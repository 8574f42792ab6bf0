"""Checkpoints witnessed across the federation, over real mutual TLS (第三十九条): the province
cosigns each city's checkpoints and the cities cosign the province's; anyone holding the
province root certificate checks a checkpoint and an inclusion proof offline; a city whose log
lost records is refused by its witness, which keeps the evidence and tells its authority."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from govnode.v1 import audit_pb2, audit_pb2_grpc
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
    verify_inclusion,
)
from tests.support.audit import truncate
from tests.support.databases import NewDatabaseUrl
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


async def get_checkpoint(member: Member) -> audit_pb2.GetCheckpointResponse:
    async with channel(member.running, member.agency()) as ch:
        return await audit_pb2_grpc.AuditServiceStub(ch).GetCheckpoint(
            audit_pb2.GetCheckpointRequest()
        )


def cosigned_by(member: Member, *regions: str) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        assert member.running.checkpoints is not None
        newest = await member.running.checkpoints.newest()
        return newest is not None and all(node_id(r) in newest.cosigned_by for r in regions)

    return check


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
        root = root_of(fed.province)
        reply = await get_checkpoint(fed.fuzhou)
        assert reply.checkpoint.origin == "350100.fujian.gov.cn/audit"
        assert verify_offline(reply, root) == {node_id("350000")}
        reply = await get_checkpoint(fed.province)
        assert verify_offline(reply, root) == {node_id("350100"), node_id("350200")}

        # An inclusion proof of 福州's first record, against its newest checkpoint.
        async with channel(fed.fuzhou.running, fed.fuzhou.agency()) as ch:
            stub = audit_pb2_grpc.AuditServiceStub(ch)
            proof = await stub.GetInclusionProof(audit_pb2.GetInclusionProofRequest(sequence=1))
            assert verify_offline(proof.checkpoint, root) == {node_id("350000")}
            verify_inclusion(
                leaf_hash(proof.record_hash),
                proof.index,
                proof.checkpoint.checkpoint.size,
                list(proof.proof),
                proof.checkpoint.checkpoint.root,
            )
            size = proof.checkpoint.checkpoint.size
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
        await eventually(cosigned_by(fed.fuzhou, "350000"), "福州's checkpoint cosigned")
        witnessed = (await get_checkpoint(fed.fuzhou)).checkpoint.size
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


async def test_only_a_node_may_ask_for_a_cosignature_and_only_for_its_own_log(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        config = fed.fuzhou.setup.config
        fuzhou_chain = config.path(config.tls.cert).read_text()
        request = audit_pb2.AddCheckpointRequest(
            body=format_add_checkpoint(AddCheckpoint(0, (), b"x\n")),
            log_certificate_chain_pem=fuzhou_chain,
        )
        # An agency of the province is not a node.
        async with channel(fed.province.running, fed.province.agency()) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await audit_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "witnesses the audit logs of the cities' nodes only" in (err.value.details() or "")
        # 厦门's node asking 福州 (a city witnesses only its province).
        xiamen_files = node_tls_files(fed.xiamen.setup.config)
        async with channel(fed.fuzhou.running, xiamen_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await audit_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # 厦门's node sending 福州's chain to the province.
        async with channel(fed.province.running, xiamen_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await audit_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "a node sends its own log's checkpoints" in (err.value.details() or "")
        # 福州 itself, with a malformed body.
        fuzhou_files = node_tls_files(fed.fuzhou.setup.config)
        async with channel(fed.province.running, fuzhou_files) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await audit_pb2_grpc.WitnessServiceStub(ch).AddCheckpoint(request)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
