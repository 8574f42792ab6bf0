"""What observability costs Verify: two fresh province nodes, alike but for what the second one
enables (its ``[metrics]`` listener, and whatever else :data:`FEATURES` lists), each
``govnode serve`` in a process of its own with the same records, measured in alternation.

A feature is a name and the GOVNODE_... environment overrides that switch it on (the config
file stays the same). Today only metrics is one: tracing's cost is measured by its own scenario
(bench/tracing_cost.py, with the SDK in process). ``--observe NAME`` (repeat it) picks which
features the observed node runs with, so a feature added to :data:`FEATURES` is measured alone
or with the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GrpcMetrics, metered
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


class _Ended:
    """What the counting wrapper asks of a servicer context once a call returned."""

    def code(self) -> None:
        return None


def counting_us(iterations: int = 100_000) -> float:
    """Microseconds the guard's metrics add to one unary call: the counting wrapper
    (gateway.metrics.metered: started, handled with its code, the handling time) around a
    handler that does nothing, minus the bare handler. Deterministic where the end-to-end
    ratio is at the mercy of a shared machine."""
    registry = CollectorRegistry()
    method = GrpcMetrics(registry, "server").method("/govnode.v1.SharingService/Verify", "unary")

    async def handler(request: Any, context: Any) -> Any:
        return request

    counted = metered(handler, method)
    context: Any = _Ended()

    async def timed(call: Callable[[Any, Any], Awaitable[Any]]) -> float:
        began = time.perf_counter()
        for _ in range(iterations):
            await call(b"", context)
        return time.perf_counter() - began

    async def both() -> float:
        bare = min([await timed(handler) for _ in range(3)])
        with_metrics = min([await timed(counted) for _ in range(3)])
        return (with_metrics - bare) / iterations * 1e6

    return round(asyncio.run(both()), 2)
