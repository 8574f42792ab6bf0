"""Transparency logs for the audit log (第三十九条): RFC 6962 / RFC 9162 Merkle trees and the
C2SP formats built on them (c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature,
tlog-witness, tlog-policy, tlog-proof), followed to the byte.

The audit log's records are already hash-chained; the Merkle tree over their chain hashes is what
lets a node prove, in O(log n) hashes, that a record is in its log (inclusion) and that today's
log extends the one it showed yesterday (consistency), to anyone holding only a root.

- ``_hashing``: leaf and inner-node hashes with RFC 6962's domain separation, the root of a list
  of leaves, and :class:`Frontier`, the incremental root (the complete subtrees on the right edge);
- ``_proof``: inclusion and consistency proofs, made from any source of subtree hashes, and their
  verification exactly as RFC 9162 §2.1.3.2 and §2.1.4.2 describe;
- ``_checkpoint``: the checkpoint text (origin, size, root, extension lines);
- ``_note``: signed notes, their Ed25519 (0x01), ECDSA (0x02) and timestamped cosignature
  (0x04) keys, and vkeys;
- ``_policy``: tlog-policy files: the trusted logs, the witnesses and the quorum;
- ``_witness``: tlog-witness's add-checkpoint as a pure state machine, and cosigning;
- ``_prooffile``: tlog-proof, the offline proof that an entry is in a log.

Pure computation: no storage, no grpc, no asyncio.
"""

from __future__ import annotations

from node.tlog._checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from node.tlog._hashing import EMPTY_ROOT, HASH_SIZE, Frontier, leaf_hash, node_hash, root_of
from node.tlog._note import (
    TYPE_COSIGNATURE_V1,
    TYPE_ECDSA,
    TYPE_ED25519,
    CosignatureSigner,
    CosignatureVerifier,
    EcdsaSigner,
    EcdsaVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    Note,
    NoteError,
    NoteSignature,
    Signer,
    Verifier,
    add_signature_lines,
    add_signatures,
    cosignature_time,
    format_note,
    open_note,
    parse_note,
    parse_signature_lines,
    parse_vkey,
    sign_note,
    verified_signatures,
    vkey,
)
from node.tlog._policy import Group, Policy, PolicyError, parse_policy
from node.tlog._proof import (
    LeafList,
    Pieces,
    ProofError,
    SubtreeHashes,
    Wanted,
    complete_pieces,
    consistency_proof,
    fold,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from node.tlog._prooffile import (
    TlogProof,
    TlogProofError,
    format_tlog_proof,
    parse_tlog_proof,
    verify_tlog_proof,
)
from node.tlog._witness import (
    AddCheckpoint,
    WitnessRefusal,
    WitnessState,
    check_add_checkpoint,
    cosign,
    format_add_checkpoint,
    parse_add_checkpoint,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TYPE_COSIGNATURE_V1",
    "TYPE_ECDSA",
    "TYPE_ED25519",
    "AddCheckpoint",
    "Checkpoint",
    "CheckpointError",
    "CosignatureSigner",
    "CosignatureVerifier",
    "EcdsaSigner",
    "EcdsaVerifier",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Frontier",
    "Group",
    "LeafList",
    "Note",
    "NoteError",
    "NoteSignature",
    "Pieces",
    "Policy",
    "PolicyError",
    "ProofError",
    "Signer",
    "SubtreeHashes",
    "TlogProof",
    "TlogProofError",
    "Verifier",
    "Wanted",
    "WitnessRefusal",
    "WitnessState",
    "add_signature_lines",
    "add_signatures",
    "check_add_checkpoint",
    "complete_pieces",
    "consistency_proof",
    "cosign",
    "cosignature_time",
    "fold",
    "format_add_checkpoint",
    "format_note",
    "format_tlog_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_note",
    "parse_add_checkpoint",
    "parse_checkpoint",
    "parse_note",
    "parse_policy",
    "parse_signature_lines",
    "parse_tlog_proof",
    "parse_vkey",
    "root_of",
    "sign_note",
    "verified_signatures",
    "verify_consistency",
    "verify_inclusion",
    "verify_tlog_proof",
    "vkey",
]
