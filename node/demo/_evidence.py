"""Step [17] of the demo: audit evidence (第三十九条). 福州's audit log is checkpointed and the
province cosigns it; a proof that the routed Verify of step [12] is in 福州's log is written
and checked offline with nothing but the province root certificate; an altered copy is
refused."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from node.app import RunningNode
from node.audit import (
    AuditLog,
    ProofFileError,
    check_proof_file,
    federation_rule,
    prove_record,
)
from node.pki import load_certs
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
        "province; a proof of a use of 福州's data is checked offline"
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
        role = "the log's node key" if signature.name.endswith("/audit") else "witness"
        say(f"      — {signature.name} ({role})")
    root = load_certs(fuzhou.config.path(fuzhou.config.tls.root))[0]
    chain = [c for c in load_certs(fuzhou.config.path(fuzhou.config.tls.cert)) if c != root]
    chain_pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
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
