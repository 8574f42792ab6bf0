"""The witness side of c2sp.org/tlog-witness, as a pure state machine: parse an add-checkpoint
request, run every check the spec lists in its order, and cosign. Storage is the caller's: it
reads the :class:`WitnessState` for the origin, calls :func:`check_add_checkpoint`, and
replaces the state with the returned checkpoint's (size, root) by an atomic compare-and-swap
on the old size before it answers with :func:`cosign` (else the spec's rollback race opens).

A refusal's ``kind`` and the HTTP status tlog-witness gives it:

=================  ====  =========================================================
unknown_origin     404   no log with this origin is configured
bad_signature      403   no trusted log key signed it, or a trusted key's signature fails
bad_request        400   a malformed body, or old size > checkpoint size
conflict           409   old size is not the size last cosigned; ``size`` is that size
                         (body ``<size>\\n``, Content-Type ``text/x.tlog.size``)
inconsistent_root  422   same size, another root (or size 0 without the empty root)
bad_proof          422   the consistency proof is not empty from size 0, or fails
=================  ====  =========================================================
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from node.tlog._checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from node.tlog._hashing import EMPTY_ROOT, HASH_SIZE
from node.tlog._note import (
    CosignatureSigner,
    NoteError,
    NoteSignature,
    Verifier,
    b64decode_strict,
    parse_note,
    quote,
    verified_signatures,
)
from node.tlog._proof import ProofError, verify_consistency

MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]*)")

RefusalKind = Literal[
    "unknown_origin", "bad_signature", "bad_request", "conflict", "inconsistent_root", "bad_proof"
]
HTTP_STATUS: Mapping[RefusalKind, int] = {
    "unknown_origin": 404,
    "bad_signature": 403,
    "bad_request": 400,
    "conflict": 409,
    "inconsistent_root": 422,
    "bad_proof": 422,
}


class WitnessRefusal(Exception):
    """Why a witness will not cosign; see the module docstring for the HTTP statuses."""

    def __init__(self, kind: RefusalKind, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind
        self.size = size
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes  # the signed checkpoint note


@dataclass(frozen=True)
class WitnessState:
    """What a witness last cosigned for an origin."""

    size: int
    root: bytes

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.root) != HASH_SIZE:
            raise ValueError(f"a witness state is a size >= 0 and a {HASH_SIZE}-byte root")


def parse_add_checkpoint(body: bytes, *, max_bytes: int = 65536) -> AddCheckpoint:
    """``old N``, 0..63 base64 hash lines, a blank line, the signed checkpoint. Refuses with
    kind ``bad_request`` (the checkpoint note itself is checked by
    :func:`check_add_checkpoint`)."""

    def bad(message: str) -> WitnessRefusal:
        return WitnessRefusal("bad_request", message)

    if len(body) > max_bytes:
        raise bad(f"the request is {len(body)} bytes, more than the {max_bytes} allowed")
    head, blank, checkpoint = body.partition(b"\n\n")
    if not blank:
        raise bad("the request has no blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise bad("the old size and proof lines are ASCII") from None
    match = _OLD.fullmatch(lines[0])
    if not match:
        raise bad(f"the first line is 'old <size>' in decimal: {quote(lines[0])}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise bad(f"{len(lines) - 1} proof lines, more than {MAX_PROOF_LINES}")
    proof = []
    for number, line in enumerate(lines[1:], start=2):
        raw = b64decode_strict(line)
        if raw is None or len(raw) != HASH_SIZE:
            raise bad(f"line {number} is not a base64 {HASH_SIZE}-byte hash: {quote(line)}")
        proof.append(raw)
    return AddCheckpoint(int(match.group(1)), tuple(proof), checkpoint)


def format_add_checkpoint(req: AddCheckpoint) -> bytes:
    if req.old_size < 0 or len(req.proof) > MAX_PROOF_LINES:
        raise ValueError(f"old size >= 0 and at most {MAX_PROOF_LINES} proof hashes")
    lines = [f"old {req.old_size}", *(base64.b64encode(h).decode("ascii") for h in req.proof)]
    return ("\n".join(lines) + "\n\n").encode("ascii") + req.checkpoint


def check_add_checkpoint(
    req: AddCheckpoint,
    *,
    log_verifiers: Mapping[str, Sequence[Verifier]],
    state: WitnessState | None,
) -> Checkpoint:
    """Every check of tlog-witness's add-checkpoint, in the spec's order; the checkpoint to
    persist (and then cosign) if all pass, else :class:`WitnessRefusal`. ``log_verifiers``
    holds the trusted log keys by origin; ``state`` is the last cosigned (size, root) for the
    checkpoint's origin, None if the witness never cosigned one."""
    try:
        note = parse_note(req.checkpoint)
        checkpoint = parse_checkpoint(note.text)
    except (NoteError, CheckpointError) as exc:
        raise WitnessRefusal("bad_request", f"the checkpoint is malformed: {exc}") from None

    verifiers = log_verifiers.get(checkpoint.origin)
    if not verifiers:
        raise WitnessRefusal("unknown_origin", f"unknown log {quote(checkpoint.origin)}")
    try:
        signed = verified_signatures(note, verifiers)
    except NoteError as exc:
        raise WitnessRefusal("bad_signature", str(exc)) from None
    if not signed:
        raise WitnessRefusal(
            "bad_signature", f"no trusted key of {quote(checkpoint.origin)} signed the checkpoint"
        )

    old, size = req.old_size, checkpoint.size
    if old > size:
        raise WitnessRefusal("bad_request", f"old size {old} is above the checkpoint's {size}")
    known_size, known_root = (0, EMPTY_ROOT) if state is None else (state.size, state.root)
    if old != known_size:
        raise WitnessRefusal(
            "conflict",
            f"old size {old} is not {known_size}, the size last cosigned",
            size=known_size,
        )
    if size == 0 and checkpoint.root != EMPTY_ROOT:
        raise WitnessRefusal("inconsistent_root", "a tree of size 0 has the empty tree's root")
    if old == 0:
        if req.proof:
            raise WitnessRefusal("bad_proof", "a proof from size 0 is empty")
    elif old == size:
        if req.proof:
            raise WitnessRefusal("bad_proof", "a proof between equal sizes is empty")
        if checkpoint.root != known_root:
            raise WitnessRefusal("inconsistent_root", f"size {size} was cosigned with another root")
    else:
        try:
            verify_consistency(old, size, req.proof, known_root, checkpoint.root)
        except ProofError as exc:
            raise WitnessRefusal(
                "bad_proof", f"no consistency from size {old} to {size}: {exc}"
            ) from None
    return checkpoint


def cosign(checkpoint_note: bytes, signer: CosignatureSigner) -> bytes:
    """The 200 answer of add-checkpoint: the witness's cosignature line on the checkpoint.
    Merge it into the note with :func:`node.tlog.add_signature_lines`."""
    text = parse_note(checkpoint_note).text
    sig = NoteSignature(signer.name, signer.key_id, signer.sign(text.encode("utf-8")))
    return sig.line().encode("utf-8")
