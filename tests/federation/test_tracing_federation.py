"""Tracing across hops: a 厦门 agency's Verify on a 福州 resource (厦门 -> province -> 福州)
is one trace, continuing the agency's own traceparent, with a SERVER span per node and a CLIENT
span per forwarded call, each naming the same govnode request id and no caller identity; a
refusal at the owner marks the spans as errors; a province with tracing off passes the trace
on; the health service's Watch stream still works with tracing on. Real nodes, real mutual
TLS, each node recording its spans with a provider of its own (the SDK's in-memory exporter)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.interceptors import REQUEST_ID_KEY
from node.catalog import ShareMethod, ShareType
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, item
from tests.support.nodes import (
    FUZHOU,
    PROVINCE,
    XIAMEN,
    Federation,
    channel,
    entry_of,
    federation,
)
from tests.support.sharing import batch, submit

VERIFY = "/govnode.v1.SharingService/Verify"
OPEN, CONDITIONAL = f"{FUZHOU}-3-000001", f"{FUZHOU}-3-000002"
ITEMS = (item("tyshxydm", key=True, required=True), item("qymc"))
ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司"}
#: The agency system's own trace (W3C example ids): the node continues it.
AGENCY_TRACE = "0af7651916cd43dd8448eb211c80319c"
AGENCY_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{AGENCY_TRACE}-{AGENCY_SPAN}-01"


class Recorder:
    """One node's provider and the spans it finished."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, request_id: str) -> list[ReadableSpan]:
        return [
            s
            for s in self.exporter.get_finished_spans()
            if (s.attributes or {}).get("govnode.request_id") == request_id
        ]


@pytest.fixture
async def traced(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> AsyncIterator[tuple[Federation, dict[str, Recorder]]]:
    recorders = {region: Recorder() for region in (PROVINCE, FUZHOU, XIAMEN)}
    providers = {region: r.provider for region, r in recorders.items()}
    async with federation(tmp_path, db_urls, providers) as fed:
        shared = {
            "share_type": ShareType.UNCONDITIONAL,
            "share_methods": (ShareMethod.VERIFY,),
            "items": ITEMS,
        }
        await fed.fuzhou.register(entry_of(FUZHOU, 1, **shared))
        await fed.fuzhou.register(
            entry_of(FUZHOU, 2, share_methods=(ShareMethod.VERIFY,), items=ITEMS)
        )
        for code in (OPEN, CONDITIONAL):
            acks = await submit(fed.fuzhou.running, fed.fuzhou.agency(), [batch(code, "b", [ACME])])
            assert acks[0].accepted == 1, acks
        await fed.converged(2)
        yield fed, recorders


async def verify(fed: Federation, code: str, request_id: str, **kw: Any) -> Any:
    request = sharing_pb2.VerifyRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": ACME["qymc"]}
    )
    metadata = ((REQUEST_ID_KEY, request_id), ("traceparent", TRACEPARENT))
    async with channel(fed.xiamen.running, fed.xiamen.agency()) as ch:
        return await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
            request, timeout=10, metadata=metadata, **kw
        )


def one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, span.name
    return span.parent.span_id


def values(spans: list[ReadableSpan]) -> str:
    return repr([dict(s.attributes or {}) for s in spans])


async def test_a_routed_verify_is_one_trace_with_a_span_per_hop(
    traced: tuple[Federation, dict[str, Recorder]],
) -> None:
    fed, rec = traced
    assert (await verify(fed, OPEN, "rid-trace-1")).all_match

    xiamen, province, fuzhou = (rec[r].spans("rid-trace-1") for r in (XIAMEN, PROVINCE, FUZHOU))
    x_server, x_client = one(xiamen, SpanKind.SERVER), one(xiamen, SpanKind.CLIENT)
    p_server, p_client = one(province, SpanKind.SERVER), one(province, SpanKind.CLIENT)
    f_server = one(fuzhou, SpanKind.SERVER)
    path = [x_server, x_client, p_server, p_client, f_server]

    # One trace: the agency's own, each hop the child of the one before.
    assert {format(s.context.trace_id, "032x") for s in path} == {AGENCY_TRACE}
    assert parent_of(x_server) == int(AGENCY_SPAN, 16)
    for child, parent in zip(path[1:], path, strict=False):
        assert parent_of(child) == parent.context.span_id, (child.name, parent.name)
    assert all(s.name == VERIFY for s in path)

    for span in (x_server, p_server, f_server):
        attrs = span.attributes or {}
        assert attrs["rpc.system"] == "grpc"
        assert attrs["rpc.service"] == "govnode.v1.SharingService"
        assert attrs["rpc.method"] == "Verify"
        assert attrs["rpc.grpc.status_code"] == 0
        # The original caller's role at every hop, not the forwarding node's.
        assert attrs["govnode.caller_role"] == "agency"
        assert span.status.status_code is not StatusCode.ERROR
    assert "govnode.forwarded" not in (x_server.attributes or {})
    assert (p_server.attributes or {})["govnode.forwarded"] is True
    assert (f_server.attributes or {})["govnode.forwarded"] is True
    assert (x_client.attributes or {})["govnode.peer_region"] == PROVINCE
    assert (p_client.attributes or {})["govnode.peer_region"] == FUZHOU

    # The request id ties the spans to the owner's audit record ...
    [record] = await fed.fuzhou.running.audit.query(request_id="rid-trace-1")
    assert record.outcome == "OK"
    # ... which alone names the caller: no agency code on any span.
    assert agency_code(1, XIAMEN) in record.caller
    assert agency_code(1, XIAMEN) not in values(xiamen + province + fuzhou)


async def test_a_refusal_at_the_owner_marks_every_hop_as_an_error(
    traced: tuple[Federation, dict[str, Recorder]],
) -> None:
    fed, rec = traced
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await verify(fed, CONDITIONAL, "rid-trace-2")
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    spans = [s for r in (XIAMEN, PROVINCE, FUZHOU) for s in rec[r].spans("rid-trace-2")]
    assert len(spans) == 5
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR, span.name
        assert (span.attributes or {})["rpc.grpc.status_code"] == 7


async def test_a_province_without_tracing_passes_the_trace_on(
    traced: tuple[Federation, dict[str, Recorder]],
) -> None:
    fed, rec = traced
    await fed.province.stop()
    fed.province.tracer_provider = None  # [tracing] exporter = "none"
    await fed.province.start()
    assert (await verify(fed, OPEN, "rid-trace-3")).all_match
    assert rec[PROVINCE].spans("rid-trace-3") == []
    x_client = one(rec[XIAMEN].spans("rid-trace-3"), SpanKind.CLIENT)
    f_server = one(rec[FUZHOU].spans("rid-trace-3"), SpanKind.SERVER)
    assert f_server.context.trace_id == int(AGENCY_TRACE, 16)
    # The province is a gap in the trace, not its end: 福州 continues from 厦门's call.
    assert parent_of(f_server) == x_client.context.span_id


async def test_a_new_trace_sampled_out_at_the_first_hop_is_recorded_at_none(
    traced: tuple[Federation, dict[str, Recorder]],
) -> None:
    """厦门 records no new trace (``sample_ratio = 0``); the province and 福州 record every
    trace they are asked to. A call with no traceparent is then recorded nowhere: 厦门 tells
    the next hops "not sampled". A caller's sampled trace is still recorded at every hop."""
    fed, rec = traced
    await fed.xiamen.stop()
    config = fed.xiamen.setup.config
    fed.xiamen.setup.config = config.model_copy(
        update={"tracing": config.tracing.model_copy(update={"sample_ratio": 0.0})}
    )
    await fed.xiamen.start()
    request = sharing_pb2.VerifyRequest(
        resource_code=OPEN, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": ACME["qymc"]}
    )
    async with channel(fed.xiamen.running, fed.xiamen.agency()) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        for n in range(3):
            reply = await stub.Verify(
                request, timeout=10, metadata=((REQUEST_ID_KEY, f"rid-untraced-{n}"),)
            )
            assert reply.all_match
    for n in range(3):
        for region in (XIAMEN, PROVINCE, FUZHOU):
            assert rec[region].spans(f"rid-untraced-{n}") == [], region
        # Served all the same: the owner's audit log has each call.
        [record] = await fed.fuzhou.running.audit.query(request_id=f"rid-untraced-{n}")
        assert record.outcome == "OK"
    assert (await verify(fed, OPEN, "rid-trace-4")).all_match
    for region in (XIAMEN, PROVINCE, FUZHOU):
        server = one(rec[region].spans("rid-trace-4"), SpanKind.SERVER)
        assert server.context.trace_id == int(AGENCY_TRACE, 16)


async def test_health_watch_streams_with_tracing_on(
    traced: tuple[Federation, dict[str, Recorder]],
) -> None:
    fed, rec = traced
    async with channel(fed.xiamen.running, fed.xiamen.agency()) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(),
            metadata=((REQUEST_ID_KEY, "rid-watch"), ("traceparent", TRACEPARENT)),
        )
        first = await anext(aiter(watch))
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        # A malformed traceparent is ignored (a trace of the node's own), never refused.
        garbage = "00-" + "z" * 32 + "-" + "0" * 16 + "-01" + "-x" * 200
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(),
            metadata=((REQUEST_ID_KEY, "rid-check"), ("traceparent", garbage)),
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    check = one(rec[XIAMEN].spans("rid-check"), SpanKind.SERVER)
    assert check.name == "/grpc.health.v1.Health/Check"
    assert (check.attributes or {})["rpc.grpc.status_code"] == 0
    assert check.parent is None
