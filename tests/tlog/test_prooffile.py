"""Offline proofs (node.tlog._prooffile): c2sp.org/tlog-proof's format against
transparency-dev/formats' marshalling vectors (proof/tlog_proof_test.go, Apache-2.0, Google
LLC), its refusals, and verification end to end with a policy."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import (
    TlogProof,
    TlogProofError,
    add_signatures,
    format_tlog_proof,
    parse_policy,
    parse_tlog_proof,
    verify_tlog_proof,
    vkey,
)
from tests.tlog.logs import ToyLog, ed25519_key, witness

H1, H2 = hashlib.sha256(b"hash1").digest(), hashlib.sha256(b"hash2").digest()
B1, B2 = base64.b64encode(H1).decode(), base64.b64encode(H2).decode()
EXTRA = base64.b64encode(b"extra information").decode()


@pytest.mark.parametrize(
    ("proof", "want"),
    [
        (
            TlogProof(5, (H1, H2), b"test checkpoint\n"),
            f"c2sp.org/tlog-proof@v1\nindex 5\n{B1}\n{B2}\n\ntest checkpoint\n",
        ),
        (
            TlogProof(10, (H1,), b"checkpoint data\n", b"extra information"),
            f"c2sp.org/tlog-proof@v1\nextra {EXTRA}\nindex 10\n{B1}\n\ncheckpoint data\n",
        ),
        (TlogProof(0, (), b"checkpoint\n"), "c2sp.org/tlog-proof@v1\nindex 0\n\ncheckpoint\n"),
    ],
)
def test_transparency_dev_marshalling_vectors(proof: TlogProof, want: str) -> None:
    assert format_tlog_proof(proof) == want.encode()


LOG = ToyLog(size=11)
POLICY = parse_policy(
    f"log {vkey(LOG.origin, LOG.signer.verifier().public_key, 0x02)}\n"
    f"witness fuzhou {vkey('fuzhou', ed25519_key('witness fuzhou').public_key(), 0x04)}\n"
    "quorum fuzhou\n"
)
NOTE = add_signatures(LOG.note(), witness("fuzhou"))


def proof_of(index: int, extra: bytes | None = None) -> TlogProof:
    return TlogProof(index, LOG.inclusion(index), NOTE, extra)


def test_round_trip_and_verification() -> None:
    for index in range(11):
        proof = proof_of(index, b"record 7" if index == 7 else None)
        data = format_tlog_proof(proof)
        assert parse_tlog_proof(data) == proof
        checkpoint = verify_tlog_proof(parse_tlog_proof(data), LOG.leaves[index], POLICY)
        assert checkpoint == LOG.checkpoint()


def test_an_empty_extra_line_survives() -> None:
    data = format_tlog_proof(proof_of(3, b""))
    assert b"\nextra \n" in data
    assert parse_tlog_proof(data).extra == b""


def test_verification_refuses_what_it_cannot_prove() -> None:
    with pytest.raises(TlogProofError, match="does not lead to the root"):
        verify_tlog_proof(proof_of(3), LOG.leaves[4], POLICY)
    wrong_index = TlogProof(4, LOG.inclusion(3), NOTE)
    with pytest.raises(TlogProofError):
        verify_tlog_proof(wrong_index, LOG.leaves[3], POLICY)
    uncosigned = TlogProof(3, LOG.inclusion(3), LOG.note())
    with pytest.raises(TlogProofError, match="witness fuzhou has not cosigned"):
        verify_tlog_proof(uncosigned, LOG.leaves[3], POLICY)


GOOD = format_tlog_proof(proof_of(2)).decode()
HEAD, _, CHECKPOINT = GOOD.partition("\n\n")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (GOOD.replace("c2sp.org/tlog-proof@v1", "wrong-header"), "first line"),
        (GOOD.replace("@v1", "@v2"), "first line"),
        (GOOD.replace("index 2", "extra !!notbase64!!\nindex 2"), "extra line is not base64"),
        ("c2sp.org/tlog-proof@v1\n\n\n" + CHECKPOINT, "'index <n>'"),
        (GOOD.replace("index 2", "index notanumber"), "'index <n>'"),
        (GOOD.replace("index 2", "index -5"), "'index <n>'"),
        (GOOD.replace("index 2", "index 02"), "'index <n>'"),
        (GOOD.replace("index 2", f"index {2**63}"), "not below 2\\*\\*63"),
        (HEAD + "\n!!notbase64!!\n\n" + CHECKPOINT, "is not a base64 32-byte hash"),
        (
            HEAD + "\n" + base64.b64encode(bytes(64)).decode() + "\n\n" + CHECKPOINT,
            "is not a base64 32-byte hash",
        ),
        (
            "c2sp.org/tlog-proof@v1\nindex 0\n" + "\n".join([B1] * 64) + "\n\n" + CHECKPOINT,
            "64 proof hashes, more than 63",
        ),
        (HEAD, "no blank line"),
        (HEAD + "\n\ncheckpoint\n", "checkpoint is malformed"),
        (HEAD + "\n\nhello\n\n— x AAAAAAA=\n", "checkpoint is malformed"),
        ("c2sp.org/tlog-proof@v1\nindex 0\nü\n\n" + CHECKPOINT, "ASCII"),
    ],
)
def test_refusals(data: str, problem: str) -> None:
    with pytest.raises(TlogProofError, match=problem):
        parse_tlog_proof(data.encode())


def test_size_is_bounded() -> None:
    with pytest.raises(TlogProofError, match="more than the 100 allowed"):
        parse_tlog_proof(GOOD.encode(), max_bytes=100)


def test_format_refuses_what_cannot_be_read_back() -> None:
    with pytest.raises(TlogProofError):
        format_tlog_proof(TlogProof(-1, (), NOTE))
    with pytest.raises(TlogProofError):
        format_tlog_proof(TlogProof(0, (b"short",), NOTE))


@settings(max_examples=100, deadline=None)
@given(
    index=st.integers(0, 2**63 - 1),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=63),
    extra=st.none() | st.binary(max_size=100),
)
def test_round_trip_property(index: int, proof: list[bytes], extra: bytes | None) -> None:
    p = TlogProof(index, tuple(proof), NOTE, extra)
    assert parse_tlog_proof(format_tlog_proof(p)) == p
