"""Streams that are not read must not starve the node (issue 11, item 7), over real mutual TLS:
unread Subscribe streams cost no database work while they wait, and a subscriber that reads
misses nothing; a caller's streams are capped; a stream whose consumer stops reading is ended
with ABORTED saying where to resume, and resuming loses nothing, also on a routed stream
(厦门 -> province -> 福州), which then ends at every node on its path.

A consumer that does not read is played by a channel without BDP probing: its HTTP/2 window
stays at 64 KiB, so the node's writes stop after a few hundred changes, as they would for any
client once its (often several MiB) window is full.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography.x509 import load_pem_x509_certificate
from govnode.v1 import federation_pb2, federation_pb2_grpc, sharing_pb2, sharing_pb2_grpc
from structlog.testing import capture_logs

from gateway.channel import secure_channel
from gateway.identity import identity_of
from gateway.interceptors import REQUEST_ID_KEY
from gateway.refusal import Refusal
from gateway.streams import Slot, StreamGate, StreamLimits
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.audit import AuditLog
from node.records._feed import ChangeFeed
from tests.support.databases import NewDatabaseUrl
from tests.support.exchange import CODE, MANY, WAIT_S, company, feed, read_changes
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    Federation,
    ProvinceSetup,
    channel,
    entry_of,
    federation,
    make_province,
    start,
    with_limits,
    with_submit_updates,
)
from tests.support.routed_exchange import COND, consumer, grant
from tests.support.routed_exchange import MANY as COND_MANY
from tests.support.routed_exchange import audited as audited_at
from tests.support.routed_exchange import company as cond_company
from tests.support.routed_exchange import submit as submit_at
from tests.support.sharing import COMPANIES, PEOPLE, PETITIONS, agency, batch, register

Province = tuple[ProvinceSetup, RunningNode]

#: Unread subscribers in the load test: many, but bounded (one caller, within its limit).
UNREAD = 30
#: Small commits while everyone waits at the tip, and records per commit.
COMMITS, PER_COMMIT = 6, 3
#: A batch whose changes (about 180 bytes each) overflow a 64 KiB window.
OVERFLOW = 500
STALL_S = 1.0
#: Province entries in the unread snapshot (about 1.1 KB of JSON each).
SNAPSHOT_ENTRIES = 80


def unread_channel(node: RunningNode, files: TlsFiles) -> grpc.aio.Channel:
    """A channel whose streams get a 64 KiB HTTP/2 window that never grows (no BDP probing)."""
    return secure_channel(
        node.address,
        files,
        timeout=30,
        streaming_timeout=None,
        extra_options=[("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)],
    )


def subscribe(ch: grpc.aio.Channel, after: int, code: str = CODE, request_id: str = "") -> Any:
    return sharing_pb2_grpc.SharingServiceStub(ch).Subscribe(
        sharing_pb2.SubscribeRequest(resource_code=code, after_sequence=after),
        metadata=((REQUEST_ID_KEY, request_id),) if request_id else (),
    )


async def read_to_the_end(call: Any, bound: int) -> tuple[list[Any], grpc.aio.AioRpcError]:
    """Every message a call still delivers (at most ``bound``), then the status it ends with."""
    received: list[Any] = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        for _ in range(bound + 1):
            message = await asyncio.wait_for(call.read(), WAIT_S)
            assert isinstance(message, sharing_pb2.RecordChange), "ended without a status"
            received.append(message)
    return received, err.value


async def start_with(tmp_path: Path, db_url: str, **limits: float) -> AsyncIterator[Province]:
    setup = with_submit_updates(make_province(tmp_path / "province", db_url), "apply")
    setup = with_limits(setup, **limits)
    node = await start(setup)
    try:
        for entry in (COMPANIES, PEOPLE, PETITIONS):
            await register(setup, node, entry)
        provider = agency(setup, MARKET_REGULATION)
        await feed(node, provider, "c-1", [company(n) for n in range(MANY)])
        yield setup, node
    finally:
        await node.stop(grace=0)


@pytest.fixture
async def crowded(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    """Room for UNREAD streams of one caller; the default stall timeout (60 s: never here)."""
    async for province in start_with(tmp_path, db_url, streams_per_caller=UNREAD + 2):
        yield province


@pytest.fixture
async def capped(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    async for province in start_with(tmp_path, db_url, streams_per_caller=3):
        yield province


@pytest.fixture
async def stalling(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    async for province in start_with(tmp_path, db_url, stream_stall_seconds=STALL_S):
        yield province


async def audited(node: RunningNode, caller_code: str, count: int, outcome: str = "") -> list[Any]:
    """The audit records of ``caller_code``'s Subscribe calls (waits, bounded, until there are
    ``count`` of them: a cancelled stream is audited as the node notices)."""
    log = AuditLog(node.db)
    found: list[Any] = []
    for _ in range(100):
        found = [
            r
            for r in await log.query(resource_code=CODE, limit=1000)
            if r.method.endswith("/Subscribe")
            and caller_code in r.caller
            and (not outcome or r.outcome == outcome)
        ]
        if len(found) >= count:
            break
        await asyncio.sleep(0.1)
    return found


async def test_unread_subscribers_do_no_database_work_while_they_wait_and_a_reader_misses_nothing(
    crowded: Province,
) -> None:
    setup, node = crowded
    provider = agency(setup, MARKET_REGULATION)
    idle = agency(setup, CIVIL_AFFAIRS)  # subscribes UNREAD times and never reads
    consumer = agency(setup, PUBLIC_SECURITY)
    commits = 0
    received: list[sharing_pb2.RecordChange] = []
    async with unread_channel(node, idle) as idle_ch, channel(node, consumer, timeout=30) as ch:
        unread = [subscribe(idle_ch, MANY) for _ in range(UNREAD)]
        reader = subscribe(ch, MANY)
        # Small commits while every stream waits at the tip of the feed.
        for k in range(COMMITS):
            rows = [company(MANY + k * PER_COMMIT + j) for j in range(PER_COMMIT)]
            await feed(node, provider, f"tip-{k}", rows)
            commits += 1
            received += await read_changes(reader, PER_COMMIT)
        # Each unread stream got those changes (its headers came with the first one) ...
        await asyncio.wait_for(asyncio.gather(*(c.initial_metadata() for c in unread)), WAIT_S)
        # ... then one batch bigger than their windows: they block, the reader does not.
        first = MANY + COMMITS * PER_COMMIT
        await feed(node, provider, "overflow", [company(first + j) for j in range(OVERFLOW)])
        commits += 1
        received += await read_changes(reader, OVERFLOW)
        async with channel(node, consumer) as vch:
            answer = await sharing_pb2_grpc.SharingServiceStub(vch).Verify(
                sharing_pb2.VerifyRequest(
                    resource_code=CODE,
                    key={"tyshxydm": company(first)["tyshxydm"]},
                    claimed={"dwmc": company(first)["dwmc"]},
                )
            )
        assert answer.found and answer.all_match
        # More commits while the unread streams sit blocked.
        for k in range(3):
            await feed(node, provider, f"late-{k}", [company(first + OVERFLOW + k)])
            commits += 1
            received += await read_changes(reader, 1)
        reader.cancel()
        for call in unread:
            call.cancel()
    # The reader got every change, in order, once.
    total = COMMITS * PER_COMMIT + OVERFLOW + 3
    assert [c.sequence for c in received] == list(range(MANY + 1, MANY + total + 1))
    # The unread streams went to the database about once per commit between them, not each
    # of them on every commit (nor while blocked): one read of the feed serves every waiting
    # subscriber. Before, each of them read twice per commit (the changes, then "nothing
    # more") and the first phase alone cost 2 x UNREAD x COMMITS reads.
    records = await audited(node, CIVIL_AFFAIRS, UNREAD)
    assert len(records) == UNREAD
    reads = sum(int(r.detail.get("reads", 0)) for r in records)
    assert reads <= 3 * commits, f"{UNREAD} unread subscribers read the feed {reads} times"


async def test_a_callers_streams_are_capped_and_a_closed_one_makes_room(capped: Province) -> None:
    setup, node = capped
    civil = agency(setup, CIVIL_AFFAIRS)
    async with channel(node, civil, timeout=30) as ch:
        # Three streams, each seen to be open (each has one change to deliver).
        calls = [subscribe(ch, MANY - 1) for _ in range(3)]
        for call in calls:
            await read_changes(call, 1)
        fourth = subscribe(ch, MANY - 1)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(fourth.read(), WAIT_S)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        message = err.value.details() or ""
        assert "at most 3 open streams per caller" in message, message
        assert "close one" in message, message
        # Another caller is not affected.
        async with channel(node, agency(setup, PUBLIC_SECURITY), timeout=30) as other:
            await read_changes(subscribe(other, MANY - 1), 1)
        # Once one is closed (and the node has noticed), a new one opens.
        calls[0].cancel()
        opened = None
        for _ in range(50):
            attempt = subscribe(ch, MANY - 1)
            try:
                opened = await asyncio.wait_for(attempt.read(), WAIT_S)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                await asyncio.sleep(0.1)
        assert isinstance(opened, sharing_pb2.RecordChange)
        for call in calls:
            call.cancel()
    refused = await audited(node, CIVIL_AFFAIRS, 1, outcome="RESOURCE_EXHAUSTED")
    assert refused, "the refusal is audited"


def test_the_gate_counts_per_caller_per_origin_node_and_in_all() -> None:
    """The counting behind the caps (the wire tests above show the caller cap at work)."""
    gate = StreamGate(StreamLimits(per_caller=2, per_origin_node=2, total=4))

    def refused(caller: str, origin: str = "") -> str:
        with pytest.raises(Refusal) as err:
            gate.admit(caller, origin)
        assert err.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        return err.value.message

    a1, a2 = gate.admit("a"), gate.admit("a")
    assert "at most 2 open streams per caller" in refused("a")
    b, c = gate.admit("b", "node-x"), gate.admit("c", "node-x")
    assert "this node has 4 open streams" in refused("d")
    a1.release()
    a1.release()  # released once, however often the clean-up runs
    assert gate.open_streams("a") == 1 and gate.total == 3
    assert "on behalf of the callers of node-x" in refused("d", "node-x")
    d = gate.admit("d")
    for slot in (a2, b, c, d):
        slot.release()
    assert gate.total == 0 and gate.open_streams("a") == 0


async def test_a_stopping_gate_waits_for_its_streams_to_end_and_no_longer() -> None:
    """What the stopping node waits for before it stops its server: every stream ended (its
    status handed to gRPC), or the wait's bound, after which it says how many are still open."""
    gate = StreamGate()
    assert await gate.ended(5.0) == 0  # none open: no wait
    first, second = gate.admit("a"), gate.admit("b")
    gate.stop()
    waiting = asyncio.ensure_future(gate.ended(30.0))
    first.release()
    await asyncio.sleep(0.01)
    assert not waiting.done(), "one stream is still open"
    second.release()
    assert await asyncio.wait_for(waiting, 5.0) == 0
    held = StreamGate()
    held.admit("c")
    held.stop()
    assert await held.ended(0.05) == 1


async def test_a_stream_that_outlives_the_stop_is_named_and_cancelled() -> None:
    """A stream whose work does not reach its next message boundary (here: an await that never
    ends, outside any wait the stop may cancel) is still open once the stop's wait is over:
    the gate says what it is doing and cancels it, and it then ends."""
    gate = StreamGate()
    admitted = asyncio.Event()
    slots: list[Slot] = []

    async def stream() -> None:
        slot = gate.admit("agency-a", method="/govnode.v1.SharingService/Subscribe")
        slots.append(slot)
        try:
            slot.doing = "making its next message"
            admitted.set()
            await asyncio.Event().wait()  # work that never ends by itself
        finally:
            slot.release()

    task = asyncio.ensure_future(stream())
    await asyncio.wait_for(admitted.wait(), 5.0)
    gate.stop()
    assert await gate.ended(0.05) == 1, "its work is not a wait the stop cancels"
    assert gate.describe_open() == ["Subscribe of agency-a: making its next message"]
    assert gate.cancel_open() == 1
    assert await gate.ended(5.0) == 0
    assert task.cancelled()
    assert slots[0].describe() == "Subscribe of agency-a: making its next message"


async def test_a_stream_not_read_past_the_stall_timeout_ends_aborted_and_resumes_without_gap(
    stalling: Province,
) -> None:
    setup, node = stalling
    civil = agency(setup, CIVIL_AFFAIRS)
    async with unread_channel(node, civil) as ch:
        call = subscribe(ch, 0)  # the whole feed: far more than its window holds
        await asyncio.wait_for(call.initial_metadata(), WAIT_S)
        # Not read: the node ends it once its writes have waited STALL_S (bounded wait here).
        [ended] = await audited(node, CIVIL_AFFAIRS, 1, outcome="ABORTED")
        # The consumer comes back: what the node sent, then the status.
        received, status = await read_to_the_end(call, MANY)
    assert status.code() is grpc.StatusCode.ABORTED
    message = status.details() or ""
    last = received[-1].sequence
    assert "not read" in message, message
    assert f"after_sequence={last}" in message, message
    assert 0 < last < MANY
    # Audited with what it delivered: the change whose write was waiting counts or not.
    assert ended.detail.get("records") in (len(received) - 1, len(received))
    # Resuming where the message says loses nothing and repeats nothing.
    async with channel(node, civil, timeout=30) as ch:
        resumed = subscribe(ch, last)
        received += await read_changes(resumed, MANY - last)
        resumed.cancel()
    assert [c.sequence for c in received] == list(range(1, MANY + 1))


@pytest.fixture
async def stalling_federation(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    """Three nodes with a short stall timeout; at 福州 COND with COND_MANY records; the 厦门
    consumer granted it for Subscribe."""
    async with federation(tmp_path, db_urls, stream_stall_seconds=STALL_S) as fed:
        await fed.fuzhou.register(COND)
        rows = [cond_company(n) for n in range(COND_MANY)]
        await submit_at(fed.fuzhou, COND.resource_code, "c-1", rows)
        await fed.converged(1)
        await grant(fed, consumer(fed))
        yield fed


async def test_a_catalog_snapshot_not_read_ends_aborted_and_is_taken_again_whole(
    stalling_federation: Federation,
) -> None:
    """A city that opens GetCatalogSnapshot and stops reading (here 福州's node certificate on
    a channel that never reads) is ended ABORTED once the part waiting for it has waited the
    stall timeout, told to take the snapshot again from its start; reading again, it gets that
    part, then the status; a new call takes the whole snapshot, and the province serves on."""
    fed = stalling_federation
    for n in range(1, SNAPSHOT_ENTRIES + 1):  # about 90 KB of JSON: more than a 64 KiB window
        await fed.province.register(entry_of(PROVINCE, n))
    fuzhou = node_tls_files(fed.fuzhou.setup.config)
    province = fed.province.running
    request = federation_pb2.GetCatalogSnapshotRequest()
    async with unread_channel(province, fuzhou) as ch:
        call = federation_pb2_grpc.FederationServiceStub(ch).GetCatalogSnapshot(request)
        await asyncio.wait_for(call.initial_metadata(), WAIT_S)
        log = AuditLog(province.db)
        aborted: list[Any] = []
        for _ in range(100):  # bounded: the stall timeout is STALL_S
            aborted = [
                r
                for r in await log.query(limit=1000)
                if r.method.endswith("/GetCatalogSnapshot") and r.outcome == "ABORTED"
            ]
            if aborted:
                break
            await asyncio.sleep(0.1)
        assert len(aborted) == 1, "the snapshot not read is ended, and audited, once"
        parts: list[Any] = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            for _ in range(SNAPSHOT_ENTRIES + 1):
                parts.append(await asyncio.wait_for(call.read(), WAIT_S))
    assert err.value.code() is grpc.StatusCode.ABORTED
    assert (err.value.details() or "").endswith(
        f"the stream was not read for {STALL_S:g} s (its consumer took no message), so the "
        "node ended it; call GetCatalogSnapshot again (a snapshot is taken whole, from its "
        "start)"
    ), err.value.details()
    assert parts and all(isinstance(p, federation_pb2.CatalogSnapshotPart) for p in parts)
    async with channel(province, fuzhou, timeout=30) as ch:
        whole = [
            part
            async for part in federation_pb2_grpc.FederationServiceStub(ch).GetCatalogSnapshot(
                request
            )
        ]
    codes = {json.loads(body)["resource_code"] for part in whole for body in part.entries_json}
    assert {entry_of(PROVINCE, n).resource_code for n in range(1, SNAPSHOT_ENTRIES + 1)} <= codes
    assert COND.resource_code in codes


async def test_a_routed_stream_not_read_ends_at_every_hop_and_resumes_without_gap(
    stalling_federation: Federation,
) -> None:
    fed = stalling_federation
    xiamen, code = fed.xiamen.running, COND.resource_code
    async with unread_channel(xiamen, consumer(fed)) as ch:
        call = subscribe(ch, 0, code, request_id="rid-stall")
        await asyncio.wait_for(call.initial_metadata(), WAIT_S)
        # 厦门, whose consumer does not read, ends it; the nodes behind stop serving it.
        await audited_at(fed.xiamen, "rid-stall", "ABORTED")
        await audited_at(fed.province, "rid-stall", "CANCELLED")
        await audited_at(fed.fuzhou, "rid-stall", "CANCELLED")
        received, status = await read_to_the_end(call, COND_MANY)
    assert status.code() is grpc.StatusCode.ABORTED
    last = received[-1].sequence
    assert f"after_sequence={last}" in (status.details() or ""), status.details()
    assert 0 < last < COND_MANY
    async with channel(xiamen, consumer(fed), timeout=30) as ch:
        resumed = subscribe(ch, last, code)
        received += await read_changes(resumed, COND_MANY - last)
        resumed.cancel()
    assert [c.sequence for c in received] == list(range(1, COND_MANY + 1))


async def test_stopping_ends_streams_waiting_on_their_consumer_or_caller_at_once(
    tmp_path: Path, db_url: str
) -> None:
    """A Subscribe whose consumer stopped reading (its writes wait on flow control) and a
    Submit waiting for the provider's next batch: stopping the node ends both at once with
    UNAVAILABLE, saying where to resume, instead of waiting out a 30 s grace period. The change
    whose write was waiting reaches the consumer before the status, and resuming after it
    loses nothing.

    The stop must return within 15 s: not a speed test (it takes well under a second here),
    but the line between ending the streams and waiting for them."""
    setup = with_submit_updates(make_province(tmp_path / "province", db_url), "apply")
    node = await start(setup)
    try:
        await register(setup, node, COMPANIES)
        provider = agency(setup, MARKET_REGULATION)
        await feed(node, provider, "c-1", [company(n) for n in range(MANY)])
        never = asyncio.Event()

        async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield batch(CODE, "c-2", [company(0, status="注销")])
            await never.wait()  # the provider keeps its stream open, with nothing to send

        async with (
            unread_channel(node, agency(setup, CIVIL_AFFAIRS)) as unread,
            channel(node, provider, timeout=30) as ch,
        ):
            call = subscribe(unread, 0)  # the whole feed: far more than its window holds
            await asyncio.wait_for(call.initial_metadata(), WAIT_S)
            submitting = sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())
            ack = await asyncio.wait_for(submitting.read(), WAIT_S)
            assert isinstance(ack, sharing_pb2.SubmitAck) and ack.accepted == 1
            try:
                await asyncio.wait_for(node.stop(grace=30), 15)
            except TimeoutError:
                pytest.fail("the stopping node waited for its streams (grace: 30 s)")
            received, status = await read_to_the_end(call, MANY + 1)
            with pytest.raises(grpc.aio.AioRpcError) as submit_end:
                await asyncio.wait_for(submitting.read(), WAIT_S)
        assert status.code() is grpc.StatusCode.UNAVAILABLE
        last = received[-1].sequence
        assert 0 < last < MANY
        assert (status.details() or "") == (
            "Subscribe: this node is stopping, so it ended the stream; once it is back (in a "
            "few seconds, or at another address of the node), subscribe again with "
            f"after_sequence={last} (the last change sent) to resume with no gap and no duplicate"
        )
        assert submit_end.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "read the acknowledgements, then resend on a new stream every batch not " in (
            submit_end.value.details() or ""
        )

        node = await start(setup)
        async with channel(node, agency(setup, CIVIL_AFFAIRS), timeout=30) as ch:
            resumed = subscribe(ch, last)
            received += await read_changes(resumed, MANY + 1 - last)
            resumed.cancel()
        # 1 .. MANY from the first batch, MANY + 1 the second batch's change, each once.
        assert [c.sequence for c in received] == list(range(1, MANY + 2))
    finally:
        await node.stop(grace=0)


async def test_a_stream_whose_work_outlives_the_stop_is_named_in_the_log_and_cancelled(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Subscribe whose work does not reach its next message (its read of the change feed does
    not return) cannot hold the stopping node for its 30 s grace: a few seconds after the stop
    began, the node logs the stream with what it was doing and cancels it, as it cancels a
    stream that waits: the subscriber gets UNAVAILABLE saying how to resume, and the stop
    returns.

    The stop must return within 15 s: not a speed test, but the line between cancelling the
    stream and waiting out the grace."""
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    reading = asyncio.Event()
    release = asyncio.Event()  # set at the end: the stuck read then returns, nothing is left
    stopping: asyncio.Future[None] | None = None

    async def stuck(self: ChangeFeed, code: str, after: int) -> list[Any]:
        reading.set()
        await release.wait()
        return []

    try:
        await register(setup, node, COMPANIES)
        await feed(node, agency(setup, MARKET_REGULATION), "c-1", [company(0)])
        monkeypatch.setattr(ChangeFeed, "_read", stuck)
        caller = agency(setup, CIVIL_AFFAIRS)
        async with channel(node, caller, timeout=30) as ch:
            call = subscribe(ch, 0)
            await asyncio.wait_for(reading.wait(), WAIT_S)
            with capture_logs() as logs:
                stopping = asyncio.ensure_future(node.stop(grace=30))
                try:
                    await asyncio.wait_for(asyncio.shield(stopping), 15)
                except TimeoutError:
                    pytest.fail("the stopping node waited out the grace for a stuck stream")
            received, status = await read_to_the_end(call, 0)
        assert received == []
        assert status.code() is grpc.StatusCode.UNAVAILABLE
        assert (status.details() or "") == (
            "Subscribe: this node is stopping, so it ended the stream; once it is back (in a "
            "few seconds, or at another address of the node), call Subscribe again with the "
            "same request"
        )
        outlived = [e for e in logs if e["event"] == "streams_outlived_stop"]
        assert len(outlived) == 1 and outlived[0]["count"] == 1
        assert outlived[0]["streams"] == [
            f"Subscribe of {identity_of(load_pem_x509_certificate(caller.chain.read_bytes()))}: "
            "making its next message"
        ]
        assert not [e for e in logs if e["event"] == "streams_still_open_at_stop"]
    finally:
        release.set()
        if stopping is None:
            await node.stop(grace=0)
        else:
            await stopping
