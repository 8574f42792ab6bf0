"""Inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2; verification as RFC 9162
§2.1.3.2 and §2.1.4.2).

Proofs are made from a :class:`SubtreeHashes` source, which answers the hash of a range of
leaves; the RFC's recursion asks it O(log n) times, and every range it asks for is either a
complete subtree aligned to its size or the right edge of the tree, so a store that keeps the
complete subtrees (node.audit) answers each in O(1) or O(log n) reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from node.tlog._hashing import HASH_SIZE, node_hash, root_of, split


class ProofError(ValueError):
    """A proof that does not prove what it claims, or a request for one that cannot exist."""


class SubtreeHashes(Protocol):
    def hash_range(self, start: int, end: int) -> bytes:
        """MTH of the leaves [start, end), end > start."""
        ...


class LeafList:
    """A :class:`SubtreeHashes` over leaf hashes in memory (tests, small trees, archives)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._leaves = leaves

    def hash_range(self, start: int, end: int) -> bytes:
        return root_of(self._leaves[start:end])


def complete_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as complete subtrees aligned to their size, largest first, as (start,
    level). For a range of a left-balanced tree (start a multiple of a power of two at least
    end - start), the range's MTH is the right fold of the pieces' hashes (:func:`fold`)."""
    pieces: list[tuple[int, int]] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        pieces.append((start, level))
        start += 1 << level
    return pieces


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of consecutive complete subtrees of decreasing size, given their hashes."""
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


class Wanted:
    """A :class:`SubtreeHashes` that answers nothing but notes each complete subtree a proof
    needs, so that a store can read them all at once (run the proof once with this, read
    :attr:`pieces`, then again with the hashes read)."""

    def __init__(self) -> None:
        self.pieces: set[tuple[int, int]] = set()

    def hash_range(self, start: int, end: int) -> bytes:
        self.pieces.update(complete_pieces(start, end))
        return bytes(HASH_SIZE)


class Pieces:
    """A :class:`SubtreeHashes` over hashes of complete subtrees, keyed (start, level)."""

    def __init__(self, hashes: Mapping[tuple[int, int], bytes]) -> None:
        self._hashes = hashes

    def hash_range(self, start: int, end: int) -> bytes:
        return fold([self._hashes[piece] for piece in complete_pieces(start, end)])


def inclusion_proof(index: int, size: int, tree: SubtreeHashes) -> list[bytes]:
    """PATH(index, D[0:size]): the audit path of leaf ``index`` in the tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    proof: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split(end - start)
        if m < k:
            proof.append(tree.hash_range(start + k, end))
            end = start + k
        else:
            proof.append(tree.hash_range(start, start + k))
            start, m = start + k, m - k
    proof.reverse()  # the recursion lists the top sibling last; we went top-down
    return proof


def consistency_proof(size1: int, size2: int, tree: SubtreeHashes) -> list[bytes]:
    """PROOF(size1, D[0:size2]): what shows the tree of ``size1`` leaves is a prefix of the
    tree of ``size2``. Empty when the sizes are equal."""
    if not 0 < size1 <= size2:
        raise ProofError(
            f"no consistency proof from size {size1} to size {size2}"
            + (": the empty tree is a prefix of every tree" if size1 == 0 else "")
        )
    if size1 == size2:
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, size2, size1, True
    while m != end - start:
        k = split(end - start)
        if m <= k:
            proof.append(tree.hash_range(start + k, end))
            end = start + k
        else:
            proof.append(tree.hash_range(start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(tree.hash_range(start, end))
    proof.reverse()
    return proof


def _check_hashes(proof: Sequence[bytes], *leaves: bytes) -> None:
    # Roots need no check: a root of another length can only fail to match.
    for h in (*proof, *leaves):
        if len(h) != HASH_SIZE:
            raise ProofError(f"a hash is {len(h)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf hash ``leaf`` at ``index`` in the
    tree of ``size`` leaves whose root is ``root`` (RFC 9162 §2.1.3.2)."""
    _check_hashes(proof, leaf)
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("the proof does not lead to the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the tree of ``size1`` leaves with root
    ``root1`` is a prefix of the tree of ``size2`` leaves with root ``root2`` (RFC 9162
    §2.1.4.2)."""
    _check_hashes(proof)
    if not 0 <= size1 <= size2:
        raise ProofError(f"a tree of size {size1} cannot be a prefix of one of size {size2}")
    if size1 == 0:
        # Every tree extends the empty one, so a proof from it shows nothing (and a verifier
        # that accepted one would accept anything).
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("trees of the same size need an empty proof")
        if root1 != root2:
            raise ProofError("two trees of the same size have different roots")
        return
    if not proof:
        raise ProofError("the proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the first tree is a subtree of the second
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the trees are deep")
    if fr != root1:
        raise ProofError("the proof does not lead to the first root")
    if sr != root2:
        raise ProofError("the proof does not lead to the second root")
