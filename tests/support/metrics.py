"""Reading a running node's metrics listener (node.ops) as Prometheus would: /metrics parsed
with prometheus_client's own parser, and /healthz."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from node.app import RunningNode


async def scrape(node: RunningNode, path: str = "/metrics") -> str:
    """GET ``path`` on the node's loopback metrics listener (200 expected)."""
    assert node.metrics_listener is not None, "start the node with tests.support.nodes.with_metrics"
    url = f"http://127.0.0.1:{node.metrics_listener.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.text()


async def samples(node: RunningNode) -> list[Sample]:
    text = await scrape(node)
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
