"""PATTERN rules on a linear-time engine (node.catalog._patterns): the node keeps answering whatever
value meets whatever pattern, patterns mean what they meant in Python's ``re``, and what RE2
cannot run is refused by name."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
import re2
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import (
    MAX_PATTERN_VALUE_LENGTH,
    DataItem,
    DataType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    UnsupportedPattern,
    ValidationKind,
    ValidationRule,
    compile_pattern,
)
from node.catalog._patterns import MAX_PATTERN_LENGTH, translate
from node.models import CatalogEntryRow
from node.servicers.convert import entry_to_proto
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    serve_process,
    wait_serving,
)

BACKTRACKING = r"^(a+)+$"
#: Exponential for a backtracking engine: ``re`` needs about 1 s for 24 a's and a "!",
#: and doubles with each further character; RE2 answers at once.
HOSTILE = "a" * 5000 + "!"


# --- over the wire, with `govnode serve` in a process of its own ---------------------------
# A separate process: a stalled node must not stall the test's own event loop, so the test's
# deadlines fire and it fails instead of hanging.


@dataclass
class Served:
    setup: ProvinceSetup
    address: str
    provider: TlsFiles
    consumer: TlsFiles


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[Served]:
    setup = make_province(tmp_path / "province", db_url)
    provider = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    consumer = setup.agency(CIVIL_AFFAIRS, "福建省民政厅")
    proc = serve_process(setup.config_path)
    try:
        wait_serving(setup.config.node.listen, provider.key.parent, proc)
        yield Served(setup, setup.config.node.listen, provider, consumer)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def coded_entry(n: int, pattern: str) -> ResourceEntry:
    """An unconditionally shared entry of the province keyed by ``bh``, with ``dm`` checked
    by ``pattern``."""
    return ResourceEntry(
        resource_code=f"350000-3-{n:06d}",
        name="编码登记",
        provider_name="福建省公安厅",
        provider_code=PUBLIC_SECURITY,
        classification="departmental",
        items=(
            DataItem(
                name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1
            ),
            DataItem(
                name="dm",
                title="代码",
                data_type=DataType.STRING,
                sensitivity_level=1,
                validation=ValidationRule(kind=ValidationKind.PATTERN, pattern=pattern),
            ),
        ),
        share_type=ShareType.UNCONDITIONAL,
        share_methods=(ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
        publish_date="2025-01-15",
    )


async def healthy_throughout(address: str, files: TlsFiles, checks: int = 10) -> list[int]:
    """Health statuses of ``checks`` checks, 50 ms apart; each must answer within 10 s."""
    statuses = []
    async with secure_channel(address, files, timeout=10) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(checks):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            statuses.append(reply.status)
            await asyncio.sleep(0.05)
    return statuses


async def test_a_hostile_value_for_a_backtracking_pattern_does_not_stall_the_node(
    served: Served,
) -> None:
    entry = coded_entry(1, BACKTRACKING)
    serving = [health_pb2.HealthCheckResponse.SERVING] * 10

    async def submit(records: list[dict[str, str]]) -> sharing_pb2.SubmitAck:
        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield sharing_pb2.SubmitBatch(
                resource_code=entry.resource_code,
                batch_id="b1",
                records=[common_pb2.Record(values=r) for r in records],
            )

        async with secure_channel(served.address, served.provider, timeout=60) as ch:
            acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
        return acks[0]

    async with secure_channel(served.address, served.provider, timeout=60) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )

    # The provider submits a hostile value beside a good one; the node keeps answering.
    ack, statuses = await asyncio.gather(
        submit([{"bh": "1", "dm": HOSTILE}, {"bh": "2", "dm": "aaaa"}]),
        healthy_throughout(served.address, served.consumer),
    )
    assert statuses == serving
    assert (ack.accepted, ack.rejected) == (1, 1)
    assert ack.rejections[0].index == 0
    assert ack.rejections[0].item == "dm"
    assert ack.rejections[0].reason == "does not match the pattern '^(a+)+$'"

    # Consumers claim and filter with it: plain answers, and the node keeps answering.
    async with secure_channel(served.address, served.consumer, timeout=60) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        verified, compared, queried, statuses = await asyncio.gather(
            stub.Verify(
                sharing_pb2.VerifyRequest(
                    resource_code=entry.resource_code, key={"bh": "2"}, claimed={"dm": HOSTILE}
                )
            ),
            _collect(
                stub.Compare(
                    sharing_pb2.CompareRequest(
                        resource_code=entry.resource_code,
                        records=[
                            sharing_pb2.CompareRecord(
                                ref=str(i), key={"bh": "2"}, claimed={"dm": HOSTILE}
                            )
                            for i in range(100)
                        ],
                    )
                )
            ),
            stub.Query(
                sharing_pb2.QueryRequest(
                    resource_code=entry.resource_code,
                    filters=[
                        sharing_pb2.QueryFilter(
                            item="dm", op=sharing_pb2.QUERY_OPERATOR_EQ, value=HOSTILE
                        )
                    ],
                )
            ),
            healthy_throughout(served.address, served.consumer),
        )
    assert statuses == serving
    assert verified.found and not verified.all_match
    assert [m.result for m in verified.matches] == [sharing_pb2.MATCH_RESULT_MISMATCH]
    assert len(compared) == 100 and not any(r.all_match for r in compared)
    assert list(queried.rows) == []


async def _collect(call: object) -> list[sharing_pb2.CompareResult]:
    return [r async for r in call]  # type: ignore[attr-defined]


# --- registration refuses what RE2 cannot run, naming it (in-process node) -----------------


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"^(a)\1$", r"a backreference (\1) at position 4"),
        (r"^(?P<x>a)(?P=x)$", "a backreference ((?P=...)) at position 9"),
        (r"^(?=\d)\w+$", "a lookahead ((?=...)) at position 1"),
        (r"^(?<!0)\d+$", "a lookbehind ((?<!...)) at position 1"),
        (r"^(?>a+)b$", "an atomic group ((?>...)) at position 1"),
        (r"^a++$", "a possessive quantifier (++) at position 2"),
        (r"^(a)?(?(1)b|c)$", "a conditional group ((?(...)...)) at position 5"),
    ],
)
async def test_registration_refuses_a_pattern_the_linear_time_engine_cannot_run(
    province: tuple[ProvinceSetup, RunningNode], pattern: str, construct: str
) -> None:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(coded_entry(2, pattern)))
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith(f"entry.items[1].validation.pattern: '{pattern}': {construct} ")
    assert "is not supported; patterns run on a linear-time engine (RE2 syntax)" in details


async def test_an_update_may_not_bring_in_a_pattern_the_engine_cannot_run(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = province
    long_pattern = "(?=x)" + "a" * 2000
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        await stub.RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(coded_entry(3, "^[a-z]+$")))
        )
        for pattern, message in [
            (r"^(?<=a)b$", "a lookbehind ((?<=...)) at position 1 is not supported"),
            (long_pattern, "too long: a pattern has at most 1000 characters"),
            (r"^\w{100}$", "compiles to more than the 1 MiB of RE2 memory one pattern may use"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.UpdateResource(
                    catalog_pb2.UpdateResourceRequest(
                        entry=entry_to_proto(coded_entry(3, pattern)), reason="规则调整"
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = err.value.details() or ""
            assert details.startswith("entry.items[1].validation.pattern: ")
            assert message in details
            # Only a short prefix of a long pattern is quoted, with its length.
            assert "a" * 100 not in details
        entry = (await stub.GetResource(catalog_pb2.GetResourceRequest(resource_code=CODE3))).entry
    assert entry.version == 1


CODE3 = "350000-3-000003"


async def test_an_entry_stored_with_a_pattern_re2_refuses_fails_its_values_with_the_reason(
    province: tuple[ProvinceSetup, RunningNode],
) -> None:
    """An entry registered before patterns ran on RE2 may hold a backreference. Its rule is
    never run on a backtracking engine: every value fails it with a reason that tells the
    provider what to change, while everything else about the resource keeps working."""
    setup, node = province
    entry = coded_entry(4, r"^(a)b$")
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )

    # What an earlier release stored: the same entry with a backreference in its pattern.
    async def legacy(session: AsyncSession) -> None:
        row = await session.get(CatalogEntryRow, entry.resource_code)
        assert row is not None
        row.body = row.body.replace(r"^(a)b$", r"^(a)\\1$")
        session.add(row)

    await node.db.write("test.legacy_pattern", legacy)

    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=entry.resource_code,
            batch_id="b1",
            records=[
                common_pb2.Record(values={"bh": "1", "dm": "aa"}),
                common_pb2.Record(values={"bh": "2"}),
            ],
        )

    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        acks = [a async for a in stub.Submit(batches())]
        verified = await stub.Verify(
            sharing_pb2.VerifyRequest(
                resource_code=entry.resource_code, key={"bh": "2"}, claimed={"dm": "aa"}
            )
        )
    assert (acks[0].accepted, acks[0].rejected) == (1, 1)
    assert acks[0].rejections[0].reason == (
        "cannot be checked: the item's pattern '^(a)\\1$' is refused (a backreference (\\1) at "
        "position 4 is not supported; patterns run on a linear-time engine (RE2 syntax), which "
        "has no backreferences, lookaround, atomic groups or possessive quantifiers); the "
        "provider must change the rule (UpdateResource)"
    )
    assert verified.found
    assert [m.result for m in verified.matches] == [sharing_pb2.MATCH_RESULT_NOT_PRESENT]


# --- the engine: Python's meanings, RE2's running time --------------------------------------

#: Patterns as providers write them, with values each way; the node must agree with ``re``.
ORDINARY = [
    (r"[A-Z]{2}\d{4}", ["FJ2024", "FJ2024x", "fj2024", "FJ２０２４", ""]),
    (r"^[\u4e00-\u9fa5]{2,10}$", ["张三", "张", "欧阳丽丽", "Zhang", "张三1", "张" * 11]),
    (r"^\w+$", ["张三", "abc_1", "a b", "é", "١٢٣", "a-b"]),
    (r"\d{6}", ["350100", "３５０１００", "35010", "35010a"]),
    (r"(?i)^fj\d+$", ["FJ12", "fj12", "Fj", "ＦＪ12"]),
    (r"^1[3-9]\d{9}$", ["13812345678", "12812345678", "1381234567"]),
    (r"^[^\s]+$", ["a b", "a\u3000b", "ab", "a\tb"]),
    (r"\S+", ["张三", "a\u3000", "\u00a0"]),
    (r"^(a+)+$", ["aaaa", "aaa!", ""]),
    (r"^(?:[A-Z]{2}|[0-9]{3})-\d+$", ["AB-1", "123-45", "A1-2"]),
    (r"a{,3}", ["", "aaa", "aaaa"]),
    (r"a{,}b{2,}c{1}", ["aabbc", "bbbc", "bc"]),
    (r"a{x}|a{", ["a{x}", "a{", "a"]),
    (r"[]a]+", ["]a]", "b"]),
    (r"[^]]+", ["abc", "a]"]),
    (r"\u5f20\u4e09|\U0001F600|\N{EM DASH}", ["张三", "\U0001f600", "—", "张"]),
    (r"\x41\101\0", ["AA\0", "AA"]),
    (r"(?x) [a-z]+ \d  # a comment", ["abc1", "abc 1"]),
    (r"(?P<省>福建|广东)省(?#注释)", ["福建省", "湖南省"]),
    (r".+", ["a\nb", "ab"]),
    (r"(?s).+", ["a\nb"]),
    (r"(?m)^a$\n^b$", ["a\nb"]),
    (r"[\w.-]+@[\w.-]+", ["张三@例子.中国", "a@b", "a@"]),
    (r"abc\Z", ["abc", "abcd"]),
    (r"[\d-]+|[\D]+|[^\d\s]+", ["1-2", "ab", "a1", "a b"]),
    (r"[\W]+|[^\W]+", ["!!", "ab", "a!"]),
    (r"(?a)\w+", ["abc", "张"]),
    (r"(?a)[\d\s]+", ["1 2", "１"]),
    (r"(?i)straße", ["STRAẞE", "STRASSE"]),
    (r"(?i)k", ["K", "\u212a", "k"]),
    (r"(?i:a)b", ["Ab", "AB"]),
    (r"a*?b+?c??", ["aabbc", "b"]),
    (r"[\]\-\\]+", ["]-\\", "a"]),
    (r"\.\*\+\?\(\)\[\]\{\}\|\^\$", [".*+?()[]{}|^$", "a"]),
    (r"[\u4e00-\u9fa5·]{2,20}", ["欧阳·娜娜", "·"]),
]


@pytest.mark.parametrize(("pattern", "values"), ORDINARY)
def test_ordinary_patterns_match_what_they_matched_in_python(
    pattern: str, values: list[str]
) -> None:
    compiled = compile_pattern(pattern)
    for value in values:
        assert compiled.fullmatch(value) == bool(re.fullmatch(pattern, value)), value


def test_unicode_classes_mean_what_they_mean_in_python() -> None:
    """\\d, \\w and \\s against every character Python's Unicode database assigns."""
    assigned = "".join(
        chr(c)
        for c in range(0x110000)
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    )
    for cls in (r"\d", r"\w", r"\s", r"[\d]", r"[\w]", r"[\s]"):
        ours = set(re2.findall(translate(cls), assigned))
        assert ours == set(re.findall(cls, assigned)), cls


_ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "1",
        "张",
        r"\.",
        "_",
        " ",
        ".",
        r"\d",
        r"\w",
        r"\s",
        r"\D",
        r"\W",
        r"\S",
        "[ab]",
        "[^a]",
        "[a-z]",
        r"[\d_]",
        r"[\u4e00-\u9fa5]",
        r"[^\s]",
        r"[\w.-]",
    ]
)
_SUFFIXES = st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{,2}", "{1,}", "*?", "+?"])


def _patterns() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map(lambda t: f"(?:{t[0]}|{t[1]})"),
            st.tuples(inner, _SUFFIXES).map(lambda t: f"({t[0]}){t[1]}"),
        )

    atoms = st.tuples(_ATOMS, _SUFFIXES).map("".join)
    body = st.recursive(atoms, extend, max_leaves=6)
    return st.tuples(st.sampled_from(["", "^", "(?i)"]), body, st.sampled_from(["", "$"])).map(
        "".join
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=_patterns(), values=st.lists(st.text("ab1张_ .-\n１AÉé\u3000", max_size=8)))
def test_generated_patterns_agree_with_python(pattern: str, values: list[str]) -> None:
    compiled = compile_pattern(pattern)
    for value in values:
        assert compiled.fullmatch(value) == bool(re.fullmatch(pattern, value)), (pattern, value)


def test_a_value_is_matched_in_time_linear_in_its_length() -> None:
    # Would take longer than the age of the universe on a backtracking engine.
    compiled = compile_pattern(BACKTRACKING)
    assert not compiled.fullmatch("a" * 100_000 + "!")
    assert compiled.fullmatch("a" * 100_000)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a" * (MAX_PATTERN_LENGTH + 1), "too long: a pattern has at most 1000 characters"),
        (r"\w{60}", "compiles to more than the 1 MiB of RE2 memory one pattern may use"),
        (r"(?:a{100}){100}", "repeats more than 1000 times"),
        (r"a{1001}", "a repetition count above 1000 ({1001}) at position 1 is not supported"),
        (r"\bword\b", r"a word boundary (\b: RE2's is ASCII-only"),
        (r"[\Wa]", r"\W beside other members of a [...] set"),
        (r"(?ai)a", "ASCII-only case folding ((?a) with (?i))"),
        (r"\123\12", r"a backreference (\12) at position 4"),
        ("(a", "not a valid pattern: missing ), unterminated subpattern at position 2"),
        ("a**", "not a valid pattern: multiple repeat at position 2"),
        (r"\q", r"not a valid pattern: bad escape \q at position 0"),
        ("a(?i)b", "not a valid pattern: global flags not at the start of the expression"),
        ("(?", "not a valid pattern: unexpected end of pattern at position 0"),
    ],
)
def test_what_the_node_will_not_run_is_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(UnsupportedPattern) as refused:
        compile_pattern(pattern)
    assert str(refused.value).startswith(reason)


async def test_checking_a_batch_is_bounded_in_cpu_time_and_value_length(
    province: tuple[ProvinceSetup, RunningNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear is not free: against a pattern RE2 must simulate thread by thread, each byte can
    cost microseconds. A value longer than a pattern checks is refused on its own, and a batch
    whose checks take more CPU than the budget is refused whole, with nothing written."""
    setup, node = province
    monkeypatch.setattr("node.records._submit.MAX_CHECK_SECONDS", 0.05)  # 5 s in production
    entry = coded_entry(5, r"(?s)(?:.*a.{999}|.*b.{999})")
    slow = ("ab" * 5000)[:MAX_PATTERN_VALUE_LENGTH]

    async def submit(batch_id: str, values: list[str]) -> list[sharing_pb2.SubmitAck]:
        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield sharing_pb2.SubmitBatch(
                resource_code=entry.resource_code,
                batch_id=batch_id,
                records=[
                    common_pb2.Record(values={"bh": str(i), "dm": v}) for i, v in enumerate(values)
                ],
            )

        async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=60) as ch:
            return [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]

    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )
    acks = await submit("long", ["a" * (MAX_PATTERN_VALUE_LENGTH + 1), "b" * 1001])
    assert (acks[0].accepted, acks[0].rejected) == (1, 1)
    assert acks[0].rejections[0].reason == (
        "too long to check against the pattern: at most 10000 characters, got 10001"
    )

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit("slow", [slow] * 200)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (err.value.details() or "").startswith(
        "batch slow: checking its records took more than 0.05 s of CPU (stopped at record "
    )
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        history = sharing_pb2_grpc.SharingServiceStub(ch).GetRecordHistory(
            sharing_pb2.GetRecordHistoryRequest(resource_code=entry.resource_code, key={"bh": "5"})
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await history
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
