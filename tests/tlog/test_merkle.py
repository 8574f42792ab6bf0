"""The audit log's Merkle tree (node.tlog) against RFC 6962's reference tree and the published
proof vectors, and by properties: every proof made verifies, and any altered hash, index or size
fails."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import (
    EMPTY_ROOT,
    Frontier,
    LeafList,
    Pieces,
    ProofError,
    Wanted,
    complete_pieces,
    consistency_proof,
    fold,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# RFC 6962's reference tree, as published with transparency-dev/merkle (testonly/constants.go):
# eight leaf inputs, and the root of every prefix of them.
LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
REFERENCE = [leaf_hash(data) for data in LEAF_INPUTS]

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "rfc6962_vectors.json").read_text(encoding="utf-8")
)


def hashes(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


def test_roots_of_the_reference_tree() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    frontier = Frontier()
    assert frontier.root() == ROOTS[0]
    for size in range(1, len(REFERENCE) + 1):
        assert root_of(REFERENCE[:size]) == ROOTS[size]
        frontier.append(REFERENCE[size - 1])
        assert (frontier.size, frontier.root()) == (size, ROOTS[size])
        # What is stored of a frontier is enough to carry on from it.
        again = Frontier(frontier.size, frontier.subtrees)
        assert again.root() == ROOTS[size]


@pytest.mark.parametrize(
    "case",
    VECTORS["inclusion"],
    ids=[c["path"].removeprefix("testdata/") for c in VECTORS["inclusion"]],
)
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    leaf, root = base64.b64decode(case["leafHash"] or ""), base64.b64decode(case["root"] or "")
    proof = hashes(case["proof"])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, case["leafIdx"], case["treeSize"], proof, root)
        return
    verify_inclusion(leaf, case["leafIdx"], case["treeSize"], proof, root)
    if case["treeSize"] <= len(REFERENCE) and root == ROOTS[case["treeSize"]]:
        # A proof of the reference tree: the one we make is the published one.
        made = inclusion_proof(case["leafIdx"], case["treeSize"], LeafList(REFERENCE))
        assert made == proof


@pytest.mark.parametrize(
    "case",
    VECTORS["consistency"],
    ids=[c["path"].removeprefix("testdata/") for c in VECTORS["consistency"]],
)
def test_consistency_vectors(case: dict[str, Any]) -> None:
    root1, root2 = base64.b64decode(case["root1"] or ""), base64.b64decode(case["root2"] or "")
    proof = hashes(case["proof"])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(case["size1"], case["size2"], proof, root1, root2)
        return
    verify_consistency(case["size1"], case["size2"], proof, root1, root2)
    if case["size2"] <= len(REFERENCE) and root2 == ROOTS[case["size2"]]:
        made = consistency_proof(case["size1"], case["size2"], LeafList(REFERENCE))
        assert made == proof


def test_the_vectors_include_refusals() -> None:
    # The vector set would prove little if it held only happy paths.
    for kind in ("inclusion", "consistency"):
        wanted = [c["wantErr"] for c in VECTORS[kind]]
        assert (wanted.count(True), wanted.count(False)) == (92, 6)


def flipped(h: bytes, bit: int) -> bytes:
    return h[: bit // 8] + bytes([h[bit // 8] ^ (1 << bit % 8)]) + h[bit // 8 + 1 :]


leaves_st = st.lists(st.binary(min_size=0, max_size=8), min_size=1, max_size=300).map(
    lambda data: [leaf_hash(d + i.to_bytes(2, "big")) for i, d in enumerate(data)]
)


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_every_inclusion_proof_verifies_and_any_change_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size = len(leaves)
    root = root_of(leaves)
    tree = LeafList(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, size, tree)
    verify_inclusion(leaves[index], index, size, proof, root)
    assert len(proof) <= size.bit_length()

    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="at")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = [*proof[:at], flipped(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, proof[:-1], root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, size, [*proof, root], root)
    with pytest.raises(ProofError):
        verify_inclusion(flipped(leaves[index], 0), index, size, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], index, size, proof, flipped(root, 7))
    other = data.draw(st.integers(0, size).filter(lambda i: i != index), label="other index")
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], other, size, proof, root)
    # A proof is for one size: where another size's proof has another shape, this one fails
    # there. (Where the shapes agree the same root comes out, which is why a proof is always
    # checked against a checkpoint, whose signature binds the root to its size.)
    bigger = data.draw(st.integers(size + 1, 2 * size + 2), label="other size")
    if len(inclusion_proof(index, bigger, LeafList([*leaves, *leaves, *leaves]))) != len(proof):
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, bigger, proof, root)


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_every_consistency_proof_verifies_and_any_change_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    size2 = len(leaves)
    size1 = data.draw(st.integers(1, size2), label="size1")
    tree = LeafList(leaves)
    root1, root2 = root_of(leaves[:size1]), root_of(leaves)
    proof = consistency_proof(size1, size2, tree)
    verify_consistency(size1, size2, proof, root1, root2)
    assert len(proof) <= 2 * size2.bit_length()

    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="at")
        bit = data.draw(st.integers(0, 255), label="bit")
        bad = [*proof[:at], flipped(proof[at], bit), *proof[at + 1 :]]
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, bad, root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof[:-1], root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, [*proof, root2], root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, flipped(root1, 3), root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, flipped(root2, 3))
    if size1 < size2:
        # A log that rewrote one of the first size1 records cannot prove it extends root1.
        rewritten = list(leaves)
        rewritten[data.draw(st.integers(0, size1 - 1), label="rewritten")] = leaf_hash(b"forged")
        with pytest.raises(ProofError):
            verify_consistency(
                size1,
                size2,
                consistency_proof(size1, size2, LeafList(rewritten)),
                root1,
                root_of(rewritten),
            )


def test_consistency_between_every_pair_of_sizes_up_to_64() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(64)]
    frontier = Frontier()
    roots = [frontier.root()]
    for leaf in leaves:
        frontier.append(leaf)
        roots.append(frontier.root())
    tree = LeafList(leaves)
    for size2 in range(65):
        assert roots[size2] == root_of(leaves[:size2])
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, tree)
            verify_consistency(size1, size2, proof, roots[size1], roots[size2])


def test_impossible_requests_are_refused() -> None:
    tree = LeafList(REFERENCE)
    with pytest.raises(ProofError, match="leaf 8 is not in a tree of 8 leaves"):
        inclusion_proof(8, 8, tree)
    with pytest.raises(ProofError, match="from size 5 to size 4"):
        consistency_proof(5, 4, tree)
    with pytest.raises(ProofError, match="the empty tree is a prefix of every tree"):
        consistency_proof(0, 4, tree)
    with pytest.raises(ProofError, match="not 32"):
        verify_inclusion(b"short", 0, 1, [], ROOTS[1])
    with pytest.raises(ValueError, match="a frontier of size 3 has 2 subtrees, not 1"):
        Frontier(3, [ROOTS[1]])


def test_the_published_proofs_of_the_reference_tree_are_the_ones_we_make() -> None:
    made = 0
    for case in VECTORS["inclusion"]:
        size, root = case["treeSize"], base64.b64decode(case["root"] or "")
        if not case["wantErr"] and size <= len(REFERENCE) and root == ROOTS[size]:
            assert inclusion_proof(case["leafIdx"], size, LeafList(REFERENCE)) == hashes(
                case["proof"]
            )
            made += 1
    for case in VECTORS["consistency"]:
        size2, root2 = case["size2"], base64.b64decode(case["root2"] or "")
        if not case["wantErr"] and size2 <= len(REFERENCE) and root2 == ROOTS[size2]:
            proof = consistency_proof(case["size1"], size2, LeafList(REFERENCE))
            assert proof == hashes(case["proof"])
            made += 1
    assert made == 10  # five happy paths of each kind are proofs of the reference tree


def test_proofs_from_stored_pieces_are_the_proofs_from_the_leaves() -> None:
    """What a store does (node.audit): ask which complete subtrees a proof needs, read only
    those, and make the same proof."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    tree = LeafList(leaves)

    def stored(wanted: Wanted) -> Pieces:
        return Pieces(
            {
                (start, level): root_of(leaves[start : start + (1 << level)])
                for start, level in wanted.pieces
            }
        )

    for size in range(1, 71):
        pieces = complete_pieces(0, size)
        assert [1 << level for _, level in pieces] == [
            1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1
        ]
        assert fold([root_of(leaves[s : s + (1 << lv)]) for s, lv in pieces]) == root_of(
            leaves[:size]
        )
        for index in range(size):
            wanted = Wanted()
            inclusion_proof(index, size, wanted)
            assert len(wanted.pieces) <= 2 * size.bit_length()
            assert inclusion_proof(index, size, stored(wanted)) == inclusion_proof(
                index, size, tree
            )
        for size1 in range(1, size + 1):
            wanted = Wanted()
            consistency_proof(size1, size, wanted)
            assert consistency_proof(size1, size, stored(wanted)) == consistency_proof(
                size1, size, tree
            )
