"""What observability costs Verify: two fresh province nodes, alike but for what the second one
enables (its ``[metrics]`` listener, and whatever else :data:`FEATURES` lists), each
``govnode serve`` in a process of its own with the same records, measured in alternation.

A feature is a name and the GOVNODE_... environment overrides that switch it on (the config
file stays the same). Tracing adds its entry to :data:`FEATURES`; ``--observe NAME`` (repeat
it) picks which ones the observed node runs with, so the same scenario measures metrics alone,
tracing alone, or both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from node.ports import free_port

#: A feature's name -> the environment overrides that switch it on, given a free port.
FEATURES: dict[str, Callable[[int], dict[str, str]]] = {
    "metrics": lambda port: {"GOVNODE_METRICS__LISTEN": f"127.0.0.1:{port}"},
}


@dataclass(frozen=True)
class Observed:
    """The environment of the observed node and where its metrics are (None: not enabled)."""

    env: dict[str, str]
    metrics_port: int | None


def observed(features: tuple[str, ...]) -> Observed:
    env: dict[str, str] = {}
    metrics_port = None
    for name in features:
        port = free_port()
        env.update(FEATURES[name](port))
        if name == "metrics":
            metrics_port = port
    return Observed(env, metrics_port)


@contextlib.asynccontextmanager
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def verify_calls_counted(port: int) -> float:
    """How many Verify calls the node's /metrics says it handled: proof that the metrics were
    on and counting during the run."""
    async with _session() as session, session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        text = await reply.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels.get("grpc_method") == "Verify"
    )
