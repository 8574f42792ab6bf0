"""Submit (汇聚, 第二十一条) that survives a reconnect: every batch is sent until acknowledged.

The node acknowledges a batch only once its records are durably committed, and a batch sent
again under the same ``batch_id`` is applied once (its ack again, with ``duplicate`` set; README
"Retrying a write"). So when the stream breaks (UNAVAILABLE: the node restarted, the
connection dropped), the helper opens a new stream and first resends every batch it sent
without an ack, then goes on with the rest: nothing is lost and nothing is applied twice.

At most ``window`` batches are unacknowledged at once, so memory stays bounded however many
batches the source yields; the source is read once, by one task that lives across reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import uuid
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc
import grpc.aio
from govnode.v1 import common_pb2, sharing_pb2
from grpc.aio import EOF  # type: ignore[attr-defined]  # not in grpc-stubs

from govnode_client._calls import BULK_TIMEOUT, Metadata, _metadata
from govnode_client.errors import GovnodeError, Unavailable, from_rpc_error

SUBMIT_PATH = "/govnode.v1.SharingService/Submit"

#: The node takes at most this many characters of a batch id (node.records).
MAX_BATCH_ID = 128


@dataclass
class SubmitResult:
    """The acks, in the order they came (one per batch); ``reconnects``: streams opened after
    the first; ``resent``: batches sent again on a new stream (their acks may say duplicate)."""

    acks: list[sharing_pb2.SubmitAck] = field(default_factory=list)
    reconnects: int = 0
    resent: int = 0

    @property
    def accepted(self) -> int:
        return sum(ack.accepted for ack in self.acks)

    @property
    def rejected(self) -> int:
        return sum(ack.rejected for ack in self.acks)

    @property
    def held(self) -> int:
        return sum(ack.held for ack in self.acks)


def batches_of(
    resource_code: str,
    records: Iterable[Mapping[str, str]],
    *,
    batch_size: int = 500,
    batch_prefix: str | None = None,
) -> Iterable[sharing_pb2.SubmitBatch]:
    """``records`` cut into batches of ``batch_size``, with ids ``<prefix>-<n>``. Give the same
    ``batch_prefix`` when a run that stopped is run again over the same records: the batches
    the node already applied are then acknowledged as duplicates, not applied again."""
    if batch_size < 1:
        raise ValueError(f"batch_size: at least 1, got {batch_size}")
    prefix = batch_prefix or uuid.uuid4().hex
    iterator = iter(records)
    for n in itertools.count():
        chunk = list(itertools.islice(iterator, batch_size))
        if not chunk:
            return
        yield sharing_pb2.SubmitBatch(
            resource_code=resource_code,
            batch_id=f"{prefix}-{n}",
            records=[common_pb2.Record(values=dict(r)) for r in chunk],
        )


class _Progress:
    """Batches read from the source and not yet acknowledged, in order."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.pending: dict[str, sharing_pb2.SubmitBatch] = {}
        self.source_done = False
        self.changed = asyncio.Condition()
        self.ever_sent: set[str] = set()

    async def feed(
        self, source: Iterable[sharing_pb2.SubmitBatch] | AsyncIterable[sharing_pb2.SubmitBatch]
    ) -> None:
        try:
            if isinstance(source, AsyncIterable):
                async for batch in source:
                    await self._add(batch)
            else:
                for batch in source:
                    await self._add(batch)
        finally:
            async with self.changed:
                self.source_done = True
                self.changed.notify_all()

    async def _add(self, batch: sharing_pb2.SubmitBatch) -> None:
        if not batch.batch_id or len(batch.batch_id) > MAX_BATCH_ID:
            raise ValueError(f"batch_id: required, at most {MAX_BATCH_ID} characters")
        async with self.changed:
            if batch.batch_id in self.pending:
                raise ValueError(f"batch_id {batch.batch_id[:40]!r} is given twice")
            await self.changed.wait_for(lambda: len(self.pending) < self.window)
            self.pending[batch.batch_id] = batch
            self.changed.notify_all()

    async def acknowledged(self, ack: sharing_pb2.SubmitAck) -> bool:
        async with self.changed:
            known = self.pending.pop(ack.batch_id, None) is not None
            self.changed.notify_all()
            return known

    @property
    def finished(self) -> bool:
        return self.source_done and not self.pending


async def _write(
    call: grpc.aio.StreamStreamCall[sharing_pb2.SubmitBatch, sharing_pb2.SubmitAck],
    progress: _Progress,
    result: SubmitResult,
) -> None:
    """Send every pending batch not sent on this stream yet, in order, as they come; then
    close the sending side once the source is done."""
    sent: set[str] = set()
    while True:
        async with progress.changed:
            await progress.changed.wait_for(
                lambda: progress.source_done or any(b not in sent for b in progress.pending)
            )
            unsent = [b for b in progress.pending.values() if b.batch_id not in sent]
            done = progress.source_done and not unsent
        try:
            if done:
                await call.done_writing()
                return
            for batch in unsent:
                if batch.batch_id in progress.ever_sent:
                    result.resent += 1
                progress.ever_sent.add(batch.batch_id)
                sent.add(batch.batch_id)
                await call.write(batch)
        except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
            return  # the call ended: its status reaches the reader, which decides


async def submit(
    channel: grpc.aio.Channel,
    source: Iterable[sharing_pb2.SubmitBatch] | AsyncIterable[sharing_pb2.SubmitBatch],
    *,
    window: int = 8,
    timeout: float | None = BULK_TIMEOUT,
    reconnect_for: float = 60.0,
    metadata: Metadata = (),
) -> SubmitResult:
    """Send every batch of ``source`` and wait for every ack; see the module docstring.
    ``timeout`` bounds each stream; ``reconnect_for``: how long (seconds) the node may stay
    unreachable, counted from the first failure, before :class:`errors.Unavailable` is raised.
    Any other refusal ends the submission with its error (the batches acked before it stay
    committed: ``SubmitResult`` is on the error as ``exc.result``)."""
    if window < 1:
        raise ValueError(f"window: at least 1, got {window}")
    loop = asyncio.get_running_loop()
    progress = _Progress(window)
    result = SubmitResult()
    feeder = asyncio.create_task(progress.feed(source))
    stream = channel.stream_stream(
        SUBMIT_PATH,
        request_serializer=sharing_pb2.SubmitBatch.SerializeToString,
        response_deserializer=sharing_pb2.SubmitAck.FromString,
    )
    down_since: float | None = None
    failures = 0
    try:
        for attempt in itertools.count():
            if attempt:
                result.reconnects += 1
            request_id = uuid.uuid4().hex
            call = stream(None, timeout=timeout, metadata=_metadata(request_id, metadata))
            writer = asyncio.create_task(_write(call, progress, result))
            try:
                while True:
                    ack = await call.read()
                    if ack is EOF:
                        break
                    assert isinstance(ack, sharing_pb2.SubmitAck)
                    if await progress.acknowledged(ack):
                        result.acks.append(ack)
                    down_since, failures = None, 0
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, request_id)
                if error.code is not grpc.StatusCode.UNAVAILABLE:
                    error.result = result  # type: ignore[attr-defined]
                    raise error from None
                now = loop.time()
                down_since = now if down_since is None else down_since
                if now - down_since >= reconnect_for:
                    error.result = result  # type: ignore[attr-defined]
                    raise error from None
                failures += 1
                await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**failures)))
                continue
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await writer
                call.cancel()
            problem = feeder.exception() if feeder.done() else None
            if problem is not None:
                raise problem
            if not progress.finished:
                raise Unavailable(
                    "Submit: the node ended the stream before acknowledging every batch",
                    request_id=request_id,
                )
            return result
        raise AssertionError("unreachable")
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, ValueError, GovnodeError):
            await feeder
