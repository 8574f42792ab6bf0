"""RFC 6962 §2.1 hashing (kept by RFC 9162 §2.1.1): SHA-256, with 0x00 before a leaf and 0x01
before two children, so no leaf can pass for an inner node (second preimages). The tree is
left-balanced and a lonely node is carried up unhashed, never duplicated."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def split(size: int) -> int:
    """The size of a tree's left subtree: the largest power of two below ``size`` (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaves already hashed with :func:`leaf_hash` (iterative, one pass per level)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])  # a lonely node moves up as it is
        level = paired
    return level[0]


class Frontier:
    """The incremental root: the roots of the complete subtrees along the tree's right edge,
    largest first (one per set bit of the size), so an append costs O(log n) hashes at most and
    the root O(log n) more, with O(log n) state to store."""

    __slots__ = ("_size", "_subtrees")

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if size < 0 or len(subtrees) != size.bit_count():
            raise ValueError(
                f"a frontier of size {size} has {size.bit_count()} subtrees, not {len(subtrees)}"
            )
        if any(len(h) != HASH_SIZE for h in subtrees):
            raise ValueError(f"subtree hashes are {HASH_SIZE} bytes")
        self._size = size
        self._subtrees = list(subtrees)

    @property
    def size(self) -> int:
        return self._size

    @property
    def subtrees(self) -> tuple[bytes, ...]:
        return tuple(self._subtrees)

    def append(self, leaf: bytes) -> list[bytes]:
        """Add one leaf hash (already hashed with :func:`leaf_hash`). Returns the subtrees the
        leaf completes, by level from 1 up: the one at level ``l`` covers the leaves
        ``[(size >> l) - 1 << l, size)`` of the new size (a store keeps the ones it wants)."""
        carried = leaf
        completed: list[bytes] = []
        # Each trailing set bit of the old size is a complete subtree the new leaf completes.
        size = self._size
        while size & 1:
            carried = node_hash(self._subtrees.pop(), carried)
            completed.append(carried)
            size >>= 1
        self._subtrees.append(carried)
        self._size += 1
        return completed

    def copy(self) -> Frontier:
        return Frontier(self._size, self._subtrees)

    def root(self) -> bytes:
        if not self._subtrees:
            return EMPTY_ROOT
        root = self._subtrees[-1]
        for left in reversed(self._subtrees[:-1]):
            root = node_hash(left, root)
        return root
