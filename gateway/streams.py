"""Long-lived streams: how many may be open, whose turn it is to write, and when a stream whose
consumer stopped reading is ended.

Why a stream that is never read costs anything at all: gRPC writes are flow-controlled, so a
write waits once the consumer's HTTP/2 window is full, and a stream parked in such a write
costs nothing. But clients grow that window by themselves (BDP probing: grpc's own clients
reach 4 MiB per stream), so a Subscribe that is never read is first sent some 24,000 changes,
exactly as if it were read, before its writes stop. Many such streams then crowd out every
other call. So (the guard, gateway.interceptors, applies this to every streaming call):

- **Caps.** A caller may have :attr:`StreamLimits.per_caller` streams open on this node
  process, the callers of one other node :attr:`StreamLimits.per_origin_node` forwarded here,
  and the process :attr:`StreamLimits.total`. One more is refused RESOURCE_EXHAUSTED naming
  the limit. A stream counts until its call has ended on the wire (the slot is released in a
  ``finally``, so cancellation and errors free it too). The counts live in process memory:
  open streams are connections of this process, and each process of a node counts its own.
- **Turns.** A caller's streams write one message at a time between them (FIFO), so a caller
  with sixteen streams gets about the share of the event loop that a caller with one gets. A
  write still waiting after :data:`PARK_S` (the consumer is not taking messages) gives the
  turn to the caller's next stream and waits outside it, costing nothing.
- **Stalls.** A write that waits :attr:`StreamLimits.stall_s` in all (the consumer took no
  message for that long) ends the stream with ABORTED: the status message names the limit and,
  from the message that was waiting, tells the consumer where to resume with no gap (a
  :data:`ResumeHint` per method, given by the node). ABORTED, not RESOURCE_EXHAUSTED or
  UNAVAILABLE, because retrying the same request would be wrong: the consumer resumes from its
  own position, a retry "at a higher level"; and no generic retry policy (ours, or a gRPC
  service config) retries ABORTED blindly. The status travels behind the messages already
  queued for the consumer, so a consumer that comes back reads them, then the status.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from gateway.refusal import Refusal

#: From the message whose write was waiting when its stream stalled (it reaches a consumer
#: that reads again, before the status): how that consumer resumes, as a sentence.
ResumeHint = Callable[[Any], str]

#: A write that has not completed after this long is waiting on its consumer's flow control:
#: it gives up its caller's turn (seconds).
PARK_S = 0.002

#: The streaming calls that are counted: the platform's own (health Watch and reflection are
#: not: a load balancer's health watch must never be refused).
COUNTED_PREFIXES: tuple[str, ...] = ("/govnode.v1.",)

_COUNTED_NAMES = "Subscribe, Exchange, Submit, Compare and the Watch calls count"


@dataclass(frozen=True)
class StreamLimits:
    per_caller: int = 16
    per_origin_node: int = 256
    total: int = 1024
    stall_s: float = 60.0


class Stalled(Exception):
    """A stream's consumer took no message for the stall timeout; carries the message that was
    waiting."""

    def __init__(self, pending: Any) -> None:
        super().__init__("stalled")
        self.pending = pending


class Slot:
    """One admitted stream; :meth:`release` (idempotent) when its call has ended."""

    def __init__(self, gate: StreamGate, caller: str, origin: str) -> None:
        self.gate = gate
        self.caller = caller
        self.origin = origin
        self.stalled = False
        self._released = False

    def mark_stalled(self) -> None:
        if not self.stalled:
            self.stalled = True
            self.gate._stalled[self.caller] += 1

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.gate._release(self)


class StreamGate:
    """Caps, turns and stalls for the streams of one node process (see the module)."""

    def __init__(
        self,
        limits: StreamLimits | None = None,
        *,
        hints: Mapping[str, ResumeHint] | None = None,
        counted_prefixes: tuple[str, ...] = COUNTED_PREFIXES,
    ) -> None:
        self.limits = limits or StreamLimits()
        self._hints = dict(hints or {})
        self._prefixes = counted_prefixes
        self._callers: Counter[str] = Counter()
        self._origins: Counter[str] = Counter()
        self._stalled: Counter[str] = Counter()
        self._turns: dict[str, asyncio.Lock] = {}
        self.total = 0

    def counts(self, method: str) -> bool:
        return method.startswith(self._prefixes)

    def open_streams(self, caller: str) -> int:
        return self._callers[caller]

    # --- caps -----------------------------------------------------------------------------

    def admit(self, caller: str, origin: str = "") -> Slot:
        """A slot for one more stream of ``caller`` (forwarded on behalf of ``origin``'s
        callers, or "" for a direct call); Refusal RESOURCE_EXHAUSTED over a limit."""
        limits = self.limits
        if self._callers[caller] >= limits.per_caller:
            stalled = self._stalled[caller]
            waiting = (
                f" ({stalled} of them ended for not being read, kept until their consumer "
                "reads or cancels them)"
                if stalled
                else ""
            )
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {limits.per_caller} open streams per caller ({_COUNTED_NAMES}): "
                f"{caller} has {self._callers[caller]} open on this node{waiting}; close one "
                "first",
            )
        if origin and self._origins[origin] >= limits.per_origin_node:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {limits.per_origin_node} open streams forwarded on behalf of the "
                f"callers of {origin}: that many are open on this node; try again when one "
                "has ended",
            )
        if self.total >= limits.total:
            raise Refusal(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this node has {self.total} open streams, the most it serves at once; try "
                "again later",
            )
        self._callers[caller] += 1
        if origin:
            self._origins[origin] += 1
        self.total += 1
        return Slot(self, caller, origin)

    def _release(self, slot: Slot) -> None:
        _decrement(self._callers, slot.caller)
        if slot.origin:
            _decrement(self._origins, slot.origin)
        if slot.stalled:
            _decrement(self._stalled, slot.caller)
        self.total -= 1
        if not self._callers[slot.caller]:
            self._turns.pop(slot.caller, None)

    # --- writing --------------------------------------------------------------------------

    async def write(
        self, context: grpc.aio.ServicerContext[Any, Any], item: Any, slot: Slot
    ) -> None:
        """Write ``item`` on ``slot``'s stream in its caller's turn; :class:`Stalled` when the
        consumer takes it for none of the stall timeout."""
        stall = self.limits.stall_s
        if self._callers[slot.caller] < 2:
            # The caller's only stream: nobody to take turns with.
            try:
                async with asyncio.timeout(stall):
                    await context.write(item)
            except TimeoutError:
                raise Stalled(item) from None
            return
        turn = self._turns.get(slot.caller)
        if turn is None:
            turn = self._turns[slot.caller] = asyncio.Lock()
        writing: asyncio.Future[None] | None = None
        try:
            async with turn:
                writing = asyncio.ensure_future(context.write(item))
                await asyncio.wait((writing,), timeout=PARK_S)
            if not writing.done():
                # Parked: the consumer is not taking messages; wait outside the turn.
                async with asyncio.timeout(max(stall - PARK_S, 0.0)):
                    await asyncio.shield(writing)
            writing.result()
        except TimeoutError:
            raise Stalled(item) from None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()

    def stalled(self, method: str, pending: Any) -> Refusal:
        """The status that ends a stream stalled on ``pending``."""
        name = method.rsplit("/", 1)[-1]
        hint = self._hints.get(method)
        how = hint(pending) if hint is not None else f"call {name} again"
        return Refusal(
            grpc.StatusCode.ABORTED,
            f"{name}: the stream was not read for {self.limits.stall_s:g} s (its consumer took "
            f"no message), so the node ended it; {how}",
        )


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
