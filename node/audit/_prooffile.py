"""Proof files anyone can check offline (第三十九条; C2SP tlog-proof).

A proof file is a tlog-proof (``c2sp.org/tlog-proof@v1``: the leaf index, the inclusion proof
and a checkpoint with the log's signature and its witnesses' cosignatures) whose ``extra`` line
carries what a verifier needs besides the province root certificate, as JSON:

- ``record``: the audit record as its chain hash covers it (content, ``prev_hash``, ``hash``),
  so the verifier recomputes the chain hash, which is the Merkle leaf;
- ``signers``: the log node's certificate chain, and each witness's chain and witness key
  statement (node.audit._keys).

``extra`` is unauthenticated by design: everything in it is checked, against the root
certificate, the signatures and the proof, before anything is believed.

A proof verifies when: the record's fields hash to its chain hash; the log's chain leads to the
root and its key signed the checkpoint under the log's origin; at least one witness whose key
statement verifies (a node other than the log's) cosigned it, and for a city's log its
province did; and the inclusion proof leads from the record's leaf to the checkpoint's root.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from node.audit._checkpoints import Checkpoints, CosignerKeys, StoredCheckpoint, cosigners
from node.audit._keys import (
    KeyStatementError,
    origin_epoch,
    read_log_signer,
    read_witness_statement,
)
from node.audit._log import AuditLog, content_hash
from node.audit._policy import WitnessRule, federation_rule, province_of
from node.storage import Database
from node.tlog import (
    NoteError,
    ProofError,
    TlogProof,
    TlogProofError,
    cosignature_time,
    format_tlog_proof,
    leaf_hash,
    open_note,
    parse_checkpoint,
    parse_tlog_proof,
    verified_signatures,
    verify_inclusion,
)

#: A proof file holds one record and a few certificates: far less than this.
MAX_PROOF_BYTES = 128 * 1024
FORMAT = "govnode audit proof v1"


class ProofFileError(ValueError):
    """A proof file that does not prove what it claims; the message says which check failed."""


class CannotProve(LookupError):
    """No proof can be made (yet): the record does not exist, or no witnessed checkpoint
    covers it; the message says which."""


async def prove_record(
    db: Database,
    audit: AuditLog,
    checkpoints: Checkpoints,
    sequence: int,
    log_chain_pem: str,
    rule: WitnessRule,
) -> bytes:
    """The proof file of record ``sequence`` against the newest checkpoint whose
    cosignatures meet ``rule`` (node.audit._policy)."""
    witnessed = await checkpoints.newest_witnessed(rule)
    if witnessed is None or witnessed.size < sequence:
        covered = "no records" if witnessed is None else f"{witnessed.size} records"
        raise CannotProve(
            f"no witnessed checkpoint covers record {sequence} yet (the newest one with "
            f"{rule.describe()} covers {covered}); try again after the next checkpoint"
        )
    found = await audit.record_content(sequence)
    if found is None:
        raise CannotProve(f"record {sequence} is not in this node's audit log")
    content, prev_hash, chain_hash = found
    _, proof = await audit.inclusion_proof(sequence, witnessed.size)
    return make_proof_file(
        content=content,
        prev_hash=prev_hash,
        record_hash=chain_hash,
        proof=proof,
        checkpoint=witnessed,
        log_chain_pem=log_chain_pem,
        cosigners=list((await cosigners(db)).values()),
    )


def make_proof_file(
    *,
    content: dict[str, Any],
    prev_hash: str,
    record_hash: str,
    proof: list[bytes],
    checkpoint: StoredCheckpoint,
    log_chain_pem: str,
    cosigners: list[CosignerKeys],
) -> bytes:
    extra = {
        "format": FORMAT,
        "record": {"content": content, "prev_hash": prev_hash, "hash": record_hash},
        "signers": [{"chain_pem": log_chain_pem}]
        + [
            {"identity": c.identity, "chain_pem": c.chain_pem, "statement": c.statement.decode()}
            for c in cosigners
            if c.identity in checkpoint.cosigned_by
        ],
    }
    data = json.dumps(extra, ensure_ascii=False, sort_keys=True).encode()
    return format_tlog_proof(
        TlogProof(int(content["sequence"]) - 1, tuple(proof), checkpoint.note, data)
    )


@dataclass(frozen=True)
class CheckedProof:
    """What a valid proof file shows."""

    origin: str
    log_identity: str
    sequence: int
    size: int
    record: dict[str, Any]
    cosigned_by: tuple[tuple[str, dt.datetime], ...]  # witness identity, cosigned at


def check_proof_file(data: bytes, root: x509.Certificate, trust_domain: str) -> CheckedProof:
    if len(data) > MAX_PROOF_BYTES:
        raise ProofFileError(f"{len(data)} bytes; a proof file is at most {MAX_PROOF_BYTES}")
    try:
        parsed = parse_tlog_proof(data, max_bytes=MAX_PROOF_BYTES)
    except TlogProofError as exc:
        raise ProofFileError(f"not a tlog-proof: {exc}") from None
    try:
        extra = json.loads(parsed.extra or b"")
        record = extra["record"]
        content, prev_hash, chain_hash = record["content"], record["prev_hash"], record["hash"]
        signers = extra["signers"]
        log_chain = signers[0]["chain_pem"]
        if extra.get("format") != FORMAT or not isinstance(content, dict):
            raise ValueError("not a govnode audit proof")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ProofFileError(f"the extra line is not a govnode audit proof ({exc})") from None
    # 1. The record hashes to its chain hash, which is the leaf.
    if content_hash(str(prev_hash), content) != chain_hash:
        raise ProofFileError("the record's fields do not hash to its chain hash: it was altered")
    if content.get("sequence") != parsed.index + 1:
        raise ProofFileError(
            f"the record is #{content.get('sequence')}, but the proof is for leaf {parsed.index}"
        )
    # 2. The log's node signed the checkpoint.
    try:
        identity, log_key = read_log_signer(log_chain, root, trust_domain, parsed.checkpoint)
        note, _ = open_note(parsed.checkpoint, [log_key])
        checkpoint = parse_checkpoint(note.text)
    except (KeyStatementError, NoteError, ValueError) as exc:
        raise ProofFileError(f"the log's signature on the checkpoint: {exc}") from None
    if origin_epoch(checkpoint.origin, identity.host) is None:
        raise ProofFileError(
            f"the checkpoint is of {checkpoint.origin[:80]!r}, but signed by {identity}"
        )
    # 3. Witnesses cosigned it.
    cosigned: list[tuple[str, dt.datetime]] = []
    for signer in signers[1:]:
        try:
            cosigner = read_witness_statement(
                str(signer["statement"]).encode(), str(signer["chain_pem"]), root, trust_domain
            )
            verified = verified_signatures(note, [cosigner.verifier])
        except (KeyStatementError, NoteError, KeyError, TypeError) as exc:
            raise ProofFileError(f"a witness's cosignature: {exc}") from None
        if cosigner.identity == identity or not verified:
            continue  # a log does not witness itself; a witness listed but absent proves nothing
        at = dt.datetime.fromtimestamp(cosignature_time(verified[0]), dt.UTC)
        cosigned.append((cosigner.identity.uri, at))
    if not cosigned:
        raise ProofFileError(
            "no witness cosigned the checkpoint: only the log vouches for it, which proves "
            "nothing about what it may have shown others"
        )
    if identity.region != province_of(identity.region):
        # A city's log is witnessed by its province (node.audit._policy); offline, the rule
        # for the province's own log (most of its cities) cannot be checked without the list
        # of cities, so there one city's cosignature is what is required.
        lacking = federation_rule(identity).missing(who for who, _ in cosigned)
        if lacking:
            raise ProofFileError(f"the checkpoint is not witnessed: it lacks {lacking}")
    # 4. The record is in the tree the checkpoint signs.
    try:
        verify_inclusion(
            leaf_hash(bytes.fromhex(chain_hash)),
            parsed.index,
            checkpoint.size,
            list(parsed.proof),
            checkpoint.root,
        )
    except (ProofError, ValueError) as exc:
        raise ProofFileError(f"the inclusion proof: {exc}") from None
    return CheckedProof(
        origin=checkpoint.origin,
        log_identity=identity.uri,
        sequence=parsed.index + 1,
        size=checkpoint.size,
        record=content,
        cosigned_by=tuple(cosigned),
    )
