"""Step [17] of the demo: audit evidence (第三十九条). 福州's audit log is checkpointed and the
province cosigns it; a proof that the routed Verify of step [12] is in 福州's log is written
and checked offline with nothing but the province root certificate; an altered copy is
refused; and the agency that provides the resource receives the record of that use, with its
proof and the node's signed statement, on its usage log stream (使用日志推送给相应的数据生产
应用单位) and checks them with the root certificate alone."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import TYPE_CHECKING

import grpc.aio
from cryptography import x509
from govnode.v1 import audit_pb2, audit_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Role, make_identity
from node.app import RunningNode
from node.audit import (
    AuditLog,
    AuditRecord,
    ProofFileError,
    check_proof_file,
    check_usage,
    federation_rule,
    prove_record,
)
from node.pki import load_certs, load_chain_pem
from node.times import CST
from node.tlog import format_tlog_proof, parse_note, parse_tlog_proof

if TYPE_CHECKING:
    from node.demo._federation import City
    from node.demo._main import Demo

WAIT_S = 30.0


async def show_audit_evidence(
    demo: Demo, province: RunningNode, fuzhou: City, request_id: str
) -> None:
    say = demo.say
    say(
        "[17] Audit evidence (第三十九条): 福州's log is checkpointed and cosigned by the "
        "province; a proof of a use of 福州's data is checked offline, and the data's "
        "provider receives the record of that use on its usage log"
    )
    node = fuzhou.node
    assert node.checkpoints is not None
    [record] = await AuditLog(node.db).query(request_id=request_id)
    rule = federation_rule(node.identity)  # 福州's: its province's cosignature
    began = time.monotonic()
    witnessed = await node.checkpoints.newest_witnessed(rule)
    while witnessed is None or witnessed.size < record.sequence:
        if time.monotonic() - began > WAIT_S:
            say(
                f"  ✗ no cosigned checkpoint of 福州's log covered #{record.sequence} "
                f"within {WAIT_S:g} s"
            )
            return
        await asyncio.sleep(0.2)
        witnessed = await node.checkpoints.newest_witnessed(rule)
    note = parse_note(witnessed.note)
    say("  ✓ the newest checkpoint of 福州's log that the province has cosigned:")
    for line in note.text.splitlines():
        say(f"      {line}")
    for signature in note.signatures:
        # The log signs under its origin's name (C2SP checkpoints); every other key cosigns.
        own = signature.name == witnessed.checkpoint.origin
        role = "the log's node key" if own else "witness"
        say(f"      — {signature.name} ({role})")
    root = load_certs(fuzhou.config.path(fuzhou.config.tls.root))[0]
    chain_pem = load_chain_pem(fuzhou.config.path(fuzhou.config.tls.cert), root)
    data = await prove_record(
        node.db, node.audit, node.checkpoints, record.sequence, chain_pem, rule
    )
    out = demo.base / "proofs" / f"350100-record-{record.sequence}.tlog-proof"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    say(
        f"  ✓ proof that 福州's record #{record.sequence} (the routed Verify of step [12], "
        f"caller {record.caller}) is in its log → {out} ({len(data)} bytes)"
    )
    checked = check_proof_file(data, root, "fujian.gov.cn")
    witnesses = ", ".join(
        f"{who} at {at.astimezone(CST):%H:%M:%S}" for who, at in checked.cosigned_by
    )
    say(
        f"  ✓ checked offline with the root certificate alone (govnode audit check-proof): in "
        f"{checked.origin} of {checked.size} records, cosigned by {witnesses}"
    )
    parsed = parse_tlog_proof(data)
    extra = json.loads(parsed.extra or b"")
    extra["record"]["content"]["outcome"] = "PERMISSION_DENIED"
    forged = format_tlog_proof(dataclasses.replace(parsed, extra=json.dumps(extra).encode()))
    try:
        check_proof_file(forged, root, "fujian.gov.cn")
        say("  ✗ an altered proof was accepted")
    except ProofFileError as exc:
        say(f"  ✓ the same proof with the record's outcome changed is refused: {exc}")
    await _show_usage_log(demo, fuzhou, record, root)


async def _show_usage_log(
    demo: Demo, fuzhou: City, record: AuditRecord, root: x509.Certificate
) -> None:
    """The provider of the resource the routed Verify used streams its usage log from 福州
    with its own agency certificate, up to the statement that covers that record, and checks
    what it received as any provider would (check_usage: `govnode audit check-usage`)."""
    say = demo.say
    trust_domain = fuzhou.config.node.trust_domain
    provider = make_identity(fuzhou.region, trust_domain, Role.AGENCY, fuzhou.agency_code)
    proofs: dict[int, bytes] = {}
    statements: list[audit_pb2.UsageStatement] = []
    # The stream is live (it waits for the next cosigned checkpoint after each stretch): read
    # until a statement covers the record, under the call's deadline, then cancel it.
    async with secure_channel(fuzhou.node.address, fuzhou.agency, timeout=WAIT_S) as channel:
        call = audit_pb2_grpc.AuditServiceStub(channel).StreamUsageLog(
            audit_pb2.StreamUsageLogRequest(resource_code=record.resource_code), timeout=WAIT_S
        )
        try:
            while not statements or statements[-1].last_sequence < record.sequence:
                message = await call.read()
                if not isinstance(message, audit_pb2.UsageLogMessage):
                    say("  ✗ 福州 ended the usage log stream before a statement covered the record")
                    return
                if message.WhichOneof("message") == "record":
                    proofs[message.record.record.sequence] = message.record.proof
                else:
                    statements.append(message.statement)
        except grpc.aio.AioRpcError as exc:
            say(f"  ✗ the usage log stream: {exc.code().name}: {exc.details()}")
            return
        finally:
            call.cancel()
    say(
        f"  ✓ {fuzhou.agency_name} ({fuzhou.agency_code}), the provider of "
        f"{record.resource_code}, called AuditService.StreamUsageLog on 福州 over mutual TLS "
        "with its own agency certificate"
    )
    if record.sequence not in proofs:
        say(f"  ✗ the stream did not deliver record #{record.sequence}")
        return
    proven = check_proof_file(proofs[record.sequence], root, trust_domain)
    say(
        f"  ✓ it received record #{record.sequence} ({record.operation.term} "
        f"{record.method.rsplit('/', 1)[-1]} by {record.caller}) with its proof against the "
        f"checkpoint of {proven.size} records cosigned by the province"
    )
    found = check_usage(
        list(proofs.values()),
        [(s.signed_note, s.certificate_chain_pem, list(s.sequences)) for s in statements],
        root,
        trust_domain,
        provider=provider.uri,
    )
    if not found.ok:
        say(f"  ✗ the usage log does not check: {'; '.join(found.problems[:3])}")
        return
    covered = ", ".join(f"{a}..{b}" for a, b in found.covered)
    say(
        f"  ✓ with 福州's signed statement: of sequences {covered} of {found.log}, exactly "
        f"{found.records} records concern {record.resource_code}, and it received each of them"
    )
    say(
        f"  ✓ checked with the root certificate alone (govnode audit check-usage): "
        f"{found.records} proofs and {found.statements} statement(s) for {found.provider}"
    )
