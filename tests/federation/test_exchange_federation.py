"""数据交换 (Exchange, 第二十六条) and 主动推送 (Subscribe, 第二十七条) across the federation: a
厦门 agency with a grant on a 福州 有条件共享 resource calls at its own node 厦门, and the stream
goes 厦门 -> province -> 福州 (a province agency's goes province -> 福州; a direct peer link
skips the province). 福州 decides for the 厦门 agency, masks, and issues and checks the resume
tokens; an interrupted routed transfer resumes from its last token with nothing missing or
repeated; a routed subscription reconnects with no gap and no duplicate and, without a
deadline, is not cut by a forwarder's default timeout; refusals (no grant, 暂不共享, revoked,
expired) come back with 福州's status and message; cancelling at 厦门 ends the stream at 福州
(its audit record says CANCELLED); every hop audits under the same request id. Real nodes over
real mutual TLS on loopback, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import access_pb2, common_pb2, sharing_pb2, sharing_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Role, make_identity
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.audit import AuditLog
from node.catalog import ShareType
from node.records._exchange import EXCHANGE_CHUNK_ROWS
from tests.support.access import (
    ITEMS,
    access,
    authority,
    poll_refused,
    ts,
)
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.exchange import exchange, keys, records, refused_exchange
from tests.support.nodes import (
    FUZHOU,
    PROVINCE,
    XIAMEN,
    Federation,
    Member,
    channel,
    entry_of,
    federation,
    link_peers,
)
from tests.support.routed_exchange import (
    COND,
    CONSUMER,
    MANY,
    STREAMS,
    WAIT_S,
    audited,
    company,
    consumer,
    grant,
    submit,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TD = "fujian.gov.cn"
OPEN = entry_of(FUZHOU, 12, items=ITEMS, share_methods=STREAMS, share_type=ShareType.UNCONDITIONAL)
SECRET = entry_of(
    FUZHOU,
    13,
    items=ITEMS,
    share_type=ShareType.NOT_SHARED,
    share_methods=(),
    legal_basis="《中华人民共和国保守国家秘密法》",
)


def key_of(n: int) -> str:
    return company(n)["tyshxydm"]


async def change_approved(fuzhou: Member, n: int, name: str) -> None:
    """Record ``n`` of COND gets a new name through the approved-change path (第四十一条)."""
    asked = await access(
        fuzhou.running,
        fuzhou.agency(),
        "RequestRecordChange",
        access_pb2.RequestRecordChangeRequest(
            target=access_pb2.CHANGE_TARGET_RECORD,
            action=access_pb2.CHANGE_ACTION_UPDATE,
            resource_code=COND.resource_code,
            key={"tyshxydm": key_of(n)},
            record=common_pb2.Record(values=company(n, name)),
            reason="企业名称登记有误，依核准文书更正",
        ),
    )
    await access(
        fuzhou.running,
        authority(fuzhou.setup),
        "ReviewChangeRequest",
        access_pb2.ReviewChangeRequestRequest(
            id=asked.change_request.id, decision=common_pb2.REVIEW_DECISION_APPROVE
        ),
    )


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    """The three nodes; at 福州 COND with MANY records, OPEN with three, SECRET with one; the
    catalog everywhere; the 厦门 consumer granted COND's items for Exchange and Subscribe."""
    async with federation(tmp_path, db_urls) as running:
        for entry in (COND, OPEN, SECRET):
            await running.fuzhou.register(entry)
        await submit(running.fuzhou, COND.resource_code, "c-1", [company(n) for n in range(MANY)])
        await submit(running.fuzhou, OPEN.resource_code, "o-1", [company(n) for n in range(3)])
        await submit(running.fuzhou, SECRET.resource_code, "s-1", [company(0)])
        await running.converged(3)
        await grant(running, consumer(running))
        yield running


async def revoke_consumers_grant(fed: Federation) -> None:
    """福州's authority revokes the 厦门 consumer's grant."""
    boss = authority(fed.fuzhou.setup)
    listed = await access(
        fed.fuzhou.running,
        boss,
        "ListGrants",
        access_pb2.ListGrantsRequest(grantee_identity=consumer_uri()),
    )
    [active] = listed.grants
    await access(
        fed.fuzhou.running,
        boss,
        "RevokeGrant",
        access_pb2.RevokeGrantRequest(grant_id=active.id, reason="审批事项已办结"),
    )


def consumer_uri() -> str:
    return str(make_identity(XIAMEN, TD, Role.AGENCY, CONSUMER))


def open_channel(node: RunningNode, files: TlsFiles) -> grpc.aio.Channel:
    """A channel whose streaming calls carry no deadline unless given one (a long-lived
    consumer: the test's own channels otherwise default to 300 s)."""
    return secure_channel(node.address, files, streaming_timeout=None)


async def refused_subscribe(
    node: RunningNode, files: TlsFiles, request: sharing_pb2.SubscribeRequest
) -> grpc.aio.AioRpcError:
    async with open_channel(node, files) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), WAIT_S)
    return err.value


async def read_chunks(call: Any, count: int) -> list[sharing_pb2.ExchangeChunk]:
    """The next ``count`` chunks of an Exchange call, each awaited at most WAIT_S."""
    out = []
    for _ in range(count):
        chunk = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(chunk, sharing_pb2.ExchangeChunk), "the transfer ended"
        out.append(chunk)
    return out


async def read_changes(call: Any, count: int) -> list[sharing_pb2.RecordChange]:
    """The next ``count`` changes of a Subscribe call, each awaited at most WAIT_S (longer than
    test_exchange's: each message crosses three nodes)."""
    out = []
    for _ in range(count):
        change = await asyncio.wait_for(call.read(), WAIT_S)
        assert isinstance(change, sharing_pb2.RecordChange), "the subscription ended"
        out.append(change)
    return out


# --- Exchange ---------------------------------------------------------------------------------


async def test_a_routed_exchange_delivers_the_owners_snapshot_and_changes_since(
    fed: Federation,
) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    chunks = await exchange(
        xiamen, consumer(fed), sharing_pb2.ExchangeRequest(resource_code=code), request_id="rid-x"
    )
    rows = records(chunks)
    assert len(chunks) == 3 and all(len(c.records) <= EXCHANGE_CHUNK_ROWS for c in chunks)
    assert sorted(keys(rows)) == sorted(key_of(n) for n in range(MANY))
    assert len(set(keys(rows))) == MANY
    assert {r["fddbr"] for r in rows} == {"王*"}  # masked by 福州 for the 厦门 agency
    assert {c.snapshot_version for c in chunks} == {MANY}

    # Every node on the path audited the call under the request id, for the 厦门 agency.
    hops = {m.region: await audited(m, "rid-x") for m in fed.members}
    assert {r.caller for r in hops.values()} == {consumer_uri()}
    assert hops[XIAMEN].origin_node == ""
    assert hops[PROVINCE].origin_node == str(make_identity(XIAMEN, TD, Role.NODE))
    assert hops[FUZHOU].origin_node == str(make_identity(PROVINCE, TD, Role.NODE))
    assert hops[FUZHOU].detail["records"] == MANY and hops[FUZHOU].detail["grant"]
    assert hops[XIAMEN].detail["relayed"] == hops[PROVINCE].detail["relayed"] == 3
    assert hops[XIAMEN].detail["routed_to"] == FUZHOU

    # 福州 adds two companies and, approved, renames one already sent.
    await submit(fed.fuzhou, code, "c-2", [company(MANY), company(MANY + 1)])
    await change_approved(fed.fuzhou, 7, "福州更名后有限公司")
    since = await exchange(
        xiamen,
        consumer(fed),
        sharing_pb2.ExchangeRequest(resource_code=code, since_version=chunks[-1].snapshot_version),
    )
    changed = {r["tyshxydm"]: r for r in records(since)}
    assert sorted(changed) == sorted(key_of(n) for n in (7, MANY, MANY + 1))
    assert changed[key_of(7)]["qymc"] == "福州更名后有限公司"
    assert since[-1].snapshot_version == MANY + 3

    # A province agency's call goes province -> 福州 (no grant needed: 无条件共享).
    at_province = await exchange(
        fed.province.running,
        fed.province.agency(),
        sharing_pb2.ExchangeRequest(resource_code=OPEN.resource_code),
        request_id="rid-p",
    )
    assert sorted(keys(records(at_province))) == sorted(key_of(n) for n in range(3))
    owner = await audited(fed.fuzhou, "rid-p")
    assert owner.origin_node == str(make_identity(PROVINCE, TD, Role.NODE))
    assert await AuditLog(fed.xiamen.running.db).query(request_id="rid-p") == []


async def test_an_interrupted_routed_exchange_resumes_with_nothing_missing_or_repeated(
    fed: Federation,
) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    request = sharing_pb2.ExchangeRequest(resource_code=code)
    # The consumer's connection drops after two chunks: its call is cancelled at 厦门.
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Exchange(
            request, metadata=((REQUEST_ID_KEY, "rid-cut"),)
        )
        first, second = await read_chunks(call, 2)
        call.cancel()
    assert not first.last and not second.last
    # The forwarded calls end with it; 福州 audits the transfer as cancelled (or as done, if
    # its last chunk had already left before the cancel reached it).
    owner = AuditLog(fed.fuzhou.running.db)
    outcomes: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and not outcomes:
        outcomes = [r.outcome for r in await owner.query(request_id="rid-cut")]
        await asyncio.sleep(0.05)
    assert outcomes in (["CANCELLED"], ["OK"])

    # Meanwhile 福州 adds a company: the resumed transfer is still the snapshot.
    await submit(fed.fuzhou, code, "c-2", [company(MANY + 5)])
    rest = await exchange(
        xiamen,
        consumer(fed),
        sharing_pb2.ExchangeRequest(resource_code=code, resume_token=second.resume_token),
        request_id="rid-resume",
    )
    delivered = keys(records([first, second, *rest]))
    assert len(delivered) == len(set(delivered)) == MANY  # nothing repeated, nothing missing
    assert set(delivered) == {key_of(n) for n in range(MANY)}
    assert {c.snapshot_version for c in rest} == {first.snapshot_version}
    # Resuming from the first chunk's token again gives exactly the rest after it.
    again = await exchange(
        xiamen,
        consumer(fed),
        sharing_pb2.ExchangeRequest(resource_code=code, resume_token=first.resume_token),
    )
    assert keys(records(again)) == keys(records([second, *rest]))
    # 福州 checked the token for the 厦门 agency: it continues nobody else's transfer, not even
    # its own provider's at 福州.
    async with channel(fed.fuzhou.running, fed.fuzhou.agency(), timeout=30) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in sharing_pb2_grpc.SharingServiceStub(ch).Exchange(
                sharing_pb2.ExchangeRequest(resource_code=code, resume_token=first.resume_token)
            ):
                pass
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "another caller" in (err.value.details() or "")
    # An altered token is refused by 福州, and its refusal comes back through 厦门.
    err2 = await refused_exchange(
        xiamen,
        consumer(fed),
        sharing_pb2.ExchangeRequest(resource_code=code, resume_token=first.resume_token + "x"),
    )
    assert err2.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "resume_token" in (err2.details() or "")


async def test_a_direct_peer_link_exchanges_without_the_province(fed: Federation) -> None:
    await fed.xiamen.stop()
    fed.xiamen.setup = link_peers(fed.xiamen.setup, {FUZHOU: fed.fuzhou.setup.config.node.listen})
    await fed.xiamen.start()
    chunks = await exchange(
        fed.xiamen.running,
        consumer(fed),
        sharing_pb2.ExchangeRequest(resource_code=COND.resource_code),
        request_id="rid-direct",
    )
    assert len(records(chunks)) == MANY
    owner = await audited(fed.fuzhou, "rid-direct")
    assert owner.origin_node == str(make_identity(XIAMEN, TD, Role.NODE))
    assert owner.caller == consumer_uri()
    assert await AuditLog(fed.province.running.db).query(request_id="rid-direct") == []


# --- Subscribe --------------------------------------------------------------------------------


async def test_a_routed_subscription_reconnects_with_no_gap_and_no_duplicate(
    fed: Federation,
) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    request = sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY - 3)
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        seen = await read_changes(call, 2)
        call.cancel()  # the subscriber drops, with one change of the feed still unread
    # Written while it is away (new companies, and an approved change of one).
    await submit(fed.fuzhou, code, "c-2", [company(MANY + n) for n in range(3)])
    await change_approved(fed.fuzhou, 0, "福州更名后有限公司")
    request.after_sequence = seen[-1].sequence
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(request)
        seen += await read_changes(call, 5)
        # And one pushed live, while it listens.
        await submit(fed.fuzhou, code, "c-3", [company(MANY + 3)])
        seen += await read_changes(call, 1)
        call.cancel()
    sequences = [c.sequence for c in seen]
    assert sequences == list(range(MANY - 2, MANY + 6))  # consecutive: no gap, no duplicate
    assert [dict(c.key)["tyshxydm"] for c in seen[-3:]] == [
        key_of(MANY + 2),
        key_of(0),
        key_of(MANY + 3),
    ]
    renamed = seen[-2]
    assert renamed.version == 2 and renamed.record.values["qymc"] == "福州更名后有限公司"
    assert {c.record.values["fddbr"] for c in seen} == {"王*"}


async def test_a_routed_subscription_without_a_deadline_outlives_the_forwarders_default(
    fed: Federation,
) -> None:
    forwarders = [fed.xiamen.running.forwarder, fed.province.running.forwarder]
    default = 0.3
    for forwarder in forwarders:
        assert forwarder is not None
        forwarder.default_timeout = default  # what a bounded call without a deadline gets
    xiamen, code = fed.xiamen.running, COND.resource_code
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY - 1)
        )
        [backlog] = await read_changes(call, 1)
        # Both hops forwarded it without a deadline.
        assert [f.last_timeouts[-1] for f in forwarders if f is not None] == [None, None]
        # Long past the forwarders' default, it is still open and pushes the next change.
        await asyncio.sleep(default * 5)
        await submit(fed.fuzhou, code, "c-2", [company(MANY)])
        [pushed] = await read_changes(call, 1)
        call.cancel()
    assert (backlog.sequence, pushed.sequence) == (MANY, MANY + 1)
    # A caller's own deadline still travels with the stream, shortened at each hop (a short
    # one: gRPC rounds a deadline up on the wire, to 10 ms under 10 s but 100 ms above).
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY), timeout=5
        )
        await read_changes(call, 1)
        call.cancel()
    at_xiamen, at_province = (f.last_timeouts[-1] for f in forwarders if f is not None)
    assert at_xiamen is not None and at_province is not None
    assert at_province < at_xiamen < 5


async def test_cancelling_at_xiamen_ends_the_subscription_at_every_hop(fed: Federation) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY - 2),
            metadata=((REQUEST_ID_KEY, "rid-cancel"),),
        )
        await read_changes(call, 2)  # caught up: 福州 now waits for the next change
        call.cancel()
        # The channel stays open: only the call's cancellation can end the hops behind it.
        owner = await audited(fed.fuzhou, "rid-cancel", "CANCELLED")
        province = await audited(fed.province, "rid-cancel", "CANCELLED")
        here = await audited(fed.xiamen, "rid-cancel", "CANCELLED")
    assert owner.caller == province.caller == here.caller == consumer_uri()
    assert owner.detail["records"] == 2 and owner.detail["sequence"] == MANY
    assert here.detail["relayed"] == 2


# --- refusals over the route ------------------------------------------------------------------


async def test_refusals_come_back_over_the_route_with_the_owners_status(fed: Federation) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    exchange_cond = sharing_pb2.ExchangeRequest(resource_code=code)
    subscribe_cond = sharing_pb2.SubscribeRequest(resource_code=code)
    # Another 厦门 agency holds no grant.
    other = fed.xiamen.setup.agency(agency_code(3, XIAMEN))
    for err in (
        await refused_exchange(xiamen, other, exchange_cond),
        await refused_subscribe(xiamen, other, subscribe_cond),
    ):
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "approved application" in (err.details() or "")
        assert f"agency {agency_code(3, XIAMEN)} ({XIAMEN})" in (err.details() or "")
    # 暂不共享 never leaves 福州.
    for err in (
        await refused_exchange(
            xiamen, consumer(fed), sharing_pb2.ExchangeRequest(resource_code=SECRET.resource_code)
        ),
        await refused_subscribe(
            xiamen,
            consumer(fed),
            sharing_pb2.SubscribeRequest(resource_code=SECRET.resource_code),
        ),
    ):
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "暂不共享" in (err.details() or "")
    # A node calls them only on behalf of a caller, with a signed caller assertion.
    as_node = node_tls_files(fed.xiamen.setup.config)
    for err in (
        await refused_exchange(fed.fuzhou.running, as_node, exchange_cond),
        await refused_subscribe(fed.fuzhou.running, as_node, subscribe_cond),
    ):
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "on behalf of" in (err.details() or "")
    # 福州 validates the request itself.
    err = await refused_subscribe(
        xiamen,
        consumer(fed),
        sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY + 1),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in (err.details() or "")
    # A revoked grant.
    await revoke_consumers_grant(fed)
    for err in (
        await refused_exchange(xiamen, consumer(fed), exchange_cond),
        await refused_subscribe(xiamen, consumer(fed), subscribe_cond),
    ):
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in (err.details() or "")
    # A grant that ends: served until then, refused after (polled, bounded).
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    short = fed.xiamen.setup.agency(agency_code(4, XIAMEN))
    await grant(fed, short, not_after=ts(end))
    assert len(records(await exchange(xiamen, short, exchange_cond))) == MANY
    err = await poll_refused(lambda: exchange(xiamen, short, exchange_cond))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "ended at" in (err.details() or "")
    err = await refused_subscribe(xiamen, short, subscribe_cond)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "ended at" in (err.details() or "")


async def test_a_grant_revoked_during_a_routed_subscription_stops_it_at_its_next_page(
    fed: Federation,
) -> None:
    xiamen, code = fed.xiamen.running, COND.resource_code
    async with open_channel(xiamen, consumer(fed)) as ch:
        call = sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=MANY - 1),
            metadata=((REQUEST_ID_KEY, "rid-revoked"),),
        )
        await read_changes(call, 1)
        await revoke_consumers_grant(fed)
        # The next change wakes 福州's page, which asks for access again.
        await submit(fed.fuzhou, code, "c-2", [company(MANY)])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(call.read(), WAIT_S)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (err.value.details() or "")
    # Every hop recorded the refusal under the request id.
    for member in fed.members:
        await audited(member, "rid-revoked", "PERMISSION_DENIED")
