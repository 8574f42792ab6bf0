"""The load generator: many concurrent unary callers over mutual TLS, bounded in count and time.

Runs as its own process (``python -m bench.load ...``), apart from the server it loads, so the
two never share a GIL. ``--channels`` connections (each its own HTTP/2 connection and TLS
session) carry ``--concurrency`` callers in total, each an asyncio task issuing one call after
another. The first ``--warmup`` calls (bounded by ``--warmup-seconds``) are not measured; then
calls are measured until ``--max-calls`` were started or ``--duration`` seconds passed, and
the figures are printed as one JSON object on stdout. With ``--marks`` it also prints
``measuring`` when the measured calls begin and ``measured`` when the last one has ended, so
that the bench can read the servers' CPU time over exactly that window.

The same client code drives every target; only the *call factory* differs, so a baseline and a
govnode call pay exactly the same client-side costs. Requests are built before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from govnode.v1 import sharing_pb2, sharing_pb2_grpc

from bench import dataset
from bench.echo import METHOD as ECHO_METHOD
from bench.procs import tls_arguments
from gateway.channel import channel_options
from gateway.tls import TlsFiles, channel_credentials

#: One call: returns whether the answer is the expected one (raises grpc.aio.AioRpcError).
Call = Callable[[], Awaitable[bool]]
#: Builds the call for one channel; requests are prepared here, outside the measurement.
CallFactory = Callable[[grpc.aio.Channel, int, argparse.Namespace], Call]

#: Give up early after this many failed calls (e.g. UNIMPLEMENTED): the run is meaningless.
MAX_ERRORS = 100
#: Requests prepared per channel; callers pick among them at random.
REQUEST_POOL = 2048


def verify_request(
    i: int, *, matching: bool = True, resource_code: str = dataset.RESOURCE_CODE
) -> sharing_pb2.VerifyRequest:
    claimed = dataset.company_name(i) if matching else dataset.company_name(i) + "分公司"
    return sharing_pb2.VerifyRequest(
        resource_code=resource_code,
        key={dataset.KEY_ITEM: dataset.credit_code(i)},
        claimed={dataset.CLAIMED_ITEM: claimed},
    )


def echo_payload_size() -> int:
    """The size of a typical serialized VerifyRequest, so both baselines move similar bytes."""
    return verify_request(1_234_567).ByteSize()


def echo_factory(channel: grpc.aio.Channel, index: int, args: argparse.Namespace) -> Call:
    del index
    method = channel.unary_unary(ECHO_METHOD, request_serializer=None, response_deserializer=None)
    payload = os.urandom(args.payload_bytes)
    timeout = args.call_timeout

    async def call() -> bool:
        reply = await method(payload, timeout=timeout)
        return bool(reply == payload)

    return call


def verify_factory(channel: grpc.aio.Channel, index: int, args: argparse.Namespace) -> Call:
    stub = sharing_pb2_grpc.SharingServiceStub(channel)
    rng = random.Random(args.seed + index)
    first, count = args.keys_start, args.keys_count
    # Spread over every submitted record, so the node cannot serve one hot row from a cache.
    indexes = [first + rng.randrange(count) for _ in range(min(REQUEST_POOL, count * 4))]
    requests = [verify_request(i, resource_code=args.resource_code) for i in indexes]
    timeout = args.call_timeout

    async def call() -> bool:
        reply = await stub.Verify(rng.choice(requests), timeout=timeout)
        return bool(reply.found and reply.all_match)

    return call


FACTORIES: dict[str, CallFactory] = {"echo": echo_factory, "verify": verify_factory}


@dataclass
class _State:
    max_calls: int
    warmup: int
    marks: bool = False
    measuring: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    warm_done: int = 0
    started: int = 0
    t_start: float = 0.0
    t_end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    unexpected: int = 0
    errors: int = 0
    first_error: str = ""
    #: This process's CPU time (all its threads) when the measured calls began and ended.
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def start_measuring(self) -> None:
        if not self.measuring.is_set():
            if self.marks:
                print("measuring", flush=True)
            self.t_start = time.perf_counter()
            self.cpu_start = time.process_time()
            self.measuring.set()


async def _caller(call: Call, state: _State) -> None:
    while not state.stopping:
        measured = state.measuring.is_set()
        if measured:
            if state.started >= state.max_calls:
                return
            state.started += 1
        t0 = time.perf_counter()
        try:
            ok = await call()
        except grpc.aio.AioRpcError as exc:
            state.errors += 1
            if not state.first_error:
                state.first_error = f"{exc.code().name}: {exc.details()}"
            if state.errors >= MAX_ERRORS:
                state.stopping = True
            continue
        t1 = time.perf_counter()
        if measured:
            state.latencies.append(t1 - t0)
            state.t_end = max(state.t_end, t1)
            if not ok:
                state.unexpected += 1
        else:
            state.warm_done += 1
            if state.warm_done >= state.warmup:
                state.start_measuring()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    files = TlsFiles(args.key, args.cert, args.root)
    credentials = channel_credentials(files)
    # A local subchannel pool: otherwise identical channels would share one connection.
    options = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(args.target, credentials, options=options)
        for _ in range(args.channels)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(ch.channel_ready() for ch in channels)), args.call_timeout
        )
        factory = FACTORIES[args.mode]
        calls = [factory(ch, i, args) for i, ch in enumerate(channels)]
        state = _State(max_calls=args.max_calls, warmup=args.warmup, marks=args.marks)
        if args.warmup <= 0:
            state.start_measuring()
        tasks = [
            asyncio.create_task(_caller(calls[i % len(calls)], state))
            for i in range(args.concurrency)
        ]
        try:
            # Both phases are bounded in time; the count bound ends the callers by themselves.
            try:
                await asyncio.wait_for(state.measuring.wait(), args.warmup_seconds)
            except TimeoutError:
                state.start_measuring()
            await asyncio.wait(tasks, timeout=args.duration)
            state.stopping = True
            await asyncio.wait_for(asyncio.gather(*tasks), args.call_timeout + 5)
            state.cpu_end = time.process_time()
            if args.marks:
                print("measured", flush=True)
        finally:
            for task in tasks:
                task.cancel()
    finally:
        await asyncio.gather(*(ch.close(None) for ch in channels))
    latencies = sorted(state.latencies)
    elapsed = max(state.t_end - state.t_start, 1e-9)
    return {
        "mode": args.mode,
        "calls": len(latencies),
        "seconds": round(elapsed, 3),
        "calls_per_s": round(len(latencies) / elapsed, 1) if latencies else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "unexpected": state.unexpected,
        "errors": state.errors,
        "first_error": state.first_error,
        "channels": args.channels,
        "concurrency": args.concurrency,
        # Its own CPU over the measured calls: read here, since the process is gone by the
        # time its parent could read /proc.
        "load_cpu_s": round(state.cpu_end - state.cpu_start, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    p.add_argument("--mode", choices=sorted(FACTORIES), required=True)
    tls_arguments(p)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=64, help="callers in flight, in total")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds, at most")
    p.add_argument("--max-calls", type=int, default=200_000, help="measured calls, at most")
    p.add_argument("--warmup", type=int, default=500, help="calls not measured")
    p.add_argument("--warmup-seconds", type=float, default=3.0)
    p.add_argument("--call-timeout", type=float, default=10.0)
    p.add_argument("--payload-bytes", type=int, default=0, help="echo: 0 = a VerifyRequest's size")
    p.add_argument("--keys-start", type=int, default=0, help="verify: first record index")
    p.add_argument("--keys-count", type=int, default=1, help="verify: records to spread over")
    p.add_argument(
        "--resource-code", default=dataset.RESOURCE_CODE, help="verify: the resource asked about"
    )
    p.add_argument("--seed", type=int, default=20160701)
    p.add_argument(
        "--marks", action="store_true", help="print 'measuring' and 'measured' around the calls"
    )
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.payload_bytes <= 0:
        args.payload_bytes = echo_payload_size()
    if args.channels < 1 or args.concurrency < 1 or args.keys_count < 1:
        raise SystemExit("--channels, --concurrency and --keys-count must be at least 1")
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
