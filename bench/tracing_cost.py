"""What tracing costs Verify: the same node, the same records, tracing off and on.

The ``tracing-cost`` scenario provisions a province of its own, seeds it, and then serves it
alternately (same database, same port) as ``govnode serve`` with ``[tracing] exporter =
"none"`` and as ``python -m bench.tracing_cost`` with tracing on: the SDK configured, every
trace sampled, spans going through a BatchSpanProcessor into an exporter that drops them (so
no collector's CPU is counted on this 2-core machine, but every span is built, ended, queued
and handed over in batches as in production). Per side it reports Verify calls/s (best round)
and the node's CPU per call (user + system, from /proc, over the whole load run, warm-up
included, divided by its calls); the ratio on/off is the figure (target: above 0.95). A third
side samples one trace in ten (``[tracing] sample_ratio = 0.1``), what a busy node would run.

``python -m bench.tracing_cost --config PATH`` is that traced node; on exit it prints how many
spans it dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench import province as province_mod
from bench.procs import Child, child, python_command
from bench.province import Province

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan


@contextlib.asynccontextmanager
async def serve(
    province: Province, logs: Path, *, traced: bool, sample_ratio: float = 1.0
) -> AsyncIterator[Child]:
    """The province's node, tracing ``traced`` (new traces sampled with ``sample_ratio``),
    SERVING for the duration of the block."""
    if not traced:
        async with province_mod.serve(province, logs) as node:
            yield node
        return
    command = python_command(
        "-m", "bench.tracing_cost", "--config", str(province.config_path),
        "--sample-ratio", str(sample_ratio),
    )  # fmt: skip
    env = {"GOVNODE_LOG__FORMAT": "json", "GOVNODE_LOG__LEVEL": "warning"}
    async with child("govnode-traced", command, logs=logs, env=env) as node:
        await province_mod.wait_serving(province.target, province.consumer, node)
        yield node


async def dropped_spans(node: Child) -> int | None:
    """Stop the traced node and read how many spans it dropped (None if it did not say)."""
    await node.stop()
    assert node.process.stdout is not None
    said = (await node.process.stdout.read()).decode("utf-8", errors="replace").split()
    return int(said[1]) if len(said) == 2 and said[0] == "spans" and said[1].isdigit() else None


def _serve_traced(config_path: Path, processor: str, sample_ratio: float) -> int:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from node.app import serve_forever
    from node.config import load_config
    from node.logging import configure_logging

    class Drop(SpanExporter):
        """Takes every batch and keeps nothing but a count."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    config = load_config(config_path)
    configure_logging(config.log.format, config.log.level)
    drop = Drop()
    # As [tracing] sample_ratio makes it (gateway.tracing_setup); 1.0: every trace sampled.
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    if processor == "batch":
        provider.add_span_processor(BatchSpanProcessor(drop))
    elif processor == "simple":
        provider.add_span_processor(SimpleSpanProcessor(drop))
    try:
        asyncio.run(serve_forever(config, tracer_provider=provider))
    finally:
        provider.shutdown()
        print(f"spans {drop.count}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument(
        "--processor",
        choices=("batch", "simple", "none"),
        default="batch",
        help="batch: as in production; simple: each span handed over as it ends, no thread; "
        "none: spans built and ended, handed to no one (where the cost is)",
    )
    p.add_argument("--sample-ratio", type=float, default=1.0, help="share of traces recorded")
    args = p.parse_args(argv)
    return _serve_traced(args.config, args.processor, args.sample_ratio)


if __name__ == "__main__":
    sys.exit(main())
