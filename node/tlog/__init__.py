"""Transparency-log arithmetic for the audit log (第三十九条): RFC 6962 / RFC 9162 Merkle trees.

The audit log's records are already hash-chained; the Merkle tree over their chain hashes is what
lets a node prove, in O(log n) hashes, that a record is in its log (inclusion) and that today's
log extends the one it showed yesterday (consistency), to anyone holding only a root.

- ``_hashing``: leaf and inner-node hashes with RFC 6962's domain separation, the root of a list
  of leaves, and :class:`Frontier`, the incremental root (the complete subtrees on the right edge);
- ``_proof``: inclusion and consistency proofs, made from any source of subtree hashes, and their
  verification exactly as RFC 9162 §2.1.3.2 and §2.1.4.2 describe.

Pure computation: no storage, no grpc.
"""

from __future__ import annotations

from node.tlog._hashing import EMPTY_ROOT, HASH_SIZE, Frontier, leaf_hash, node_hash, root_of
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

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "LeafList",
    "Pieces",
    "ProofError",
    "SubtreeHashes",
    "Wanted",
    "complete_pieces",
    "consistency_proof",
    "fold",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]
