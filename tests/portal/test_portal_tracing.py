"""Tracing through the portal: a browser's request that carries a W3C ``traceparent`` is one
trace from the browser through the portal (its HTTP span, exported by ``govnode portal serve``
with ``[tracing] exporter = "console"``) into the node (its span of the portal's gRPC call,
recorded in the test by the node's own provider); a request without one starts a trace at the
portal; a malformed header is ignored, never refused; and the public cannot make the portal
record its requests by sending a "sampled" flag."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from node.app import RunningNode, start_node
from tests.support.nodes import ProvinceSetup, make_province
from tests.support.portal import client, portal_config, run_portal

BROWSER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSER_SPAN = "00f067aa0ba902b7"
LIST = "/govnode.v1.OpenDataService/ListOpenResources"


def printed_spans(text: str) -> list[dict[str, Any]]:
    """The ConsoleSpanExporter's output: JSON documents one after another."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        span, at = decoder.raw_decode(text, at)
        spans.append(span)
    return spans


def hex_id(value: str) -> str:
    return value.removeprefix("0x")


def recorded() -> tuple[InMemorySpanExporter, TracerProvider]:
    """The node's spans, kept in memory (its sampler follows the caller's decision)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def traced_portal(setup: ProvinceSetup, node: RunningNode, directory: Path, tracing: str) -> Path:
    config = portal_config(setup, node, directory)
    with config.open("a", encoding="utf-8") as f:
        f.write(f"\n[tracing]\n{tracing}\n")
    return config


async def test_a_browsers_trace_continues_through_the_portal_into_the_node(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    exporter, provider = recorded()
    node = await start_node(setup.config, tracer_provider=provider)
    try:
        config = traced_portal(setup, node, tmp_path / "portal", 'exporter = "console"')
        stdout = tmp_path / "portal.out"
        async with run_portal(config, stdout=stdout) as portal, client() as web:
            headers = {"traceparent": f"00-{BROWSER_TRACE}-{BROWSER_SPAN}-01"}
            async with web.get(f"{portal.url}/api/v1/datasets", headers=headers) as response:
                assert response.status == 200
            async with web.get(f"{portal.url}/api/v1/datasets") as response:
                assert response.status == 200
            bad = {"traceparent": "00-not-a-trace-" + "x" * 600}
            async with web.get(f"{portal.url}/api/v1/datasets", headers=bad) as response:
                assert response.status == 200
        # The portal has stopped: its spans were flushed at exit.
        printed = printed_spans(await asyncio.to_thread(stdout.read_text, encoding="utf-8"))
    finally:
        await node.stop(grace=0)

    portal_spans = [s for s in printed if s["name"] == "GET /api/v1/datasets"]
    node_spans = [s for s in exporter.get_finished_spans() if s.name == LIST]
    assert len(portal_spans) == 3 and len(node_spans) == 3
    assert all(s["kind"] == "SpanKind.SERVER" for s in portal_spans)
    assert all(s.kind is SpanKind.SERVER for s in node_spans)

    # The browser's trace: the portal's span is the child of the browser's, the node's of the
    # portal's.
    continued, fresh, after_bad = portal_spans
    assert hex_id(continued["context"]["trace_id"]) == BROWSER_TRACE
    assert hex_id(continued["parent_id"]) == BROWSER_SPAN
    assert continued["attributes"]["http.response.status_code"] == 200
    assert continued["resource"]["attributes"]["service.name"] == "govnode-portal"
    # A request without one, or with a malformed one, starts a trace of its own at the portal.
    for span in (fresh, after_bad):
        assert span["parent_id"] is None
        assert hex_id(span["context"]["trace_id"]) != BROWSER_TRACE

    for at_portal, at_node in zip(portal_spans, node_spans, strict=True):
        assert format(at_node.context.trace_id, "032x") == hex_id(at_portal["context"]["trace_id"])
        assert at_node.parent is not None
        assert format(at_node.parent.span_id, "016x") == hex_id(at_portal["context"]["span_id"])
        assert (at_node.attributes or {})["govnode.caller_role"] == "portal"


async def test_the_public_cannot_make_its_requests_recorded(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    exporter, provider = recorded()
    node = await start_node(setup.config, tracer_provider=provider)
    try:
        config = traced_portal(
            setup, node, tmp_path / "portal", 'exporter = "console"\nsample_ratio = 0.0'
        )
        stdout = tmp_path / "portal.out"
        async with run_portal(config, stdout=stdout) as portal, client() as web:
            # "01": the browser asks for its trace to be recorded.
            headers = {"traceparent": f"00-{BROWSER_TRACE}-{BROWSER_SPAN}-01"}
            async with web.get(f"{portal.url}/api/v1/datasets", headers=headers) as response:
                assert response.status == 200
        printed = printed_spans(await asyncio.to_thread(stdout.read_text, encoding="utf-8"))
    finally:
        await node.stop(grace=0)
    # The portal's own ratio (none) decided, and the node followed the portal.
    assert printed == []
    assert [s for s in exporter.get_finished_spans() if s.name == LIST] == []
