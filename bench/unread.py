"""Subscribe streams that are never read, and what they do to those that are.

``python -m bench.unread --target ... --streams 200`` opens that many Subscribe calls on the
bench's resource, from sequence 0 (a SubscribeRequest's default, so each has the whole backlog
to send), and never reads one. It prints one JSON line once every call has either started
(its first message or headers arrived) or been refused, then holds them open until its stdin
closes. Its own process, so that its client work never shares a GIL with the measurements.

The in-process helpers measure, during one phase of the scenario: the changes per second a
subscriber that *does* read receives, Verify's latency from one caller making one call at a
time, and the node's CPU time per wall-clock second, read from ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from govnode.v1 import common_pb2, sharing_pb2, sharing_pb2_grpc

from bench import dataset
from bench.load import verify_request
from bench.procs import cpu_seconds, tls_arguments
from gateway.channel import secure_channel
from gateway.tls import TlsFiles

#: Bound on the wait for each held stream to start (its headers or its refusal).
START_WAIT_S = 30.0


@dataclass
class PhaseFigures:
    seconds: float
    node_cpu_per_s: float | None
    reader_changes: int
    submitted: int
    verify_calls: int
    verify_p50_ms: float | None
    reader_error: str = ""

    @property
    def reader_per_s(self) -> float:
        return self.reader_changes / self.seconds if self.seconds > 0 else 0.0


async def _reader(target: str, files: TlsFiles, counter: list[int], errors: list[str]) -> None:
    """Subscribe from sequence 0 and count the changes received, until cancelled."""
    async with secure_channel(target, files, streaming_timeout=None) as channel:
        call = sharing_pb2_grpc.SharingServiceStub(channel).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=dataset.RESOURCE_CODE)
        )
        try:
            async for _ in call:
                counter[0] += 1
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
        finally:
            call.cancel()


async def _verifier(target: str, files: TlsFiles, keys: int, stop: float) -> list[float]:
    latencies: list[float] = []
    async with secure_channel(target, files) as channel:
        stub = sharing_pb2_grpc.SharingServiceStub(channel)
        i = 0
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            await stub.Verify(verify_request(i % keys), timeout=30.0)
            latencies.append((time.perf_counter() - t0) * 1000)
            i += 7919
            await asyncio.sleep(0.01)
    return latencies


async def measure_phase(
    *,
    target: str,
    reader: TlsFiles,
    verifier: TlsFiles,
    keys: int,
    duration: float,
    node_pid: int | None,
    submit_load: Any,
) -> PhaseFigures:
    """One phase: a reading subscriber, a Verify caller and ``submit_load`` (a coroutine
    function taking the stop time, returning the records submitted), for ``duration`` s."""
    counter = [0]
    errors: list[str] = []
    read = asyncio.create_task(_reader(target, reader, counter, errors))
    start_cpu = cpu_seconds(node_pid) if node_pid else None
    t0 = time.monotonic()
    stop = t0 + duration
    try:
        latencies, submitted = await asyncio.gather(
            _verifier(target, verifier, keys, stop), submit_load(stop)
        )
        elapsed = time.monotonic() - t0
        received = counter[0]
        cpu = (
            (cpu_seconds(node_pid) - start_cpu) / elapsed
            if node_pid and start_cpu is not None
            else None
        )
    finally:
        read.cancel()
        await asyncio.gather(read, return_exceptions=True)
    return PhaseFigures(
        seconds=round(elapsed, 3),
        node_cpu_per_s=None if cpu is None else round(cpu, 3),
        reader_changes=received,
        submitted=submitted,
        verify_calls=len(latencies),
        verify_p50_ms=round(statistics.median(latencies), 2) if latencies else None,
        reader_error=errors[0] if errors else "",
    )


def paced_submit(
    target: str, provider: TlsFiles, *, first: int, batch_size: int, interval: float
) -> Any:
    """A steady Submit load for :func:`measure_phase`: one batch of ``batch_size`` new records
    every ``interval`` s on one stream (or slower, as the acks come), until the stop time."""

    async def load(stop: float) -> int:
        acked = asyncio.Queue[int]()
        accepted = 0

        async def batches() -> Any:
            n = first
            while time.monotonic() < stop:
                yield sharing_pb2.SubmitBatch(
                    resource_code=dataset.RESOURCE_CODE,
                    batch_id=f"unread-{n}-{batch_size}",
                    records=[
                        common_pb2.Record(values=dataset.record_values(i))
                        for i in range(n, n + batch_size)
                    ],
                )
                n += batch_size
                await acked.get()
                await asyncio.sleep(interval)

        async with secure_channel(target, provider, streaming_timeout=None) as channel:
            call = sharing_pb2_grpc.SharingServiceStub(channel).Submit(batches(), timeout=600.0)
            async for ack in call:
                accepted += ack.accepted
                acked.put_nowait(1)
        return accepted

    return load


async def idle_cpu(node_pid: int, seconds: float) -> float:
    """The node's CPU seconds per second over ``seconds`` in which nothing is asked of it."""
    start, t0 = cpu_seconds(node_pid), time.monotonic()
    await asyncio.sleep(seconds)
    return round((cpu_seconds(node_pid) - start) / (time.monotonic() - t0), 3)


# --- the holder process -----------------------------------------------------------------------


async def hold(args: argparse.Namespace) -> None:
    files = TlsFiles(args.key, args.cert, args.root)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        secure_channel(args.target, files, streaming_timeout=None, extra_options=options)
        for _ in range(args.channels)
    ]
    calls = [
        sharing_pb2_grpc.SharingServiceStub(channels[i % len(channels)]).Subscribe(
            sharing_pb2.SubscribeRequest(resource_code=dataset.RESOURCE_CODE)
        )
        for i in range(args.streams)
    ]

    async def started(call: Any) -> None:
        # An admitted call sends headers with its first change (the backlog is never empty
        # here); a refused one ends with its status (and empty headers). Nothing is read.
        headers = asyncio.ensure_future(call.initial_metadata())
        await asyncio.wait({headers}, timeout=START_WAIT_S)
        headers.cancel()

    await asyncio.gather(*(started(c) for c in calls))
    await asyncio.sleep(1.0)  # a refusal's status follows its (empty) headers at once
    refused = [c for c in calls if c.done()]
    first_refusal = ""
    if refused:
        first_refusal = f"{(await refused[0].code()).name}: {await refused[0].details()}"
    print(
        json.dumps(
            {
                "open": len(calls) - len(refused),
                "refused": len(refused),
                "first_refusal": first_refusal,
            },
            ensure_ascii=False,
        ),
        flush=True,
    )
    # Held, unread, until the bench closes our stdin (or exits).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for call in calls:
        call.cancel()
    await asyncio.gather(*(ch.close(None) for ch in channels))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.unread", description=__doc__)
    tls_arguments(p)
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--channels", type=int, default=4)
    asyncio.run(hold(p.parse_args()))


if __name__ == "__main__":
    main()
