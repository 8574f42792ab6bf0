"""No request can stall the node while it is parsed (第三十七条 availability): a request over its
method's size limit is refused RESOURCE_EXHAUSTED, and a map with more entries than any request
needs is refused INVALID_ARGUMENT naming it, both before the message is parsed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import DataItem, DataType, ResourceEntry, ShareMethod, ShareType
from node.servicers.convert import entry_to_proto
from tests.support import hostile_maps
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    serve_process,
    wait_serving,
)

Province = tuple[ProvinceSetup, RunningNode]
CODE = "350000-3-000001"
SERVING = health_pb2.HealthCheckResponse.SERVING


def counted_entry(**fields: object) -> ResourceEntry:
    values: dict[str, object] = dict(
        resource_code=CODE,
        name="统计登记",
        provider_name="福建省公安厅",
        provider_code=PUBLIC_SECURITY,
        classification="departmental",
        items=(
            DataItem(
                name="bh", title="编号", data_type=DataType.STRING, key=True, sensitivity_level=1
            ),
            DataItem(name="sl", title="数量", data_type=DataType.INTEGER, sensitivity_level=1),
        ),
        share_type=ShareType.UNCONDITIONAL,
        share_methods=(ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
        publish_date="2025-01-15",
    )
    return ResourceEntry(**(values | fields))


# --- over the wire, with `govnode serve` in a process of its own ---------------------------
# A separate process: a stalled node must not stall the test's own event loop, so the health
# checks' deadlines fire and the test fails instead of hanging.


@dataclass
class Served:
    address: str
    provider: TlsFiles
    consumer: TlsFiles
    hostile: Path


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[Served]:
    setup = make_province(tmp_path / "province", db_url)
    provider = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    consumer = setup.agency(CIVIL_AFFAIRS, "福建省民政厅")
    hostile = tmp_path / "hostile"
    # The node's process writes the hostile requests first, in its own hash order (see
    # tests.support.hostile_maps), then serves as `govnode serve` does.
    launch = (
        "import sys; from tests.support.hostile_maps import write_requests; "
        "write_requests(sys.argv.pop(1), sys.argv.pop(1)); "
        "from node.cli import main; main()"
    )
    proc = serve_process(
        setup.config_path, command=[sys.executable, "-c", launch, str(hostile), CODE]
    )
    try:
        wait_serving(setup.config.node.listen, provider.key.parent, proc)
        yield Served(setup.config.node.listen, provider, consumer, hostile)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


async def health_until(done: asyncio.Event, address: str, files: TlsFiles) -> list[int]:
    """Health statuses, one check every 0.1 s until ``done`` (at most 300 checks); each check
    must answer within 2 s, which a node whose event loop is blocked for seconds cannot."""
    statuses = []
    async with secure_channel(address, files, timeout=2) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(300):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            statuses.append(reply.status)
            if done.is_set() and len(statuses) >= 5:
                break
            await asyncio.sleep(0.1)
    return statuses


async def test_huge_maps_are_refused_before_they_are_parsed_and_the_node_keeps_answering(
    served: Served,
) -> None:
    """Each hostile request holds one map of 600,000 entries laid out to make the parser take
    seconds (on the unchanged node: about 4 s each, every call waiting meanwhile)."""
    async with secure_channel(served.address, served.provider, timeout=30) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(counted_entry()))
        )
    raw = {
        name: (served.hostile / name).read_bytes()
        for name in (hostile_maps.VERIFY, hostile_maps.SUBMIT, hostile_maps.COMPARE)
    }
    entries = f"{hostile_maps.ENTRIES:,}"

    async def verify() -> grpc.aio.AioRpcError:
        async with secure_channel(served.address, served.consumer, timeout=60) as ch:
            call = ch.unary_unary(
                "/govnode.v1.SharingService/Verify",
                request_serializer=None,
                response_deserializer=sharing_pb2.VerifyResponse.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(raw[hostile_maps.VERIFY])
        return err.value

    async def submit() -> grpc.aio.AioRpcError:
        async def batches() -> AsyncIterator[bytes]:
            yield raw[hostile_maps.SUBMIT]

        async with secure_channel(served.address, served.provider, timeout=60) as ch:
            call = ch.stream_stream(
                "/govnode.v1.SharingService/Submit",
                request_serializer=None,
                response_deserializer=sharing_pb2.SubmitAck.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                _ = [ack async for ack in call(batches())]
        return err.value

    async def compare(request: bytes) -> grpc.aio.AioRpcError:
        async with secure_channel(served.address, served.consumer, timeout=60) as ch:
            call = ch.unary_stream(
                "/govnode.v1.SharingService/Compare",
                request_serializer=None,
                response_deserializer=sharing_pb2.CompareResult.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                _ = [result async for result in call(request)]
        return err.value

    done = asyncio.Event()

    async def hostile() -> list[grpc.aio.AioRpcError]:
        try:
            # The last: the same map, then a field of wire type 7, which does not exist.
            return list(
                await asyncio.gather(
                    verify(),
                    submit(),
                    compare(raw[hostile_maps.COMPARE]),
                    compare(raw[hostile_maps.COMPARE] + b"\x0f"),
                )
            )
        finally:
            done.set()

    async with asyncio.timeout(120):
        (verified, submitted, compared, malformed), statuses = await asyncio.gather(
            hostile(), health_until(done, served.address, served.consumer)
        )
    assert set(statuses) == {SERVING}
    # Verify takes no bulk data: its limit is far below 4 MiB, checked before anything else.
    assert verified.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (verified.details() or "").startswith(
        "/govnode.v1.SharingService/Verify: the request is 4,183,634 bytes; this node takes "
        "at most 262,144 bytes (256 KiB) for this method"
    ), verified.details()
    # Submit and Compare take bulk data, up to 4 MiB: the map is counted before it is parsed.
    assert submitted.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert submitted.details() == (f"records[0].values: at most 10,000 entries, got {entries}"), (
        submitted.details()
    )
    assert compared.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert compared.details() == (f"records[0].claimed: at most 10,000 entries, got {entries}"), (
        compared.details()
    )

    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (malformed.details() or "").startswith(
        "/govnode.v1.SharingService/Compare: the request is not a valid message for this method"
    ), malformed.details()

    # The node goes on as before.
    async with secure_channel(served.address, served.provider, timeout=30) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)

        async def good() -> AsyncIterator[sharing_pb2.SubmitBatch]:
            yield sharing_pb2.SubmitBatch(
                resource_code=CODE,
                batch_id="good",
                records=[common_pb2.Record(values={"bh": "1", "sl": "7"})],
            )

        acks = [ack async for ack in stub.Submit(good())]
    assert (acks[0].accepted, acks[0].rejected) == (1, 0)
    async with secure_channel(served.address, served.consumer, timeout=30) as ch:
        reply = await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
            sharing_pb2.VerifyRequest(resource_code=CODE, key={"bh": "1"}, claimed={"sl": "7"})
        )
    assert reply.all_match


# --- the limits, over the wire (in-process node) --------------------------------------------


@pytest.fixture
async def registered(province: Province) -> Province:
    setup, node = province
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(counted_entry()))
        )
    return province


def names(count: int, prefix: str = "x") -> dict[str, str]:
    return {f"{prefix}{i}": "1" for i in range(count)}


async def test_a_request_over_its_methods_limit_is_refused_unread_and_audited(
    registered: Province,
) -> None:
    setup, node = registered
    request = access_pb2.ApplyRequest(resource_code=CODE, items=["bh"], purpose="用" * 100_000)
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await access_pb2_grpc.AccessServiceStub(ch).Apply(request)
        audit = await audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(audit_pb2.QueryAuditRequest())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    message = (
        f"/govnode.v1.AccessService/Apply: the request is {request.ByteSize():,} bytes; this "
        "node takes at most 262,144 bytes (256 KiB) for this method"
    )
    assert err.value.details() == message
    # Audited like any refusal, although the request was never parsed (no resource code).
    applied = [r for r in audit.records if r.rpc_method.endswith("/Apply")]
    assert [(r.outcome, r.message, r.resource_code) for r in applied] == [
        ("RESOURCE_EXHAUSTED", message, "")
    ]


async def test_the_largest_requests_callers_need_pass_the_limits(registered: Province) -> None:
    """The guard lets them through to the servicer, which answers them as before (here with
    its own refusals: the names are not items of the resource, the application is unknown)."""
    setup, node = registered
    conditional = counted_entry(
        resource_code="350000-3-000002",
        share_type=ShareType.CONDITIONAL,
        share_conditions="用于行政审批",
    )
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
            catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(conditional))
        )
    long_names = [f"x{i:03d}" + "m" * 59 for i in range(1000)]  # 1,000 items of 63 characters
    text = "审" * 2000  # the longest purpose, justification or comment
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        access = access_pb2_grpc.AccessServiceStub(ch)
        sharing = sharing_pb2_grpc.SharingServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as applied:
            await access.Apply(
                access_pb2.ApplyRequest(
                    resource_code=conditional.resource_code,
                    items=long_names,
                    purpose=text,
                    legal_basis=text,
                )
            )
        # Claims of 1,000 items of 150 characters each: 170 KB, and its map is counted.
        claims = {name: "证" * 50 for name in long_names}
        with pytest.raises(grpc.aio.AioRpcError) as verified:
            await sharing.Verify(
                sharing_pb2.VerifyRequest(resource_code=CODE, key={"bh": "1"}, claimed=claims)
            )
    async with channel(node, setup.authority(), timeout=30) as ch:
        review = access_pb2.ReviewApplicationRequest(
            application_id="350000-APP-0000000000",
            decision=common_pb2.REVIEW_DECISION_APPROVE,
            items=long_names,
            clear_text_items=long_names,
            justification=text,
            comment=text,
        )
        assert 140_000 < review.ByteSize() < 256 * 1024
        with pytest.raises(grpc.aio.AioRpcError) as reviewed:
            await access_pb2_grpc.AccessServiceStub(ch).ReviewApplication(review)
    assert (applied.value.code(), applied.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"items: 1000 names; resource {conditional.resource_code} has 2 items",
    )
    assert (verified.value.code(), verified.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "claimed: 1000 items; the resource has 2",
    )
    assert reviewed.value.code() == grpc.StatusCode.NOT_FOUND, reviewed.value.details()


async def test_a_map_with_more_entries_than_any_request_needs_is_refused_naming_it(
    registered: Province,
) -> None:
    setup, node = registered
    many = names(15_000)  # 175 KB: within Verify's size limit
    cases: list[tuple[str, object, str]] = [
        ("Verify", sharing_pb2.VerifyRequest(resource_code=CODE, claimed=many), "claimed"),
        ("Verify", sharing_pb2.VerifyRequest(resource_code=CODE, key=many), "key"),
        ("Query", sharing_pb2.QueryRequest(resource_code=CODE, key=many), "key"),
        (
            "Compare",
            sharing_pb2.CompareRequest(
                resource_code=CODE,
                records=[
                    sharing_pb2.CompareRecord(ref="a", key={"bh": "1"}),
                    sharing_pb2.CompareRecord(ref="b", key=many),
                ],
            ),
            "records[1].key",
        ),
    ]
    async with channel(node, setup.agency(CIVIL_AFFAIRS), timeout=30) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        for method, request, path in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                call = getattr(stub, method)(request)
                if method == "Compare":
                    _ = [r async for r in call]
                else:
                    await call
            assert (err.value.code(), err.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{path}: at most 10,000 entries, got 15,000",
            ), method
        # 10,000 entries pass: the servicer refuses them, naming the resource's items.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Verify(
                sharing_pb2.VerifyRequest(
                    resource_code=CODE, key={"bh": "1"}, claimed=names(10_000)
                )
            )
        assert err.value.details() == "claimed: 10000 items; the resource has 2"
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await access_pb2_grpc.AccessServiceStub(ch).RequestRecordChange(
                access_pb2.RequestRecordChangeRequest(
                    target=access_pb2.CHANGE_TARGET_RECORD,
                    action=access_pb2.CHANGE_ACTION_UPDATE,
                    resource_code=CODE,
                    key={"bh": "1"},
                    record=common_pb2.Record(values=names(12_000)),
                    reason="更正",
                )
            )
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "record.values: at most 10,000 entries, got 12,000",
    )

    # A record of 2,000 values (1,000 catalogued items and 1,000 temporary ones, the most a
    # record may carry) is not refused by the guard: the node rejects it for its own reasons.
    async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=CODE,
            batch_id="wide",
            records=[common_pb2.Record(values={"bh": "1", **names(1_999, "y")})] * 5,
        )

    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batch())]
    assert (acks[0].accepted, acks[0].rejected) == (0, 5)


async def test_a_map_split_over_several_copies_of_its_message_is_counted_whole(
    registered: Province,
) -> None:
    """protobuf merges a singular message field met several times on the wire: three copies of
    ``record`` with 5,000 entries each are one map of 15,000."""
    setup, node = registered
    request = access_pb2.RequestRecordChangeRequest(
        target=access_pb2.CHANGE_TARGET_RECORD,
        action=access_pb2.CHANGE_ACTION_UPDATE,
        resource_code=CODE,
        key={"bh": "1"},
        reason="更正",
    )
    raw = request.SerializeToString()
    for part in range(3):
        record = common_pb2.Record(values=names(5_000, f"p{part}_")).SerializeToString()
        raw += b"\x2a" + _varint(len(record)) + record  # field 5 (record), length-delimited
    assert len(access_pb2.RequestRecordChangeRequest.FromString(raw).record.values) == 15_000
    async with channel(node, setup.agency(PUBLIC_SECURITY), timeout=30) as ch:
        call = ch.unary_unary(
            "/govnode.v1.AccessService/RequestRecordChange",
            request_serializer=None,
            response_deserializer=access_pb2.RequestRecordChangeResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(raw)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "record.values: at most 10,000 entries, got 15,000",
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
