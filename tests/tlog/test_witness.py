"""The witness's add-checkpoint (node.tlog._witness): the request format of
c2sp.org/tlog-witness, every check in its order with the status it maps to, and cosigning; an
honest log is always cosigned and a forked one never."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import (
    EMPTY_ROOT,
    AddCheckpoint,
    Checkpoint,
    CosignatureVerifier,
    EcdsaSigner,
    Verifier,
    WitnessRefusal,
    WitnessState,
    add_signature_lines,
    add_signatures,
    check_add_checkpoint,
    cosign,
    cosignature_time,
    format_add_checkpoint,
    open_note,
    parse_add_checkpoint,
    sign_note,
)
from tests.tlog.logs import ToyLog, ecdsa_key, ed25519_key, witness

# c2sp.org/tlog-witness, the example request body.
SPEC_BODY = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv"
    "2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()


def keys(log: ToyLog) -> dict[str, Sequence[Verifier]]:
    return {log.origin: [log.signer.verifier()]}


def request(log: ToyLog, old: int, size: int | None = None) -> AddCheckpoint:
    return AddCheckpoint(old, log.consistency(old, size), log.note(size))


def refusal(req: AddCheckpoint, log: ToyLog, state: WitnessState | None) -> WitnessRefusal:
    with pytest.raises(WitnessRefusal) as caught:
        check_add_checkpoint(req, log_verifiers=keys(log), state=state)
    return caught.value


def state_of(checkpoint: Checkpoint) -> WitnessState:
    return WitnessState(checkpoint.size, checkpoint.root)


# -- the request body ------------------------------------------------------------------------


def test_the_spec_example_request_parses_and_formats_back() -> None:
    req = parse_add_checkpoint(SPEC_BODY)
    assert req.old_size == 20852014
    assert len(req.proof) == 4
    assert req.checkpoint.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert format_add_checkpoint(req) == SPEC_BODY


def test_a_request_without_proof() -> None:
    req = request(ToyLog(size=3), 0)
    body = format_add_checkpoint(req)
    assert body.startswith(b"old 0\n\n")
    assert parse_add_checkpoint(body) == req


HASH = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"old 5\n", "no blank line"),
        (b"old 05\n\nx", "'old <size>'"),
        (b"old -5\n\nx", "'old <size>'"),
        (b"new 5\n\nx", "'old <size>'"),
        (b"old 5 \n\nx", "'old <size>'"),
        (("old 5\n" + f"{HASH}\n" * 64 + "\nx").encode(), "64 proof lines, more than 63"),
        (b"old 5\nAAAA\n\nx", "line 2 is not a base64 32-byte hash"),
        (f"old 5\n{HASH[:-1]}\n\nx".encode(), "line 2 is not"),
        ("old 5\nü\n\nx".encode(), "ASCII"),
    ],
)
def test_malformed_requests_are_bad_requests(body: bytes, problem: str) -> None:
    with pytest.raises(WitnessRefusal, match=problem) as caught:
        parse_add_checkpoint(body)
    assert (caught.value.kind, caught.value.http_status) == ("bad_request", 400)


def test_63_proof_lines_are_allowed_and_size_is_bounded() -> None:
    body = ("old 5\n" + f"{HASH}\n" * 63 + "\nx").encode()
    assert len(parse_add_checkpoint(body).proof) == 63
    with pytest.raises(WitnessRefusal, match="more than the 100 allowed"):
        parse_add_checkpoint(body, max_bytes=100)


# -- the checks, in the spec's order ---------------------------------------------------------


def test_first_cosignature_then_growth() -> None:
    log = ToyLog(size=5)
    first = check_add_checkpoint(request(log, 0), log_verifiers=keys(log), state=None)
    assert first == log.checkpoint()
    log.grow(8)
    second = check_add_checkpoint(request(log, 5), log_verifiers=keys(log), state=state_of(first))
    assert second.size == 13
    # The same checkpoint again (a retry) is cosigned again.
    again = check_add_checkpoint(request(log, 13), log_verifiers=keys(log), state=state_of(second))
    assert again == second


def test_unknown_origin() -> None:
    log, other = ToyLog(size=2), ToyLog("fz.fj.gov.cn/audit", size=2)
    with pytest.raises(WitnessRefusal) as caught:
        check_add_checkpoint(request(other, 0), log_verifiers=keys(log), state=None)
    assert (caught.value.kind, caught.value.http_status) == ("unknown_origin", 404)


def test_signed_by_a_key_the_witness_does_not_trust() -> None:
    log = ToyLog(size=2)
    impostor = EcdsaSigner(log.origin, ecdsa_key("impostor"))
    req = AddCheckpoint(0, (), sign_note(log.checkpoint().body(), impostor))
    got = refusal(req, log, None)
    assert (got.kind, got.http_status) == ("bad_signature", 403)
    assert "no trusted key" in got.message


def test_a_trusted_key_whose_signature_fails() -> None:
    log = ToyLog(size=2)
    forged = log.note().replace(b"\n2\n", b"\n3\n")
    got = refusal(AddCheckpoint(0, (), forged), log, None)
    assert (got.kind, got.http_status) == ("bad_signature", 403)
    assert "does not verify" in got.message


def test_a_malformed_checkpoint_is_a_bad_request() -> None:
    log = ToyLog(size=2)
    not_a_checkpoint = sign_note("hello\n", log.signer)
    assert refusal(AddCheckpoint(0, (), not_a_checkpoint), log, None).kind == "bad_request"
    assert refusal(AddCheckpoint(0, (), b"\xff\n\n"), log, None).kind == "bad_request"


def test_old_size_above_the_checkpoint() -> None:
    log = ToyLog(size=4)
    got = refusal(AddCheckpoint(5, (), log.note()), log, WitnessState(5, bytes(32)))
    assert (got.kind, got.http_status) == ("bad_request", 400)


def test_rollback_is_a_conflict_carrying_the_witness_size() -> None:
    log = ToyLog(size=10)
    seen = state_of(log.checkpoint(10))
    got = refusal(request(log, 5, 7), log, seen)
    assert (got.kind, got.http_status, got.size) == ("conflict", 409, 10)
    # A log that lost its place asks with old 0 and learns the size.
    got = refusal(request(log, 0), log, seen)
    assert (got.kind, got.size) == ("conflict", 10)


def test_a_witness_that_never_cosigned_expects_old_zero() -> None:
    log = ToyLog(size=10)
    got = refusal(request(log, 4), log, None)
    assert (got.kind, got.size) == ("conflict", 0)


def test_a_fork_at_the_same_size() -> None:
    log, fork = ToyLog(size=6), ToyLog(size=0)
    fork.leaves = [*log.leaves[:5], b"\x01" * 32]
    fork.signer = log.signer
    got = refusal(request(fork, 6), log, state_of(log.checkpoint()))
    assert (got.kind, got.http_status) == ("inconsistent_root", 422)


def test_size_zero_has_the_empty_root() -> None:
    log = ToyLog(size=0)
    assert check_add_checkpoint(request(log, 0), log_verifiers=keys(log), state=None).root == (
        EMPTY_ROOT
    )
    wrong = sign_note(Checkpoint(log.origin, 0, bytes(32)).body(), log.signer)
    assert refusal(AddCheckpoint(0, (), wrong), log, None).kind == "inconsistent_root"


def test_proofs_that_do_not_prove() -> None:
    log = ToyLog(size=9)
    seen = state_of(log.checkpoint(4))
    good = request(log, 4)
    flipped = (bytes([good.proof[0][0] ^ 1]) + good.proof[0][1:], *good.proof[1:])
    for proof in (flipped, good.proof[:-1], (), (*good.proof, bytes(32))):
        got = refusal(AddCheckpoint(4, proof, good.checkpoint), log, seen)
        assert (got.kind, got.http_status) == ("bad_proof", 422)
    got = refusal(AddCheckpoint(0, (bytes(32),), log.note()), log, None)
    assert got.kind == "bad_proof"
    got = refusal(AddCheckpoint(9, (bytes(32),), log.note()), log, state_of(log.checkpoint()))
    assert got.kind == "bad_proof"


def test_a_proof_against_another_old_root() -> None:
    log = ToyLog(size=9)
    got = refusal(request(log, 4), log, WitnessState(4, bytes(32)))
    assert got.kind == "bad_proof"


# -- cosigning -------------------------------------------------------------------------------


def test_cosign_answers_lines_that_merge_into_the_note() -> None:
    log = ToyLog(size=3)
    w1 = witness("witness.fz.fj.gov.cn", clock=1_800_000_000)
    note = log.note()
    answer = cosign(note, w1)
    assert answer.startswith("— witness.fz.fj.gov.cn ".encode())
    assert answer.endswith(b"\n")
    assert answer.count(b"\n") == 1
    merged = add_signature_lines(note, answer)
    assert merged == add_signatures(note, w1)
    verifier = CosignatureVerifier(
        "witness.fz.fj.gov.cn", ed25519_key("witness " + w1.name).public_key()
    )
    _, verified = open_note(merged, [verifier])
    assert cosignature_time(verified[0]) == 1_800_000_000


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6))
def test_an_honest_log_is_always_cosigned(sizes: list[int]) -> None:
    log = ToyLog()
    state: WitnessState | None = None
    for step in sizes:
        log.grow(step)
        old = 0 if state is None else state.size
        checkpoint = check_add_checkpoint(request(log, old), log_verifiers=keys(log), state=state)
        state = state_of(checkpoint)
    assert state is not None and state.size == len(log.leaves)


@settings(max_examples=60, deadline=None)
@given(old=st.integers(1, 30), extra=st.integers(0, 30), at=st.integers(0, 60))
def test_a_forked_log_is_never_cosigned(old: int, extra: int, at: int) -> None:
    log = ToyLog(size=old)
    seen = state_of(log.checkpoint())
    log.grow(extra)
    fork = ToyLog(size=0)
    fork.signer = log.signer
    fork.leaves = list(log.leaves)
    at %= old  # rewrite a leaf the witness has already seen
    fork.leaves[at] = bytes([fork.leaves[at][0] ^ 1]) + fork.leaves[at][1:]
    with pytest.raises(WitnessRefusal) as caught:
        check_add_checkpoint(request(fork, old), log_verifiers=keys(log), state=seen)
    assert caught.value.kind in ("bad_proof", "inconsistent_root")
