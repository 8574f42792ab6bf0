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
- **Stop.** When the node stops (:meth:`StreamGate.stop`), a stream that is waiting ends at
  once with UNAVAILABLE, saying the node is stopping and, from the last message it sent, where
  to resume (the same hints): waiting for its consumer (a write parked on flow control), for
  its caller's next message (Submit), or for data (a servicer's idle wait, marked with
  :func:`idle`: Subscribe caught up, WatchNotifications with nothing new). Its task is
  cancelled out of that wait, which is also what a caller's cancel does to it. A stream that is
  working (reading a page, committing a batch) is not interrupted: it ends at its next message
  boundary, and a message it has produced (a batch's acknowledgement) is still written first.
  New streams are refused UNAVAILABLE. Without this, a caught-up subscriber held the node's
  stop for its whole grace period. A stream that has not ended a few seconds after the stop
  (:meth:`StreamGate.ended`: its work did not reach its next message) is logged with what it
  was doing and then cancelled as a waiting one is (:meth:`StreamGate.cancel_open`), ending
  with the same status, so that it cannot hold the stop for the grace period either.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
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

_COUNTED_NAMES = "Subscribe, Exchange, Submit, Compare, StreamUsageLog and the Watch calls count"

STOPPING_MESSAGE = (
    "this node is stopping and opens no new stream; call again in a few seconds (or at "
    "another address of the node)"
)


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


class Stopping(Exception):
    """The node is stopping: the stream ends at its next wait or message boundary."""


#: The slot of the stream whose handler runs in this context (set by the guard), for
#: :func:`idle`.
_current: contextvars.ContextVar[Slot | None] = contextvars.ContextVar(
    "govnode_stream_slot", default=None
)


@contextlib.contextmanager
def idle() -> Iterator[None]:
    """Around a streaming servicer's wait for data (a commit, a notification): if the node stops
    meanwhile, the wait is cancelled and the stream ends at once (see the module). Raises
    :class:`Stopping` if the node is stopping already. Outside a counted stream, nothing."""
    slot = _current.get()
    if slot is None:
        yield
        return
    with slot.waiting():
        yield


class Slot:
    """One admitted stream; :meth:`release` (idempotent) when its call has ended."""

    def __init__(self, gate: StreamGate, caller: str, origin: str, method: str = "") -> None:
        self.gate = gate
        self.caller = caller
        self.origin = origin
        self.method = method
        #: What the stream's handler is doing, for the log of a stream that outlives the stop
        #: (set by the guard: gateway.interceptors).
        self.doing = "starting"
        self.stalled = False
        self._released = False
        #: The last message written, or being written (None: none yet): the stop's hint.
        self.last: Any = None
        self._task = _running_task()
        self._waits = 0  # > 0: the stream is waiting (see the module: Stop)
        self._stopping = False
        self._cancelled = False  # its task was cancelled by the stop
        self._token: contextvars.Token[Slot | None] | None = None

    def enter(self) -> None:
        """Make this the current stream of the handler's context (for :func:`idle`)."""
        self._token = _current.set(self)

    @contextlib.contextmanager
    def waiting(self, *, write: bool = False) -> Iterator[None]:
        """Around a wait the stop may cancel. Raises :class:`Stopping` if the node is stopping
        already, except around a ``write``: the message is produced, so it is handed to gRPC
        (which happens before the write's first wait) and the stream then ends in that wait."""
        if self._stopping:
            if not write:
                raise Stopping()
            self._cancel()
        self._waits += 1
        try:
            yield
        finally:
            self._waits -= 1

    def between_messages(self) -> None:
        """Raise :class:`Stopping` if the node is stopping: the stream ends here."""
        if self._stopping:
            raise Stopping()

    def stop(self) -> None:
        self._stopping = True
        if self._waits:
            self._cancel()

    def _cancel(self) -> None:
        if not self._cancelled and self._task is not None:
            self._cancelled = True
            self._task.cancel()

    def force_cancel(self) -> None:
        """Cancel the stream's task whatever it is doing (it outlived the stop: see the
        module): as the stop cancels a stream that waits, so that it ends with the same
        UNAVAILABLE status saying where to resume."""
        if self._task is not None and not self._task.done():
            self._cancel()

    def describe(self) -> str:
        name = self.method.rsplit("/", 1)[-1] or "a stream"
        return f"{name} of {self.caller}: {self.doing}"

    def stopped_by_gate(self) -> bool:
        """Whether the cancellation being handled is the stop's (it is then taken back) rather
        than the caller's, a deadline's or the server's."""
        task = self._task
        if not self._cancelled or task is None or task is not asyncio.current_task():
            return False
        self._cancelled = False
        return task.uncancel() == 0

    def mark_stalled(self) -> None:
        if not self.stalled:
            self.stalled = True
            self.gate._stalled[self.caller] += 1

    def release(self) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if self._released:
            return
        self._released = True
        self.gate._release(self)


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop (the gate's unit test)
        return None


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
        self._open: set[Slot] = set()
        self._closed: asyncio.Event | None = None  # set once stopping with no stream open
        self.stopping = False
        self.total = 0

    def counts(self, method: str) -> bool:
        return method.startswith(self._prefixes)

    def open_streams(self, caller: str) -> int:
        return self._callers[caller]

    # --- caps -----------------------------------------------------------------------------

    def admit(self, caller: str, origin: str = "", method: str = "") -> Slot:
        """A slot for one more stream of ``caller`` (forwarded on behalf of ``origin``'s
        callers, or "" for a direct call) calling ``method``; Refusal RESOURCE_EXHAUSTED over a
        limit, UNAVAILABLE once the node is stopping."""
        if self.stopping:
            raise Refusal(grpc.StatusCode.UNAVAILABLE, STOPPING_MESSAGE)
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
        slot = Slot(self, caller, origin, method)
        self._open.add(slot)
        return slot

    def _release(self, slot: Slot) -> None:
        self._open.discard(slot)
        _decrement(self._callers, slot.caller)
        if slot.origin:
            _decrement(self._origins, slot.origin)
        if slot.stalled:
            _decrement(self._stalled, slot.caller)
        self.total -= 1
        if not self._callers[slot.caller]:
            self._turns.pop(slot.caller, None)
        if self._closed is not None and not self._open:
            self._closed.set()

    # --- writing --------------------------------------------------------------------------

    async def write(
        self, context: grpc.aio.ServicerContext[Any, Any], item: Any, slot: Slot
    ) -> None:
        """Write ``item`` on ``slot``'s stream in its caller's turn; :class:`Stalled` when the
        consumer takes it for none of the stall timeout."""
        stall = self.limits.stall_s
        if self._callers[slot.caller] < 2:
            # The caller's only stream: nobody to take turns with. The write is handed to gRPC
            # before its first wait: from there on, it reaches the consumer before any status.
            slot.last = item
            try:
                with slot.waiting(write=True):
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
            slot.last = item  # the write has started: handed to gRPC
            if not writing.done():
                # Parked: the consumer is not taking messages; wait outside the turn.
                with slot.waiting(write=True):
                    async with asyncio.timeout(max(stall - PARK_S, 0.0)):
                        await asyncio.shield(writing)
            writing.result()
        except TimeoutError:
            raise Stalled(item) from None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()

    def stop(self) -> None:
        """The node is stopping: end the streams that wait, at once; the others at their next
        wait or message boundary; refuse new ones (see the module)."""
        self.stopping = True
        for slot in list(self._open):
            slot.stop()

    async def ended(self, within_s: float) -> int:
        """After :meth:`stop`: wait (at most ``within_s`` seconds) until every stream has ended
        and its status is with gRPC; returns how many were still open. A stopping node waits for
        this before it stops its server, so that no stream's status is sent while the server
        shuts down."""
        if self._open:
            self._closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within_s):
                    await self._closed.wait()
            self._closed = None
        return len(self._open)

    def describe_open(self) -> list[str]:
        """What each stream still open is doing (at most 20 of them), for the log."""
        return sorted(slot.describe() for slot in self._open)[:20]

    def cancel_open(self) -> int:
        """After :meth:`stop` and :meth:`ended`: cancel every stream still open, whatever it
        is doing (see the module); returns how many."""
        slots = list(self._open)
        for slot in slots:
            slot.force_cancel()
        return len(slots)

    def stopped(self, method: str, slot: Slot) -> Refusal:
        """The status that ends ``slot``'s stream because the node is stopping."""
        name = method.rsplit("/", 1)[-1]
        hint = self._hints.get(method)
        if slot.last is None or hint is None:
            how = f"call {name} again with the same request"
        else:
            how = hint(slot.last)
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"{name}: this node is stopping, so it ended the stream; once it is back (in a few "
            f"seconds, or at another address of the node), {how}",
        )

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
