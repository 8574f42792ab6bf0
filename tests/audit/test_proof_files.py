"""Proof files (第三十九条; C2SP tlog-proof): `govnode audit prove` on a city writes one for a
record; `govnode audit check-proof` accepts it with nothing but the province root certificate,
and refuses every alteration, naming the check that failed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from gateway.identity import Role, make_identity
from node.audit import witness_signer, witness_statement
from node.pki import load_or_create_witness_key, load_private_key
from node.tlog import (
    add_signature_lines,
    cosign,
    format_note,
    format_tlog_proof,
    parse_note,
    parse_tlog_proof,
)
from tests.support.cli import govnode
from tests.support.databases import sqlite_urls
from tests.support.nodes import Member, federation, make_province

WAIT_S = 20.0


async def witnessed_past(member: Member, records: int) -> int:
    for _ in range(records):
        await member.digest()
    assert member.running.checkpoints is not None
    for _ in range(int(WAIT_S / 0.1)):
        cosigned = await member.running.checkpoints.newest_cosigned()
        if cosigned is not None and cosigned.size >= records:
            return cosigned.size
        await asyncio.sleep(0.1)
    raise AssertionError(f"no cosigned checkpoint of {records} records within {WAIT_S} s")


async def test_a_proof_checks_offline_and_no_alteration_passes(tmp_path: Path) -> None:
    # Offline checks: the backend does not matter (test_witnessing covers both).
    async with federation(tmp_path / "fed", sqlite_urls(tmp_path), checkpoint_seconds=0.3) as fed:
        await witnessed_past(fed.fuzhou, 10)
        proof = tmp_path / "record-5.tlog-proof"
        made = await asyncio.to_thread(
            govnode,
            "audit", "prove", "--config", fed.fuzhou.setup.config_path,
            "--sequence", "5", "--out", proof,
        )  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr
        too_new = await asyncio.to_thread(
            govnode,
            "audit", "prove", "--config", fed.fuzhou.setup.config_path,
            "--sequence", "100000", "--out", tmp_path / "x",
        )  # fmt: skip
        assert (
            too_new.returncode == 2
            and "no witnessed checkpoint covers record 100000 yet" in too_new.stderr
        )
        root = fed.province.setup.config.path(fed.province.setup.config.tls.root)
        xiamen = fed.xiamen.setup.config

    # The nodes are gone: the check needs only the file and the root certificate.
    def check(path: Path, anchor: Path = root) -> tuple[int, str]:
        result = govnode("audit", "check-proof", path, "--root", anchor)
        return result.returncode, result.stdout

    code, out = await asyncio.to_thread(check, proof)
    assert code == 0, out
    assert out.startswith("proof OK: record #5 is in the audit log 350100.fujian.gov.cn/audit of ")
    assert "cosigned by spiffe://350000.fujian.gov.cn/node at " in out

    parsed = parse_tlog_proof(proof.read_bytes())
    extra = json.loads(parsed.extra or b"")

    def altered(name: str, **changes: object) -> Path:
        path = tmp_path / f"{name}.tlog-proof"
        path.write_bytes(format_tlog_proof(dataclasses.replace(parsed, **changes)))  # type: ignore[arg-type]
        return path

    forged = json.loads(json.dumps(extra))
    forged["record"]["content"]["outcome"] = "PERMISSION_DENIED"
    code, out = await asyncio.to_thread(check, altered("record", extra=json.dumps(forged).encode()))
    assert (code, out.strip()) == (
        1,
        "proof INVALID: the record's fields do not hash to its chain hash: it was altered",
    )

    note = parse_note(parsed.checkpoint)
    unwitnessed = dataclasses.replace(note, signatures=note.signatures[:1])
    code, out = await asyncio.to_thread(
        check, altered("unwitnessed", checkpoint=format_note(unwitnessed))
    )
    assert code == 1 and "no witness cosigned the checkpoint" in out

    code, out = await asyncio.to_thread(check, altered("index", index=parsed.index + 1))
    assert code == 1 and "but the proof is for leaf 5" in out

    # 厦门 (a city, with its real keys) cosigning 福州's checkpoint does not witness it: a
    # city's log needs its province.
    xm_identity = make_identity("350200", "fujian.gov.cn", Role.NODE)
    xm_witness = load_or_create_witness_key(xiamen.path(xiamen.tls.witness_key))
    statement = witness_statement(
        xm_identity, load_private_key(xiamen.path(xiamen.tls.key)), xm_witness.public_key()
    )
    bare = format_note(unwitnessed)
    by_city = add_signature_lines(bare, cosign(bare, witness_signer(xm_identity.host, xm_witness)))
    city_extra = json.loads(json.dumps(extra))
    city_extra["signers"] = [
        extra["signers"][0],
        {
            "identity": xm_identity.uri,
            "chain_pem": xiamen.path(xiamen.tls.cert).read_text(),
            "statement": statement.decode(),
        },
    ]
    code, out = await asyncio.to_thread(
        check,
        altered("city", checkpoint=by_city, extra=json.dumps(city_extra).encode()),
    )
    assert (code, out.strip()) == (
        1,
        "proof INVALID: the checkpoint is not witnessed: it lacks the cosignature of "
        "spiffe://350000.fujian.gov.cn/node",
    )

    wrong_proof = tuple(bytes(32) for _ in parsed.proof)
    code, out = await asyncio.to_thread(check, altered("proof", proof=wrong_proof))
    assert code == 1 and out.startswith("proof INVALID: the inclusion proof")

    other = make_province(tmp_path / "other", "sqlite+aiosqlite:///other.db")
    code, out = await asyncio.to_thread(check, proof, other.config.path(other.config.tls.root))
    assert code == 1 and "does not lead to the province root" in out
