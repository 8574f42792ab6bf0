"""What metrics and tracing together cost Verify: the same node process, switched between
both off and both on while it serves.

The ``tracing-cost`` scenario provisions a province of its own, seeds it, and serves it with
this module's node (``python -m bench.tracing_cost --config PATH``): the node as ``govnode
serve`` starts it, with its ``[metrics]`` listener on (``GOVNODE_METRICS__LISTEN``), and two
tracer providers made exactly as ``[tracing]`` makes one (gateway.tracing_setup: resource,
parent-based ratio sampler, the SDK's BatchSpanProcessor) that export into an exporter that
drops the spans (so no collector's CPU is counted on this 2-core machine, but every span is
built, ended, queued and handed over in batches as in production): one recording every
trace, one recording one in ten (``sample_ratio = 0.1``, the recommended ratio).

A line on its stdin switches it (:func:`switch`): ``off`` (no call counted, tracing off: as a
node without ``[metrics]`` and with ``[tracing] exporter = "none"``), ``all`` or ``10pct``
(every call counted in the grpc_server_* series and the audit commit histograms, and traced by
that provider); the guard takes them from the next call on
(gateway.interceptors.GuardInterceptor.instrument). So the sides compared share everything
else: the process, its heap and hash seed, the database and the moment. Measured before,
two processes started alike differed by up to 15% in calls/s, more than the cost sought.
The metrics listener and its sampler run throughout (their cost is by time, not by call:
the scenario reports the idle node's share of a core, :func:`settled`).

On stdin's end or SIGTERM the node stops and prints ``spans N``, how many spans it dropped.
:func:`span_us` times the guard's span in process, the part of the cost that noise does not
blur.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
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

    from node.config import NodeConfig


#: What a line on the switchable node's stdin selects: tracing off and no counting, or the
#: metrics on and the provider with this sample ratio.
MODES: dict[str, float | None] = {"off": None, "all": 1.0, "10pct": 0.1}
#: Modes the node also takes, to tell the two apart: (metrics on, sample ratio or None).
PARTS: dict[str, tuple[bool, float | None]] = {
    "metrics": (True, None),
    "traced-all": (False, 1.0),
    "traced-10pct": (False, 0.1),
    "traced-0": (False, 0.0),
}


@contextlib.asynccontextmanager
async def serve(
    province: Province, logs: Path, *, metrics_port: int | None = None
) -> AsyncIterator[Child]:
    """The province's node, SERVING for the duration of the block: this module's node, in mode
    ``off`` until :func:`switch` says otherwise; its ``[metrics]`` listener on
    ``metrics_port`` (None: no listener, and the node cannot be switched on: seeding)."""
    env = {"GOVNODE_LOG__FORMAT": "json", "GOVNODE_LOG__LEVEL": "warning"}
    if metrics_port is not None:
        env["GOVNODE_METRICS__LISTEN"] = f"127.0.0.1:{metrics_port}"
    command = python_command("-m", "bench.tracing_cost", "--config", str(province.config_path))
    async with child("govnode-traced", command, logs=logs, env=env) as node:
        await province_mod.wait_serving(province.target, province.consumer, node)
        yield node


async def switch(node: Child, mode: str) -> None:
    """Switch the node to ``mode`` (one of MODES) and wait until it says it has."""
    assert node.process.stdin is not None
    node.process.stdin.write(f"{mode}\n".encode())
    await node.process.stdin.drain()
    if (said := await node.read_line(within=30.0)) != f"mode {mode}":
        raise node.failure(f"said {said[:80]!r} instead of 'mode {mode}'")


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
    lines = (await node.process.stdout.read()).decode("utf-8", errors="replace").splitlines()
    said = lines[-1].split() if lines else []
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


class _Collections:
    """The garbage collections of the node's process, counted and timed (CPU) per generation."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.cpu_s = [0.0, 0.0, 0.0]
        self._began = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.thread_time()
        else:
            generation = info["generation"]
            self.count[generation] += 1
            self.cpu_s[generation] += time.thread_time() - self._began

    def report(self) -> dict[str, list[float]]:
        return {"count": list(self.count), "cpu_s": [round(c, 4) for c in self.cpu_s]}


async def _serve_switchable(config: NodeConfig) -> int:
    """Serve ``config``'s node, switched by the lines of stdin (see MODES), until stdin ends
    or SIGTERM; then print how many spans it dropped."""
    from node.app import start_node

    drop = _Drop.make()
    modes = {m: (r is not None, r) for m, r in MODES.items()} | PARTS
    ratios = {r for _, r in modes.values() if r is not None}
    providers = {r: _provider(r, drop) for r in ratios}
    tracings = {r: tracing_of(p, r) for r, p in providers.items()}
    node = await start_node(config)
    # As serve_forever (node.app) does once started.
    gc.collect()
    gc.freeze()
    collections = _Collections()
    gc.callbacks.append(collections.callback)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics, guard = node.metrics, node.guard
    assert guard is not None

    def to(mode: str) -> None:
        counted, ratio = modes[mode]
        counting = metrics if counted else None
        guard.instrument(
            counting.server if counting is not None else None,
            tracings[ratio] if ratio is not None else None,
        )
        node.audit.on_commit = counting.audit_committed if counting is not None else None

    reader = asyncio.StreamReader(limit=1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    to("off")
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            line = asyncio.ensure_future(reader.readline())
            await asyncio.wait({line, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not line.done():
                line.cancel()
                break
            mode = line.result().decode("utf-8", errors="replace").strip()
            if not mode:
                break  # stdin ended: the bench is gone
            if mode == "gc":  # the collections so far, per generation, and their CPU
                print("gc " + json.dumps(collections.report()), flush=True)
                continue
            if mode not in modes or (metrics is None and modes[mode][0]):
                print(f"refused {mode[:20]}", flush=True)
                continue
            to(mode)
            print(f"mode {mode}", flush=True)
    finally:
        stopping.cancel()
        await node.stop()
        for provider in providers.values():
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
    tracing = tracing_of(provider, sample_ratio)
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
    args = p.parse_args(argv)
    from node.config import load_config
    from node.logging import configure_logging

    config = load_config(args.config)
    configure_logging(config.log.format, config.log.level)
    return asyncio.run(_serve_switchable(config))


if __name__ == "__main__":
    sys.exit(main())
