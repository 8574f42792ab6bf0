"""A toy transparency log for the tlog tests: leaves in memory, a log key, signed checkpoints
and proofs at any size; keys from fixed seeds so that failures reproduce."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from node.tlog import (
    Checkpoint,
    CosignatureSigner,
    EcdsaSigner,
    LeafList,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    sign_note,
)


def ed25519_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def ecdsa_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big")
    return ec.derive_private_key(scalar, ec.SECP256R1())


def witness(name: str, clock: int = 1_700_000_000) -> CosignatureSigner:
    return CosignatureSigner(name, ed25519_key("witness " + name), clock=lambda: clock)


class ToyLog:
    def __init__(self, origin: str = "fj.gov.cn/province/audit", size: int = 0) -> None:
        self.origin = origin
        self.signer = EcdsaSigner(origin, ecdsa_key("log " + origin))
        self.leaves: list[bytes] = []
        self.grow(size)

    def grow(self, count: int) -> None:
        start = len(self.leaves)
        self.leaves += [leaf_hash(f"record {i}".encode()) for i in range(start, start + count)]

    def checkpoint(self, size: int | None = None) -> Checkpoint:
        size = len(self.leaves) if size is None else size
        return Checkpoint(self.origin, size, root_of(self.leaves[:size]))

    def note(self, size: int | None = None) -> bytes:
        return sign_note(self.checkpoint(size).body(), self.signer)

    def consistency(self, old: int, new: int | None = None) -> tuple[bytes, ...]:
        new = len(self.leaves) if new is None else new
        if old == 0:
            return ()
        return tuple(consistency_proof(old, new, LeafList(self.leaves)))

    def inclusion(self, index: int, size: int | None = None) -> tuple[bytes, ...]:
        size = len(self.leaves) if size is None else size
        return tuple(inclusion_proof(index, size, LeafList(self.leaves)))
