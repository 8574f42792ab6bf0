"""数据交换 (Exchange) and 主动推送 (Subscribe) over real mutual TLS: snapshots, changes since a
version, masking and item scope, resumption after a dropped connection, the change feed with
no gap and no duplicate after a reconnect, and every refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from govnode.v1 import sharing_pb2, sharing_pb2_grpc

import node.sharing._decision
from gateway.identity import Identity
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditLog
from node.catalog import ResourceEntry, ShareMethod, ShareType
from node.records._exchange import EXCHANGE_CHUNK_ROWS
from node.sharing import Permit, is_provider
from tests.support.exchange import (
    CODE,
    MANY,
    WAIT_S,
    company,
    exchange,
    feed,
    keys,
    read_changes,
    records,
    refused_exchange,
)
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
    with_submit_updates,
    withdraw_approved,
)
from tests.support.sharing import (
    COMPANIES,
    PEOPLE,
    PETITIONS,
    agency,
    register,
)

Province = tuple[ProvinceSetup, RunningNode]


@pytest.fixture
async def province(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    """A province whose Submit applies changes of stored records at once
    (``submit_updates = "apply"``, the authority's standing approval, 第四十一条): these tests
    follow record changes through Exchange and Subscribe as providers aggregate them. Changes
    held for approval reach the feed when approved (test_change_requests)."""
    setup = with_submit_updates(make_province(tmp_path / "province", db_url), "apply")
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


@pytest.fixture
async def companies(province: Province) -> Province:
    setup, node = province
    for entry in (COMPANIES, PEOPLE, PETITIONS):
        await register(setup, node, entry)
    await feed(node, agency(setup, MARKET_REGULATION), "c-1", [company(n) for n in range(MANY)])
    return setup, node


# --- Exchange ----------------------------------------------------------------------------


async def test_a_full_snapshot_delivers_every_record_once_masked_in_chunks(
    companies: Province,
) -> None:
    setup, node = companies
    chunks = await exchange(
        node, agency(setup, CIVIL_AFFAIRS), sharing_pb2.ExchangeRequest(resource_code=CODE)
    )
    rows = records(chunks)
    assert len(chunks) == 3 and all(len(c.records) <= EXCHANGE_CHUNK_ROWS for c in chunks)
    assert sorted(keys(rows)) == sorted(company(n)["tyshxydm"] for n in range(MANY))
    assert len(set(keys(rows))) == MANY
    assert {r["fddbr"] for r in rows} == {"王*"}  # 法定代表人 masked for another agency
    assert {c.snapshot_version for c in chunks} == {MANY}
    assert not any(c.deleted for c in chunks)
    # The provider gets its own data in clear.
    mine = records(
        await exchange(
            node, agency(setup, MARKET_REGULATION), sharing_pb2.ExchangeRequest(resource_code=CODE)
        )
    )
    assert {r["fddbr"] for r in mine} == {"王五"}


async def test_changes_since_a_version_carry_only_what_changed_at_its_newest(
    companies: Province,
) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    first = await exchange(node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE))
    since = first[-1].snapshot_version
    provider = agency(setup, MARKET_REGULATION)
    await feed(node, provider, "c-2", [company(1, "注销"), company(MANY + 1)])
    await feed(node, provider, "c-3", [company(1, "吊销"), company(2, person="欧阳明")])
    chunks = await exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE, since_version=since)
    )
    rows = {r["tyshxydm"]: r for r in records(chunks)}
    assert sorted(rows) == sorted(company(n)["tyshxydm"] for n in (1, 2, MANY + 1))
    assert rows[company(1)["tyshxydm"]]["djzt"] == "吊销"  # its newest version only
    assert rows[company(2)["tyshxydm"]]["fddbr"] == "欧阳*"
    assert chunks[-1].snapshot_version == since + 4
    # Nothing changed since the newest version: one empty, last chunk.
    [empty] = await exchange(
        node,
        civil,
        sharing_pb2.ExchangeRequest(resource_code=CODE, since_version=chunks[-1].snapshot_version),
    )
    assert empty.last and not empty.records


async def test_exchange_projects_to_the_requested_items_and_masks_them(
    companies: Province,
) -> None:
    setup, node = companies
    chunks = await exchange(
        node,
        agency(setup, CIVIL_AFFAIRS),
        sharing_pb2.ExchangeRequest(resource_code=CODE, items=["tyshxydm", "fddbr"]),
    )
    rows = records(chunks)
    assert len(rows) == MANY
    assert all(set(r) == {"tyshxydm", "fddbr"} and r["fddbr"] == "王*" for r in rows)
    err = await refused_exchange(
        node,
        agency(setup, CIVIL_AFFAIRS),
        sharing_pb2.ExchangeRequest(resource_code=CODE, items=["hobby"]),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hobby" in (err.details() or "")


async def test_an_interrupted_exchange_resumes_with_nothing_missing_or_repeated(
    companies: Province,
) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    request = sharing_pb2.ExchangeRequest(resource_code=CODE)
    # The connection drops after the first chunk: the call is cancelled, the channel closed.
    async with channel(node, civil, timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Exchange(request)
        first = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(first, sharing_pb2.ExchangeChunk) and not first.last
        call.cancel()
    # Meanwhile the provider changes a record already sent, one not yet sent, and adds one.
    await feed(
        node,
        agency(setup, MARKET_REGULATION),
        "c-2",
        [company(0, "注销"), company(MANY - 1, "注销"), company(MANY + 5)],
    )
    rest = await exchange(
        node,
        civil,
        sharing_pb2.ExchangeRequest(resource_code=CODE, resume_token=first.resume_token),
    )
    delivered = keys(records([first, *rest]))
    assert len(delivered) == len(set(delivered)) == MANY  # nothing repeated, nothing missing
    assert set(delivered) == {company(n)["tyshxydm"] for n in range(MANY)}
    # The resumed transfer is the same snapshot: the later writes wait for the next exchange.
    assert {r["djzt"] for r in records(rest)} == {"存续"}
    assert {c.snapshot_version for c in rest} == {first.snapshot_version}
    # Resuming from a middle chunk again gives exactly the rest after it.
    again = await exchange(
        node,
        civil,
        sharing_pb2.ExchangeRequest(resource_code=CODE, resume_token=rest[0].resume_token),
    )
    assert keys(records(again)) == keys(records(rest[1:]))
    # And the next incremental exchange picks the changes up.
    later = await exchange(
        node,
        civil,
        sharing_pb2.ExchangeRequest(resource_code=CODE, since_version=first.snapshot_version),
    )
    assert len(records(later)) == 3
    # Each of the four calls is in the audit log once, the interrupted one included (as
    # CANCELLED, with what it had sent, unless it had sent everything before the cancel).
    log = AuditLog(node.db)
    calls = []
    for _ in range(50):
        calls = [
            r
            for r in await log.query(resource_code=CODE, limit=1000)
            if r.method.endswith("/Exchange")
        ]
        if len(calls) == 4:
            break
        await asyncio.sleep(0.1)
    assert sorted(r.outcome for r in calls) in (["CANCELLED"] + ["OK"] * 3, ["OK"] * 4)
    counts = sorted(int(r.detail.get("records", -1)) for r in calls if r.outcome == "OK")
    assert {len(records(rest)), len(records(again)), len(records(later))} <= set(counts)
    interrupted = [r for r in calls if r.outcome == "CANCELLED"]
    assert all(int(r.detail.get("records", 0)) >= len(first.records) for r in interrupted)


# --- item scope (as a grant would narrow it) --------------------------------------------------


async def narrow(
    self: object, caller: Identity, entry: ResourceEntry, method: ShareMethod
) -> Permit:
    """A caller's access limited to two items, one of them in clear (as a grant would)."""
    if is_provider(caller, entry):
        names = frozenset(i.name for i in entry.items)
        return Permit(is_provider=True, visible_items=names, clear_items=names)
    return Permit(
        is_provider=False,
        visible_items=frozenset({"tyshxydm", "fddbr"}),
        clear_items=frozenset({"tyshxydm"}),
    )


@pytest.fixture
async def scoped(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Province]:
    """A province node whose access decisions are :func:`narrow` (as a grant would make)."""
    monkeypatch.setattr(node.sharing._decision.AccessDecider, "_access", narrow)
    setup = make_province(tmp_path / "scoped", db_url)
    running = await start(setup)
    try:
        await register(setup, running, COMPANIES)
        await feed(running, agency(setup, MARKET_REGULATION), "c-1", [company(1), company(2)])
        yield setup, running
    finally:
        await running.stop(grace=0)


async def test_items_outside_the_callers_access_are_never_sent(scoped: Province) -> None:
    setup, node = scoped
    civil = agency(setup, CIVIL_AFFAIRS)
    rows = records(await exchange(node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE)))
    assert sorted(keys(rows)) == sorted(company(n)["tyshxydm"] for n in (1, 2))
    assert all(set(r) == {"tyshxydm", "fddbr"} and r["fddbr"] == "王*" for r in rows)
    err = await refused_exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE, items=["dwmc"])
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "dwmc" in (err.details() or "")
    async with channel(node, civil) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=CODE)
        )
        changes = await read_changes(call, 2)
        call.cancel()
    assert [set(c.record.values) for c in changes] == [{"tyshxydm", "fddbr"}] * 2
    assert {c.record.values["fddbr"] for c in changes} == {"王*"}


# --- Subscribe (主动推送) -------------------------------------------------------------------


async def test_subscribe_pushes_records_submitted_after_it_started(companies: Province) -> None:
    setup, node = companies
    provider = agency(setup, MARKET_REGULATION)
    async with channel(node, agency(setup, CIVIL_AFFAIRS), timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=CODE, after_sequence=MANY)
        )
        await feed(node, provider, "c-2", [company(MANY + 1, person="赵六")])
        [new] = await read_changes(call, 1)
        await feed(node, provider, "c-3", [company(MANY + 1, "注销", person="赵六")])
        [update] = await read_changes(call, 1)
        call.cancel()
    assert (new.sequence, new.version, update.sequence, update.version) == (
        MANY + 1,
        1,
        MANY + 2,
        2,
    )
    assert new.kind == update.kind == sharing_pb2.RECORD_CHANGE_KIND_UPSERT
    assert dict(new.key) == {"tyshxydm": company(MANY + 1)["tyshxydm"]}
    assert new.record.values["fddbr"] == "赵*"  # masked like Query rows
    assert update.record.values["djzt"] == "注销"
    assert update.at.seconds > 0


async def test_subscribe_resumes_after_a_disconnect_without_gap_or_duplicate(
    companies: Province,
) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    provider = agency(setup, MARKET_REGULATION)
    request = sharing_pb2.SubscribeRequest(resource_code=CODE, after_sequence=MANY - 3)
    async with channel(node, civil, timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        seen = await read_changes(call, 2)
        call.cancel()  # the subscriber drops, with one change of the feed still unread
    # Written while it is away.
    await feed(node, provider, "c-2", [company(MANY + n) for n in range(3)])
    request.after_sequence = seen[-1].sequence
    async with channel(node, civil, timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        seen += await read_changes(call, 4)
        await feed(node, provider, "c-3", [company(0, "吊销")])
        seen += await read_changes(call, 1)
        call.cancel()
    sequences = [c.sequence for c in seen]
    assert sequences == list(range(MANY - 2, MANY + 5))  # consecutive: no gap, no duplicate
    assert dict(seen[-1].key) == {"tyshxydm": company(0)["tyshxydm"]}
    # The subscription that was cancelled is in the audit log with what it delivered.
    log = AuditLog(node.db)
    cancelled = []
    for _ in range(50):
        cancelled = [
            r
            for r in await log.query(resource_code=CODE, outcome="CANCELLED", limit=1000)
            if r.method.endswith("/Subscribe")
        ]
        if len(cancelled) == 2:
            break
        await asyncio.sleep(0.1)
    # It counts what left the node: the change the first subscriber never read may have.
    assert len(cancelled) == 2
    assert cancelled[0].detail.get("records") in (2, 3)
    assert cancelled[1].detail.get("records") == 5


async def test_a_subscription_ends_when_the_resource_is_withdrawn(companies: Province) -> None:
    setup, node = companies
    async with channel(node, agency(setup, CIVIL_AFFAIRS), timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=CODE, after_sequence=MANY - 1)
        )
        await read_changes(call, 1)
        await withdraw_approved(node, setup, agency(setup, MARKET_REGULATION), CODE, "停止共享")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), WAIT_S)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "withdrawn" in (err.value.details() or "")


# --- refusals ---------------------------------------------------------------------------


async def subscribe_refused(
    node: RunningNode, files: TlsFiles, request: sharing_pb2.SubscribeRequest
) -> grpc.aio.AioRpcError:
    async with channel(node, files) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), WAIT_S)
    return err.value


async def test_not_shared_and_unoffered_methods_are_refused(companies: Province) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    err = await refused_exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code=PETITIONS.resource_code)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "暂不共享" in (err.details() or "")
    err = await subscribe_refused(
        node, civil, sharing_pb2.SubscribeRequest(resource_code=PETITIONS.resource_code)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "暂不共享" in (err.details() or "")
    # 人口基础信息 is shared by Verify, Compare and Query only.
    err = await refused_exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code=PEOPLE.resource_code)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "数据交换" in (err.details() or "") and "检索查询" in (err.details() or "")
    err = await subscribe_refused(
        node, civil, sharing_pb2.SubscribeRequest(resource_code=PEOPLE.resource_code)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "主动推送" in (err.details() or "")


async def test_conditional_resources_need_an_approved_application(companies: Province) -> None:
    setup, node = companies
    conditional = PEOPLE.model_copy(
        update={
            "resource_code": "350000-1-000009",
            "share_type": ShareType.CONDITIONAL,
            "share_methods": (ShareMethod.EXCHANGE, ShareMethod.SUBSCRIBE),
            "items": tuple(
                i.model_copy(update={"authoritative_source": False, "standard_element": ""})
                for i in PEOPLE.items
            ),
        }
    )
    await register(setup, node, conditional)
    civil = agency(setup, CIVIL_AFFAIRS)
    code = conditional.resource_code
    err = await refused_exchange(node, civil, sharing_pb2.ExchangeRequest(resource_code=code))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "approved application" in (err.details() or "")
    err = await subscribe_refused(node, civil, sharing_pb2.SubscribeRequest(resource_code=code))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "approved application" in (err.details() or "")
    # Its provider exchanges it (empty so far).
    [chunk] = await exchange(
        node, agency(setup, PUBLIC_SECURITY), sharing_pb2.ExchangeRequest(resource_code=code)
    )
    assert chunk.last and not chunk.records and chunk.snapshot_version == 0


async def test_bad_resume_tokens_are_refused_naming_the_problem(companies: Province) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    async with channel(node, civil, timeout=30) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Exchange(
            sharing_pb2.ExchangeRequest(resource_code=CODE)
        )
        first = await asyncio.wait_for(call.read(), WAIT_S)
        call.cancel()
    assert isinstance(first, sharing_pb2.ExchangeChunk)
    token = first.resume_token
    version, payload, mac = token.split(".")
    altered = f"{version}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{mac}"
    for bad in ("garbage", altered, token + "x"):
        err = await refused_exchange(
            node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE, resume_token=bad)
        )
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "resume_token" in (err.details() or "")
    # A genuine token, but another transfer's parameters or another caller.
    err = await refused_exchange(
        node,
        civil,
        sharing_pb2.ExchangeRequest(resource_code=CODE, since_version=5, resume_token=token),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "since_version" in (err.details() or "")
    err = await refused_exchange(
        node,
        agency(setup, PUBLIC_SECURITY),
        sharing_pb2.ExchangeRequest(resource_code=CODE, resume_token=token),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "another caller" in (err.details() or "")


async def test_withdrawn_unknown_and_out_of_range_requests_are_refused(
    companies: Province,
) -> None:
    setup, node = companies
    civil = agency(setup, CIVIL_AFFAIRS)
    err = await refused_exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code="350000-1-999999")
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND
    err = await subscribe_refused(
        node, civil, sharing_pb2.SubscribeRequest(resource_code="350000-1-999999")
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND
    err = await refused_exchange(
        node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE, since_version=MANY + 1)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ahead" in (err.details() or "")
    err = await subscribe_refused(
        node, civil, sharing_pb2.SubscribeRequest(resource_code=CODE, after_sequence=MANY + 1)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in (err.details() or "")
    await withdraw_approved(node, setup, agency(setup, MARKET_REGULATION), CODE, "停止共享")
    err = await refused_exchange(node, civil, sharing_pb2.ExchangeRequest(resource_code=CODE))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "withdrawn" in (err.details() or "")
    err = await subscribe_refused(node, civil, sharing_pb2.SubscribeRequest(resource_code=CODE))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
