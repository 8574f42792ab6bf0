"""Trust policies (node.tlog._policy): c2sp.org/tlog-policy's grammar and its refusals by line,
quorums of nested groups, and checking a cosigned checkpoint against a policy."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tlog import (
    EcdsaSigner,
    NoteError,
    PolicyError,
    add_signatures,
    parse_policy,
    vkey,
)
from tests.tlog.logs import ToyLog, ecdsa_key, ed25519_key, witness

CITIES = ("xiamen", "fuzhou", "quanzhou")


def wkey(name: str) -> str:
    return vkey(name, ed25519_key("witness " + name).public_key(), 0x04)


def lkey(log: ToyLog) -> str:
    return vkey(log.origin, log.signer.verifier().public_key, 0x02)


LOG = ToyLog(size=7)
PROVINCE = f"""# the province log's policy
log {lkey(LOG)} https://fj.gov.cn/audit

witness xiamen {wkey("xiamen")}
witness fuzhou\t{wkey("fuzhou")}   https://fz.fj.gov.cn/witness
  witness quanzhou {wkey("quanzhou")}
group cities 2 xiamen fuzhou quanzhou
quorum cities
"""


def test_parse_the_province_policy() -> None:
    policy = parse_policy(PROVINCE)
    assert [v.name for v in policy.logs] == [LOG.origin]
    assert policy.log_urls == ("https://fj.gov.cn/audit",)
    assert list(policy.witnesses) == list(CITIES)
    assert policy.witness_urls == {"fuzhou": "https://fz.fj.gov.cn/witness"}
    assert policy.quorum == "cities"


def test_k_of_n() -> None:
    policy = parse_policy(PROVINCE)
    for k in range(4):
        for chosen in combinations(CITIES, k):
            assert policy.satisfied(chosen) == (k >= 2)
    assert policy.missing(["fuzhou"]) == "group cities needs 2 of xiamen, fuzhou, quanzhou; has 1"
    assert policy.missing(["fuzhou", "xiamen"]) == ""
    assert not policy.satisfied(["somebody-else", "another"])


def test_nested_groups_all_and_any() -> None:
    policy = parse_policy(
        f"witness province {wkey('province')}\n"
        f"witness xiamen {wkey('xiamen')}\nwitness putian {wkey('putian')}\n"
        "group peer any xiamen putian\n"
        "group q all province peer\n"
        "quorum q\n"
    )
    assert policy.satisfied(["province", "putian"])
    assert not policy.satisfied(["province"])
    assert not policy.satisfied(["xiamen", "putian"])
    assert policy.missing(["province"]) == (
        "group q needs 2 of province, peer; has 1; group peer needs 1 of xiamen, putian; has 0"
    )


def test_quorum_of_one_witness_and_of_none() -> None:
    one = parse_policy(f"witness w {wkey('w')}\nquorum w\n")
    assert one.satisfied(["w"]) and not one.satisfied([])
    assert one.missing([]) == "witness w has not cosigned"
    none = parse_policy(f"log {lkey(LOG)}\nquorum none\n")
    assert none.quorum is None and none.satisfied([]) and none.missing([]) == ""


def test_at_least_32_of_each_and_a_bound() -> None:
    lines = [f"log {lkey(ToyLog(f'log{i}'))}" for i in range(32)]
    lines += [f"witness w{i} {wkey(f'w{i}')}" for i in range(32)]
    lines += [f"group g{i} any w{i}" for i in range(32)]
    lines += ["group all " + "32 " + " ".join(f"g{i}" for i in range(32)), "quorum all"]
    policy = parse_policy("\n".join(lines))
    assert len(policy.logs) == len(policy.witnesses) == 32
    assert policy.satisfied([f"w{i}" for i in range(32)])
    assert not policy.satisfied([f"w{i}" for i in range(31)])
    many = "\n".join(f"witness w{i} {wkey(f'w{i}')}" for i in range(257)) + "\nquorum w0"
    with pytest.raises(PolicyError, match="line 257: more than 256 witnesses"):
        parse_policy(many)


W = wkey("w")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"witness w {W}\n", "no quorum line"),
        (f"witness w {W}\nquorum w\nquorum w\n", "line 3: a policy has one quorum line"),
        ("quorum w\n", "line 1: the quorum 'w' is not a witness or group defined above"),
        (f"quorum w\nwitness w {W}\n", "line 1: the quorum 'w'"),
        (f"witness w {W}\nwitness w {wkey('v')}\nquorum w", "line 2: 'w' is already defined"),
        (f"witness w {W}\nwitness v {W}\nquorum w", "line 2: witness 'w' has the same key"),
        (f"witness none {W}\nquorum none", "line 1: the name 'none' is predefined"),
        (f"witness w {W}\ngroup g any w none\nquorum g", "line 2: member 'none'"),
        (f"witness w {W}\ngroup g any w x\nquorum g", "line 2: member 'x'"),
        (f"witness w {W}\ngroup g any w w\nquorum g", "line 2: a group lists each member once"),
        (f"witness w {W}\ngroup g 0 w\nquorum g", "line 2: the threshold"),
        (f"witness w {W}\ngroup g 2 w\nquorum g", "line 2: the threshold"),
        (f"witness w {W}\ngroup g 01 w\nquorum g", "line 2: the threshold"),
        (f"witness w {W}\ngroup g some w\nquorum g", "line 2: the threshold"),
        (f"witness w {W}\ngroup g any\nquorum g", "line 2: a group line is"),
        (f"witness w {W}\ngroup w any w\nquorum w", "line 2: 'w' is already defined"),
        (f"witness w {W} url #comment\nquorum w", "line 1: a witness line is"),
        (f"log {lkey(LOG)}\nlog {lkey(LOG)}\nquorum none", "line 2: this log's key"),
        (f"log {W}\nquorum none", "line 1: a log key is of type 0x01 or 0x02, not 0x04"),
        (
            f"witness w {vkey('w', ed25519_key('w').public_key(), 0x01)}\nquorum w",
            "line 1: a witness key is of type 0x04, not 0x01",
        ),
        (f"witness w {W[:-3]}!!!\nquorum w", "line 1: .*base64"),
        (f"witness w {W}\r\nquorum w", "line 1: control character"),
        (f"\n\nwitness w {W}\x7f\nquorum w", "line 3: control character"),
        ("quorum none\nfrobnicate x", "line 2: unknown keyword 'frobnicate'"),
    ],
)
def test_refusals_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        parse_policy(text)


# -- verifying a checkpoint ------------------------------------------------------------------


def test_verify_cosignatures_counts_known_witnesses_only() -> None:
    policy = parse_policy(PROVINCE)
    note = add_signatures(LOG.note(), witness("fuzhou"), witness("someone-else"))
    assert policy.verify_cosignatures(note) == ("fuzhou",)
    assert policy.verify_cosignatures(LOG.note()) == ()
    both = add_signatures(note, witness("xiamen"))
    assert policy.verify_cosignatures(both) == ("xiamen", "fuzhou")
    assert policy.verify(both) == LOG.checkpoint()


def test_a_failing_cosignature_by_a_known_witness_is_refused() -> None:
    policy = parse_policy(PROVINCE)
    note = add_signatures(LOG.note(), witness("fuzhou"))
    # The witness signed size 7; the note now claims the same root at size 8.
    text, sigs = note.split(b"\n\n")
    forged = text.replace(b"\n7\n", b"\n8\n") + b"\n\n" + sigs.split(b"\n", 1)[1]
    with pytest.raises(NoteError, match=r"fuzhou.* does not verify"):
        policy.verify_cosignatures(forged)


def test_verify_needs_the_log_and_the_quorum() -> None:
    policy = parse_policy(PROVINCE)
    one = add_signatures(LOG.note(), witness("fuzhou"))
    with pytest.raises(NoteError, match=r"lacks its quorum: group cities needs 2 .* has 1"):
        policy.verify(one)
    stranger = ToyLog("fz.fj.gov.cn/audit", size=7)
    with pytest.raises(NoteError, match=r"knows no log 'fz\.fj\.gov\.cn/audit'"):
        policy.verify(add_signatures(stranger.note(), witness("fuzhou"), witness("xiamen")))
    impostor = ToyLog(LOG.origin, size=7)
    impostor.signer = EcdsaSigner(LOG.origin, ecdsa_key("impostor"))
    with pytest.raises(NoteError, match="did not sign"):
        policy.verify(add_signatures(impostor.note(), witness("fuzhou"), witness("xiamen")))


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 8),
    data=st.data(),
)
def test_threshold_groups_count_members(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    names = [f"w{i}" for i in range(n)]
    text = "".join(f"witness {w} {wkey(w)}\n" for w in names)
    policy = parse_policy(text + f"group g {k} {' '.join(names)}\nquorum g\n")
    chosen = data.draw(st.sets(st.sampled_from(names)))
    assert policy.satisfied(chosen) == (len(chosen) >= k)
    assert (policy.missing(chosen) == "") == (len(chosen) >= k)
