"""What metrics and tracing together cost Verify: the same node, the same records, both off
and both on.

The ``tracing-cost`` scenario provisions a province of its own, seeds it, and then serves it
alternately (same database, same port) with ``[tracing] exporter = "none"`` and no
``[metrics]`` listener, and with its metrics listener on (``GOVNODE_METRICS__LISTEN``) and
tracing on, the provider exactly as ``[tracing]`` makes it (gateway.tracing_setup) but
exporting into an exporter that drops the spans (so no collector's CPU is counted on this
2-core machine, but every span is built, ended, queued and handed over in batches as in
production), recording every trace or one in ten (``sample_ratio = 0.1``, the recommended
ratio). Per side it reports Verify calls/s (best round) and the node's CPU per call (user +
system, from /proc, over the whole load run, warm-up included, divided by its calls; the
load starts once the node has finished its start-up work: :func:`settled`); the ratios
on/off are the figures (target: at least 0.95). :func:`span_us` times the guard's
span in process, the part of the cost that noise does not blur.

``python -m bench.tracing_cost --config PATH [--sample-ratio R]`` is that node (both sides run
it, so that they differ in nothing else); traced, on exit it prints how many spans it dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from bench import province as province_mod
from bench.procs import Child, child, cpu_seconds, python_command
from bench.province import Province
from gateway.tracing_setup import TracingSection, make_tracer_provider, tracing_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider


@contextlib.asynccontextmanager
async def serve(
    province: Province,
    logs: Path,
    *,
    sample_ratio: float | None = None,
    metrics_port: int | None = None,
) -> AsyncIterator[Child]:
    """The province's node, SERVING for the duration of the block: this module's node (both
    sides in the same kind of process: ``govnode serve`` and a ``python -m`` of its own
    differed by up to 40 µs a call with tracing off in both), recording new traces with
    ``sample_ratio`` (None: tracing off, the SDK not even imported); its ``[metrics]``
    listener on ``metrics_port`` (None: off)."""
    env = {"GOVNODE_LOG__FORMAT": "json", "GOVNODE_LOG__LEVEL": "warning"}
    if metrics_port is not None:
        env["GOVNODE_METRICS__LISTEN"] = f"127.0.0.1:{metrics_port}"
    ratio = () if sample_ratio is None else ("--sample-ratio", str(sample_ratio))
    command = python_command(
        "-m", "bench.tracing_cost", "--config", str(province.config_path), *ratio
    )
    async with child("govnode-traced", command, logs=logs, env=env) as node:
        await province_mod.wait_serving(province.target, province.consumer, node)
        yield node


#: A node that reports SERVING has not finished starting: 2 s after it starts, the summary
#: publisher's first round reads the month's audit log (node.clients, node.supervision), which
#: every round of this bench makes longer by its calls; the metrics sampler's first refresh
#: and ``gc.freeze`` run then too. Counted into a side's load, that work was charged to its
#: calls, and the more the later the side ran (measured: 0.4 s of CPU with 34,000 audit
#: records, 2.3 s with 190,000; each load adds about 10,000). So the load starts once the
#: node is quiet: at least SETTLE_AFTER_S after SERVING, then a window of SETTLE_WINDOW_S
#: using less than QUIET_SHARE of a core.
SETTLE_AFTER_S = 3.0
SETTLE_WINDOW_S = 1.0
QUIET_SHARE = 0.05
SETTLE_WITHIN_S = 60.0


async def settled(node: Child) -> float:
    """Wait (at most SETTLE_WITHIN_S) until ``node``'s start-up work is done (see
    SETTLE_AFTER_S); the share of a core it used in its last window (its idle cost: the
    periodic work, such as the metrics sampler's, that does not depend on calls)."""
    pid = node.process.pid
    await asyncio.sleep(SETTLE_AFTER_S)
    waited, share = SETTLE_AFTER_S, 1.0
    while waited < SETTLE_WITHIN_S:
        before = cpu_seconds(pid)
        await asyncio.sleep(SETTLE_WINDOW_S)
        waited += SETTLE_WINDOW_S
        share = (cpu_seconds(pid) - before) / SETTLE_WINDOW_S
        if share < QUIET_SHARE:
            break
    return share


async def dropped_spans(node: Child) -> int | None:
    """Stop the traced node and read how many spans it dropped (None if it did not say)."""
    await node.stop()
    assert node.process.stdout is not None
    said = (await node.process.stdout.read()).decode("utf-8", errors="replace").split()
    return int(said[1]) if len(said) == 2 and said[0] == "spans" and said[1].isdigit() else None


class _Drop:
    """A SpanExporter that takes every batch and keeps nothing but a count (built lazily: the
    SDK is an optional extra)."""

    @staticmethod
    def make() -> Any:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def __init__(self) -> None:
                self.count = 0

            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                self.count += len(spans)
                return SpanExportResult.SUCCESS

        return Drop()


def _provider(sample_ratio: float, exporter: Any) -> TracerProvider:
    """The node's provider exactly as ``[tracing]`` makes it (gateway.tracing_setup: resource,
    parent-based ratio sampler, the SDK's BatchSpanProcessor), exporting into ``exporter``."""
    section = TracingSection(exporter="otlp", sample_ratio=sample_ratio)
    provider = make_tracer_provider(section, "govnode-bench", exporter=exporter)
    assert provider is not None
    return provider


def _serve_traced(config_path: Path, sample_ratio: float | None) -> int:
    from node.app import serve_forever
    from node.config import load_config
    from node.logging import configure_logging

    config = load_config(config_path)
    configure_logging(config.log.format, config.log.level)
    if sample_ratio is None:  # as `govnode serve` with [tracing] exporter = "none"
        asyncio.run(serve_forever(config))
        return 0
    drop = _Drop.make()
    provider = _provider(sample_ratio, drop)
    try:
        asyncio.run(serve_forever(config, tracer_provider=provider))
    finally:
        provider.shutdown()
        print(f"spans {drop.count}", flush=True)
    return 0


def span_us(sample_ratio: float | None, iterations: int = 20_000) -> float:
    """Microseconds of CPU the guard's tracing adds to one call, timed in process: the SERVER
    span opened and ended exactly as the guard does (gateway.tracing: ``server_span`` and
    ``end``, a call without a ``traceparent``) on the production provider with
    ``sample_ratio`` (None: tracing off), spans into a dropping exporter; least of 3 runs.
    A millisecond's pause every 200 calls lets the processor's thread export as it does
    between a node's calls (a loop that never yields the GIL fills its queue). Process CPU:
    the exporting thread's share and the garbage collections the spans cause in this small
    process are counted, not their cost in a node's larger heap."""
    drop = _Drop.make() if sample_ratio is not None else None
    provider = _provider(sample_ratio, drop) if sample_ratio is not None else None
    tracing = tracing_of(provider)
    method = "/govnode.v1.SharingService/Verify"
    metadata = (("user-agent", "grpc-python-bench"),)

    def timed() -> float:
        began = time.process_time()
        for i in range(iterations):
            span = tracing.server_span(method, metadata, "0123456789abcdef0123456789abcdef")
            tracing.end(span, grpc.StatusCode.OK, role="agency")
            if i % 200 == 199:
                time.sleep(0.001)
        return time.process_time() - began

    timed()
    try:
        return round(min(timed() for _ in range(3)) / iterations * 1e6, 2)
    finally:
        if provider is not None:
            provider.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument(
        "--sample-ratio", type=float, help="share of traces recorded (none: tracing off)"
    )
    args = p.parse_args(argv)
    return _serve_traced(args.config, args.sample_ratio)


if __name__ == "__main__":
    sys.exit(main())
