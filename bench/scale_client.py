"""The calling side of ``python -m bench.scale``: a process of its own, so its CPU time and peak
memory are the client's alone, and it never shares a GIL with the node it measures.

    python -m bench.scale_client --part light|compare|exchange --target HOST:PORT \
        --key K --cert C --root R --records N --server-pid PID [...]

- ``light``: Verify, then Query by key, each with 4 calls in flight over one connection, for
  ``--calls`` measured calls after ``--warmup`` (both bounded by ``--seconds`` too), keys drawn
  at random over the ``--records`` records;
- ``compare``: ``--rounds`` rounds of two Compare calls of ``--compare-size`` records each,
  timed from the request to the last result: one result per message (as before
  ``results_per_message``), then 1,000 results a message (what an agency system should ask);
- ``exchange``: one full snapshot (Exchange from version 0), counting the records as they
  arrive and keeping none, bounded by ``--seconds``.

Each prints one JSON object: wall seconds, the client's CPU seconds (``time.process_time``),
the server's CPU seconds over the same span (``/proc/<pid>/stat``), and for ``exchange`` the
peak resident memory (``VmHWM``) of both ends. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from govnode.v1 import sharing_pb2, sharing_pb2_grpc

from bench import dataset
from bench.load import percentile, verify_request
from bench.procs import cpu_seconds, tls_arguments
from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.records import MAX_COMPARE_RESULTS_PER_MESSAGE

IN_FLIGHT = 4
CALL_TIMEOUT_S = 30.0


def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak resident memory of process ``pid`` so far (VmHWM in /proc/<pid>/status), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Span:
    """Wall, client CPU and server CPU over a block of work."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Span:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()
        self.server0 = cpu_seconds(self.server_pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0
        self.server_cpu = cpu_seconds(self.server_pid) - self.server0

    def figures(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall, 3),
            "client_cpu_s": round(self.cpu, 3),
            "server_cpu_s": round(self.server_cpu, 3),
        }


async def _light(call: Callable[[], Awaitable[bool]], args: argparse.Namespace) -> dict[str, Any]:
    """``args.calls`` measured calls, IN_FLIGHT at a time, after ``args.warmup`` unmeasured."""
    latencies: list[float] = []
    state = {"started": 0, "unexpected": 0}
    total = args.warmup + args.calls
    deadline = time.monotonic() + args.seconds

    async def caller() -> None:
        while state["started"] < total and time.monotonic() < deadline:
            n = state["started"]
            state["started"] += 1
            t0 = time.perf_counter()
            ok = await call()
            if n >= args.warmup:
                latencies.append(time.perf_counter() - t0)
                state["unexpected"] += not ok

    with Span(args.server_pid) as span:
        await asyncio.gather(*(caller() for _ in range(IN_FLIGHT)))
    latencies.sort()
    return {
        "calls": len(latencies),
        "unexpected": state["unexpected"],
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "max_ms": round((latencies[-1] if latencies else 0.0) * 1000, 3),
        "server_cpu_ms_per_call": round(
            span.server_cpu * 1000 / max(1, args.warmup + len(latencies)), 3
        ),
        **span.figures(),
    }


def _keys(args: argparse.Namespace, count: int) -> list[int]:
    rng = random.Random(args.seed)
    return [rng.randrange(args.records) for _ in range(count)]


async def light(
    stub: sharing_pb2_grpc.SharingServiceAsyncStub, args: argparse.Namespace
) -> dict[str, Any]:
    pool = _keys(args, 4096)
    verifies = [verify_request(i) for i in pool]
    queries = [
        sharing_pb2.QueryRequest(
            resource_code=dataset.RESOURCE_CODE, key={dataset.KEY_ITEM: dataset.credit_code(i)}
        )
        for i in pool
    ]
    rng = random.Random(args.seed + 1)

    async def verify() -> bool:
        reply = await stub.Verify(rng.choice(verifies), timeout=CALL_TIMEOUT_S)
        return bool(reply.found and reply.all_match)

    async def query() -> bool:
        reply = await stub.Query(rng.choice(queries), timeout=CALL_TIMEOUT_S)
        return len(reply.rows) == 1

    return {"verify": await _light(verify, args), "query": await _light(query, args)}


async def compare(
    stub: sharing_pb2_grpc.SharingServiceAsyncStub, args: argparse.Namespace
) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        keys = _keys(
            argparse.Namespace(seed=args.seed + r, records=args.records), args.compare_size
        )
        request = sharing_pb2.CompareRequest(
            resource_code=dataset.RESOURCE_CODE,
            records=[
                sharing_pb2.CompareRecord(
                    ref=str(n),
                    key={dataset.KEY_ITEM: dataset.credit_code(i)},
                    claimed={dataset.CLAIMED_ITEM: dataset.company_name(i)},
                )
                for n, i in enumerate(keys)
            ],
        )
        for per_message in (1, MAX_COMPARE_RESULTS_PER_MESSAGE):
            request.results_per_message = per_message
            results = matched = messages = 0
            with Span(args.server_pid) as span:
                async for message in stub.Compare(request, timeout=args.seconds):
                    messages += 1
                    for result in message.results or (message,):
                        results += 1
                        matched += result.all_match
            rounds.append(
                {
                    "results_per_message": per_message,
                    "messages": messages,
                    "results": results,
                    "all_match": matched,
                    **span.figures(),
                }
            )
    return {"size": args.compare_size, "rounds": rounds}


async def exchange(
    stub: sharing_pb2_grpc.SharingServiceAsyncStub, args: argparse.Namespace
) -> dict[str, Any]:
    records = chunks = 0
    last = False
    hwm_before = vm_hwm_mb(args.server_pid)
    with Span(args.server_pid) as span:
        call = stub.Exchange(
            sharing_pb2.ExchangeRequest(resource_code=dataset.RESOURCE_CODE),
            timeout=args.seconds,
        )
        async for chunk in call:
            chunks += 1
            records += len(chunk.records)
            last = chunk.last
    return {
        "records": records,
        "chunks": chunks,
        "complete": last,
        "records_per_s": round(records / span.wall, 1) if span.wall > 0 else 0.0,
        "server_vmhwm_mb_before": round(hwm_before, 1),
        "server_vmhwm_mb": round(vm_hwm_mb(args.server_pid), 1),
        "client_vmhwm_mb": round(vm_hwm_mb(), 1),
        **span.figures(),
    }


PARTS = {"light": light, "compare": compare, "exchange": exchange}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    files = TlsFiles(args.key, args.cert, args.root)
    async with secure_channel(args.target, files) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        stub = sharing_pb2_grpc.SharingServiceStub(channel)
        return {"part": args.part, **await PARTS[args.part](stub, args)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.scale_client", description=__doc__)
    p.add_argument("--part", choices=sorted(PARTS), required=True)
    tls_arguments(p)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--records", type=int, required=True, help="records 0..N-1 are stored")
    p.add_argument("--calls", type=int, default=2000, help="light: measured calls per method")
    p.add_argument("--warmup", type=int, default=200, help="light: calls not measured")
    p.add_argument("--seconds", type=float, default=120.0, help="bound of each part, seconds")
    p.add_argument("--compare-size", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=3, help="compare: calls")
    p.add_argument("--seed", type=int, default=20161101)
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.records < 1 or args.calls < 1 or args.rounds < 1 or args.compare_size < 1:
        raise SystemExit("--records, --calls, --rounds and --compare-size must be at least 1")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
