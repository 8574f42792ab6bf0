"""Offline proofs of logging (c2sp.org/tlog-proof): everything a reader needs to check that an
entry is in a log, in one file, with nothing but the log's and the witnesses' public keys.

    c2sp.org/tlog-proof@v1
    extra <base64>          (optional, opaque and unauthenticated)
    index <n>
    <inclusion proof hashes, base64, one a line>

    <the checkpoint, a signed note, verbatim>

This is what a node hands a data provider for each use of its data (第三十九条).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from node.tlog._checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from node.tlog._hashing import HASH_SIZE
from node.tlog._note import NoteError, b64decode_strict, parse_note, quote
from node.tlog._policy import Policy
from node.tlog._proof import ProofError, verify_inclusion

HEADER = "c2sp.org/tlog-proof@v1"
#: An inclusion proof in a tree of fewer than 2**63 leaves has at most 63 hashes.
MAX_HASHES = 63
_INDEX = re.compile(r"index (0|[1-9][0-9]*)")


class TlogProofError(ValueError):
    """A tlog-proof file that the spec does not allow, or one that does not prove its entry."""


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def format_tlog_proof(p: TlogProof) -> bytes:
    if not 0 <= p.index < 2**63:
        raise TlogProofError(f"an index is in 0..2**63-1, not {p.index}")
    if len(p.proof) > MAX_HASHES or any(len(h) != HASH_SIZE for h in p.proof):
        raise TlogProofError(f"a proof is at most {MAX_HASHES} hashes of {HASH_SIZE} bytes")
    lines = [HEADER]
    if p.extra is not None:
        lines.append("extra " + base64.b64encode(p.extra).decode("ascii"))
    lines.append(f"index {p.index}")
    lines += (base64.b64encode(h).decode("ascii") for h in p.proof)
    return ("\n".join(lines) + "\n\n").encode("ascii") + p.checkpoint


def parse_tlog_proof(data: bytes, *, max_bytes: int = 131072) -> TlogProof:
    """Read a tlog-proof file; the checkpoint must be a well-formed signed checkpoint (verify
    it with :func:`verify_tlog_proof`)."""
    if len(data) > max_bytes:
        raise TlogProofError(f"the proof is {len(data)} bytes, more than the {max_bytes} allowed")
    head, blank, checkpoint = data.partition(b"\n\n")
    if not blank:
        raise TlogProofError("the proof has no blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise TlogProofError("the lines before the checkpoint are ASCII") from None
    if lines[0] != HEADER:
        raise TlogProofError(f"the first line is {HEADER!r}, not {quote(lines[0])}")
    at = 1
    extra = None
    if at < len(lines) and lines[at].startswith("extra "):
        extra = b64decode_strict(lines[at][len("extra ") :])
        if extra is None:
            raise TlogProofError(f"the extra line is not base64: {quote(lines[at])}")
        at += 1
    match = _INDEX.fullmatch(lines[at]) if at < len(lines) else None
    if match is None:
        line = lines[at] if at < len(lines) else ""
        raise TlogProofError(f"line {at + 1} is 'index <n>' in decimal: {quote(line)}")
    index = int(match.group(1))
    if index >= 2**63:
        raise TlogProofError(f"the index {index} is not below 2**63")
    hashes = lines[at + 1 :]
    if len(hashes) > MAX_HASHES:
        raise TlogProofError(f"{len(hashes)} proof hashes, more than {MAX_HASHES}")
    proof = []
    for number, line in enumerate(hashes, start=at + 2):
        raw = b64decode_strict(line)
        if raw is None or len(raw) != HASH_SIZE:
            raise TlogProofError(f"line {number} is not a base64 {HASH_SIZE}-byte hash")
        proof.append(raw)
    try:
        parse_checkpoint(parse_note(checkpoint).text)
    except (NoteError, CheckpointError) as exc:
        raise TlogProofError(f"the checkpoint is malformed: {exc}") from None
    return TlogProof(index, tuple(proof), checkpoint, extra)


def verify_tlog_proof(p: TlogProof, leaf: bytes, policy: Policy) -> Checkpoint:
    """tlog-proof's verification: the checkpoint is trusted by ``policy`` (a known log signed
    it, a quorum of witnesses cosigned it) and the proof puts leaf hash ``leaf`` at ``index``
    under its root. Returns the checkpoint; :class:`TlogProofError` otherwise."""
    try:
        checkpoint = policy.verify(p.checkpoint)
        verify_inclusion(leaf, p.index, checkpoint.size, p.proof, checkpoint.root)
    except (NoteError, CheckpointError, ProofError) as exc:
        raise TlogProofError(str(exc)) from None
    return checkpoint
