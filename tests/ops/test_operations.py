"""Issue 16's operations together: a province and its cities run with the operator console,
the metrics listener AND tracing all on. A 厦门 agency's Verify on a province resource is
routed 厦门 -> province: one trace across both nodes, counted on both nodes' /metrics (the city
as a server and as a client, the province as a server), while the province's console lists its
cities as peers and the city's console serves its own overview with its province link. Real
nodes, real mutual TLS, each console reached over HTTPS with an operator certificate of its own
node's CA (the browser is tests/console/test_browser.py's business)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from govnode.v1 import sharing_pb2, sharing_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.samples import Sample

from gateway.interceptors import REQUEST_ID_KEY
from node.catalog import ShareMethod, ShareType
from tests.support.console import operator, session
from tests.support.databases import NewDatabaseUrl, sqlite_urls
from tests.support.entries import item
from tests.support.metrics import samples, value
from tests.support.nodes import (
    FUZHOU,
    PROVINCE,
    XIAMEN,
    Federation,
    Member,
    channel,
    entry_of,
    federation,
)
from tests.support.sharing import batch, submit

ITEMS = (item("tyshxydm", key=True, required=True), item("qymc"))
ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司"}
RESOURCE = f"{PROVINCE}-3-000001"
VERIFY = {"grpc_service": "govnode.v1.SharingService", "grpc_method": "Verify"}
_PEER_ROW = re.compile(r"<tr>\s*<td>(\d{6})</td>\s*<td>[^<]*</td>\s*<td class=\"(\w+)\">")

Recorders = dict[str, InMemorySpanExporter]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Federation, Recorders]]:
    exporters = {region: InMemorySpanExporter() for region in (PROVINCE, FUZHOU, XIAMEN)}
    providers = {}
    for region, exporter in exporters.items():
        providers[region] = TracerProvider()
        providers[region].add_span_processor(SimpleSpanProcessor(exporter))
    urls: NewDatabaseUrl = sqlite_urls(tmp_path)  # nothing here depends on the backend
    async with federation(tmp_path, urls, providers, metrics=True, console=True) as fed:
        shared = {
            "share_type": ShareType.UNCONDITIONAL,
            "share_methods": (ShareMethod.VERIFY,),
            "items": ITEMS,
        }
        await fed.province.register(entry_of(PROVINCE, 1, **shared))
        acks = await submit(
            fed.province.running, fed.province.agency(), [batch(RESOURCE, "b", [ACME])]
        )
        assert acks[0].accepted == 1, acks
        await fed.converged(1)
        yield fed, exporters


def spans_of(exporter: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if (s.attributes or {}).get("govnode.request_id") == request_id
    ]


def one(spans: list[ReadableSpan], kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.kind is kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def overview(member: Member) -> str:
    """The console's overview as an observer of that node (its own CA's operator)."""
    console = member.running.console
    assert console is not None
    root = member.setup.config.path(member.setup.config.tls.root)
    async with (
        session(operator(member.setup, "observer"), root) as http,
        http.get(console.url + "/") as response,
    ):
        assert response.status == 200, await response.text()
        return await response.text()


async def test_a_routed_call_is_traced_counted_and_the_consoles_show_the_federation(
    running: tuple[Federation, Recorders],
) -> None:
    fed, exporters = running
    city, province = fed.xiamen, fed.province
    city_before, province_before = await samples(city.running), await samples(province.running)

    request = sharing_pb2.VerifyRequest(
        resource_code=RESOURCE, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": ACME["qymc"]}
    )
    async with channel(city.running, city.agency()) as ch:
        reply = await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
            request, timeout=10, metadata=((REQUEST_ID_KEY, "rid-ops-1"),)
        )
    assert reply.all_match

    # One trace across both nodes: the city's server and client spans, the province's server
    # span the child of the city's client span.
    at_city = spans_of(exporters[XIAMEN], "rid-ops-1")
    at_province = spans_of(exporters[PROVINCE], "rid-ops-1")
    c_server, c_client = one(at_city, SpanKind.SERVER), one(at_city, SpanKind.CLIENT)
    p_server = one(at_province, SpanKind.SERVER)
    assert len({s.context.trace_id for s in (c_server, c_client, p_server)}) == 1
    assert p_server.parent is not None
    assert p_server.parent.span_id == c_client.context.span_id
    assert not spans_of(exporters[FUZHOU], "rid-ops-1")  # not 福州's resource

    # Both nodes' /metrics count the call.
    city_after, province_after = await samples(city.running), await samples(province.running)

    def grew(before: list[Sample], after: list[Sample], name: str) -> float:
        labels = {**VERIFY, "grpc_code": "OK"}
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(city_before, city_after, "grpc_server_handled_total") == 1
    assert grew(city_before, city_after, "grpc_client_handled_total") == 1
    assert grew(province_before, province_after, "grpc_server_handled_total") == 1

    # The province's console lists its cities as peers; the city's serves its own overview,
    # its province the one peer.
    peers = dict(_PEER_ROW.findall(await overview(province)))
    assert set(peers) == {FUZHOU, XIAMEN}, peers
    page = await overview(city)
    assert f"<dd>{XIAMEN}</dd>" in page
    assert set(dict(_PEER_ROW.findall(page))) == {PROVINCE}
