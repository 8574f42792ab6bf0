"""The origins of a node's audit log (第三十九条): its first, and ``…/audit/<epoch>`` for each
log it went on as after a restore lost witnessed records. Nothing else passes for one of them:
a verifier takes a checkpoint's origin as the node's only when it is one of these."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from node.audit import claimed_origin, epoch_origin, log_origin, origin_epoch, origin_parts
from node.tlog import Checkpoint, EcdsaSigner, sign_note

HOST = "350100.fujian.gov.cn"


def test_the_first_origin_and_each_epoch() -> None:
    assert log_origin(HOST) == f"{HOST}/audit"
    assert log_origin(HOST, 2) == f"{HOST}/audit/2"
    assert epoch_origin(f"{HOST}/audit", 0) == f"{HOST}/audit"
    assert origin_epoch(f"{HOST}/audit", HOST) == 0
    assert origin_epoch(f"{HOST}/audit/7", HOST) == 7
    assert origin_parts(f"{HOST}/audit/7") == (f"{HOST}/audit", 7)
    assert origin_parts(f"{HOST}/audit") == (f"{HOST}/audit", 0)


@pytest.mark.parametrize(
    "origin",
    [
        f"{HOST}/audit/0",  # epoch 0 is the first origin itself
        f"{HOST}/audit/01",
        f"{HOST}/audit/-1",
        f"{HOST}/audit/1/2",
        f"{HOST}/audit/x",
        f"{HOST}/audit/١",  # an Arabic-Indic digit: isdigit() but not ASCII
        f"{HOST}/audit/10000000",
        f"{HOST}/audits/1",
        "350200.fujian.gov.cn/audit/1",
        f"evil/{HOST}/audit/1",
        "",
    ],
)
def test_nothing_else_is_an_origin_of_the_node(origin: str) -> None:
    assert origin_epoch(origin, HOST) is None


def test_the_origin_a_note_claims_is_read_unverified() -> None:
    note = sign_note(
        Checkpoint(log_origin(HOST, 3), 5, b"\0" * 32).body(),
        EcdsaSigner(log_origin(HOST, 3), ec.generate_private_key(ec.SECP256R1())),
    )
    assert claimed_origin(note) == log_origin(HOST, 3)
    assert claimed_origin(b"not a note") == ""
