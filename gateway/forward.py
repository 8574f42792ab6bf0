"""Forwarding a sharing call to the node that owns the resource.

A node that does not own a resource forwards the call, over mutual TLS with its own node
certificate, to the next node on the path (the province, the owning city, or a direct peer).
The call carries the request id and the caller assertion; its timeout is what is left of the
incoming call's deadline, so deadlines propagate hop by hop. A caller that set no deadline gets
:attr:`Forwarder.default_timeout` (10 s), except on an *open-ended* stream (Exchange,
Subscribe: as long as its consumer reads), which is then forwarded without a deadline, as it
runs on the owner's own node: the forwarder never ends it on its own. HTTP/2 keepalive still
finds a dead peer, and the stream ends when its caller cancels it, since the forwarded call is
cancelled with the incoming one. Its caller assertion is only valid for the call's *start*
(:attr:`Forwarder.start_window`), which the owner checks on arrival, once.

Only UNAVAILABLE is retried (jittered exponential backoff, tenacity), and only while the
caller's deadline leaves room: a DEADLINE_EXCEEDED cannot be retried inside the same deadline,
and every other status is the owner's answer, passed through unchanged. A stream is retried
only before its first message (and an open-ended one only within its start window, while its
assertion is still valid). A per-peer :class:`CircuitBreaker` makes calls to a peer that keeps
failing fail at once, naming it.

Each forwarded call is a CLIENT span (gateway.tracing) under the span of the call being served,
its retries included, and carries that span's W3C trace context to the next node.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, cast

import grpc
import grpc.aio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway.assertion import ASSERTION_KEY
from gateway.channel import secure_channel
from gateway.interceptors import REQUEST_ID_KEY
from gateway.metrics import GrpcMetrics
from gateway.refusal import RETRY_AFTER_KEY, Refusal, retry_after
from gateway.tls import TlsFiles
from gateway.tracing import Tracing, inject

#: Timeout of a forwarded call whose caller set no deadline (seconds).
DEFAULT_FORWARD_TIMEOUT_S = 10.0
#: An open-ended stream whose caller set no deadline must start within this (seconds): its
#: caller assertion is valid this long, and it is retried only within it.
OPEN_STREAM_START_S = 10.0
#: Kept back from the caller's remaining time, so our answer (or refusal) reaches it in time.
DEADLINE_MARGIN_S = 0.02
#: Attempts per forwarded call (the first one included), all within the caller's deadline.
MAX_ATTEMPTS = 3
#: Consecutive UNAVAILABLE failures after which a peer's breaker opens, and for how long.
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 5.0
#: A status message already naming an unreachable node further down the path.
UNREACHABLE = "is unreachable"

#: What a relaying node holds of one forwarded stream that its own consumer is slow to take:
#: its HTTP/2 receive window, fixed (without BDP probing, grpc would grow it to several MiB
#: per stream), plus the one message being relayed. The owner's writes wait beyond that.
RELAY_WINDOW_BYTES = 256 * 1024

#: Metadata a forwarded call passes on besides the request id and the assertion.
Metadata = tuple[tuple[str, str], ...]

_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", RELAY_WINDOW_BYTES),
]


def outgoing_timeout(
    remaining: float | None,
    *,
    default: float = DEFAULT_FORWARD_TIMEOUT_S,
    margin: float = DEADLINE_MARGIN_S,
) -> float:
    """The timeout of a forwarded call, from the incoming call's remaining time (None: the
    caller set no deadline). DEADLINE_EXCEEDED when nothing is left to forward with."""
    if remaining is None:
        return default
    timeout = remaining - margin
    if timeout <= 0:
        raise Refusal(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "the caller's deadline leaves no time to forward the call to the owning node",
        )
    return timeout


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures; open for ``cooldown`` seconds
    (calls refused at once); then half-open: one probe call is let through, its success closes
    the breaker, its failure opens it again."""

    def __init__(
        self,
        threshold: int = BREAKER_THRESHOLD,
        cooldown: float = BREAKER_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def retry_after(self) -> float:
        """Seconds until a probe is let through (0 when calls may go now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go to the peer now? In half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def release(self) -> None:
        """A call ended without telling whether the peer is reachable (e.g. it timed out)."""
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._probing = False


def _unavailable(exc: BaseException) -> bool:
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() is grpc.StatusCode.UNAVAILABLE
        and UNREACHABLE not in (exc.details() or "")
    )


class Forwarder:
    """One lazily created mutual-TLS channel and one circuit breaker per peer endpoint."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        threshold: int = BREAKER_THRESHOLD,
        cooldown: float = BREAKER_COOLDOWN_S,
        max_attempts: int = MAX_ATTEMPTS,
        default_timeout: float = DEFAULT_FORWARD_TIMEOUT_S,
        start_window: float = OPEN_STREAM_START_S,
        metrics: GrpcMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._files = files
        #: The node's grpc_client_* series (gateway.metrics): one call per attempt sent.
        self.metrics = metrics
        #: The node's spans; a forwarded call is a CLIENT span under the current one.
        self.tracing = tracing if tracing is not None else Tracing()
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_attempts = max_attempts
        #: Timeout of a forwarded call whose caller set no deadline (but see open-ended).
        self.default_timeout = default_timeout
        #: How long an open-ended stream's assertion is valid for its start (see the module).
        self.start_window = start_window
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        #: Timeouts of the calls forwarded so far (the last few; None: no deadline), for
        #: operators and tests.
        self.last_timeouts: list[float | None] = []

    def breaker(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(self.threshold, self.cooldown)
        return breaker

    def assertion_validity(self, remaining: float | None, *, open_ended: bool = False) -> float:
        """Seconds the caller assertion of a call forwarded now stays valid, from the incoming
        call's remaining time (None: no deadline). The owner checks it when the call arrives;
        for an open-ended stream that is all it needs to cover, so it is never longer than
        :attr:`start_window` (a shorter validity also keeps its nonce for less time)."""
        if open_ended:
            return self.start_window if remaining is None else min(remaining, self.start_window)
        return self.default_timeout if remaining is None else max(remaining, 0.0)

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            # Every call sets its own deadline (None only for an open-ended stream), so the
            # channel adds no default one.
            channel = self._channels[endpoint] = secure_channel(
                endpoint, self._files, extra_options=_CHANNEL_OPTIONS, default_deadline=False
            )
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(grace=None)
        self._channels.clear()

    def _admit(self, endpoint: str, region: str) -> CircuitBreaker:
        breaker = self.breaker(endpoint)
        if not breaker.allow():
            raise Refusal(
                grpc.StatusCode.UNAVAILABLE,
                f"node {endpoint} ({region}) {UNREACHABLE}; retry after "
                f"{breaker.retry_after():.1f} s",
            )
        return breaker

    def _retrying(self, deadline: float, attempts: int | None = None) -> AsyncRetrying:
        limit = self.max_attempts if attempts is None else max(attempts, 1)

        def stop(state: RetryCallState) -> bool:
            if stop_after_attempt(limit)(state):
                return True
            pause = state.upcoming_sleep or 0.0
            return time.monotonic() + pause + DEADLINE_MARGIN_S >= deadline

        return AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            wait=wait_random_exponential(multiplier=0.05, max=0.5),
            stop=stop,
            reraise=True,
        )

    def _metadata(
        self, request_id: str, assertion: bytes | None, extra: Metadata = ()
    ) -> tuple[tuple[str, str | bytes], ...]:
        """The request id, the caller assertion (none on a node's own call) and ``extra``: the
        caller's metadata the owner needs as well (checked and bounded by the forwarder's
        servicer, e.g. the recipient a portal names and a 授权开放 key)."""
        own: tuple[tuple[str, str | bytes], ...] = ((REQUEST_ID_KEY, request_id),)
        if assertion is not None:
            own += ((ASSERTION_KEY, assertion),)
        return own + tuple(extra)

    def _refusal(self, exc: grpc.aio.AioRpcError, endpoint: str, region: str) -> Refusal:
        code, details = exc.code(), exc.details() or ""
        if _unavailable(exc):
            details = f"node {endpoint} ({region}) {UNREACHABLE}: {details}"
        # The owner's retry information reaches the caller as the owner sent it.
        # (grpc.aio's Metadata yields (key, value) pairs; the stubs type it otherwise.)
        pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
        delays = [str(value) for key, value in pairs if key == RETRY_AFTER_KEY]
        ok = bool(delays) and delays[0].isdigit() and len(delays[0]) <= 10
        retry = retry_after(int(delays[0])) if ok else ()
        return Refusal(code, details, retry)

    def _note(self, timeout: float | None) -> None:
        self.last_timeouts = [*self.last_timeouts[-9:], timeout]

    async def unary(
        self,
        endpoint: str,
        region: str,
        method: str,
        request: Any,
        response_type: Any,
        *,
        request_id: str,
        assertion: bytes,
        remaining: float | None,
        extra_metadata: Metadata = (),
    ) -> Any:
        """Forward a unary call; the owner's status passes through as a :class:`Refusal`."""
        timeout = outgoing_timeout(remaining, default=self.default_timeout)
        self._note(timeout)
        return await self._unary(
            endpoint,
            region,
            method,
            request,
            response_type,
            self._metadata(request_id, assertion, extra_metadata),
            timeout,
        )

    async def own_unary(
        self,
        endpoint: str,
        region: str,
        method: str,
        request: Any,
        response_type: Any,
        *,
        within_s: float,
    ) -> Any:
        """A unary call this node makes as itself, for no caller (no assertion): e.g. the
        province reading an approved city's open catalog. Same channel, breaker and retries
        as forwarded calls to that peer; its status comes back as a :class:`Refusal`."""
        return await self._unary(
            endpoint,
            region,
            method,
            request,
            response_type,
            self._metadata(os.urandom(16).hex(), None),
            within_s,
        )

    async def _unary(
        self,
        endpoint: str,
        region: str,
        method: str,
        request: Any,
        response_type: Any,
        metadata: tuple[tuple[str, str | bytes], ...],
        within_s: float,
    ) -> Any:
        deadline = time.monotonic() + within_s
        span = self.tracing.client_span(
            method, endpoint=endpoint, region=region, request_id=_request_id_of(metadata)
        )
        metadata += inject(span)
        code = grpc.StatusCode.OK
        call = self._channel(endpoint).unary_unary(
            method,
            request_serializer=_serialize,
            response_deserializer=response_type.FromString,
        )

        counted = self.metrics.method(method, "unary") if self.metrics is not None else None

        async def once() -> Any:
            breaker = self._admit(endpoint, region)
            started = counted.started() if counted is not None else 0.0
            code = grpc.StatusCode.CANCELLED  # unless the call ends otherwise
            try:
                response = await call(
                    request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata
                )
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self._record(breaker, exc)
                raise
            finally:
                if counted is not None:
                    counted.handled(code, started)
            breaker.success()
            return response

        try:
            # The first attempt goes straight out: the retry machinery only costs something
            # once a peer has answered UNAVAILABLE.
            try:
                return await once()
            except grpc.aio.AioRpcError as exc:
                if not _unavailable(exc):
                    raise
            async for attempt in self._retrying(deadline, attempts=self.max_attempts - 1):
                with attempt:
                    return await once()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._refusal(exc, endpoint, region) from None
        except Refusal as exc:
            code = exc.code
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.tracing.client_done(span, code)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(
        self,
        endpoint: str,
        region: str,
        method: str,
        request: Any,
        response_type: Any,
        *,
        request_id: str,
        assertion: bytes,
        remaining: float | None,
        open_ended: bool = False,
        extra_metadata: Metadata = (),
    ) -> AsyncIterator[Any]:
        """Forward a server-streaming call; retried only before its first response.

        ``open_ended``: a stream that lasts as long as its consumer reads (Exchange, Subscribe):
        without a caller deadline it is forwarded without one. However it ends (the consumer
        cancels, stops reading, or the caller's deadline passes), the forwarded call is
        cancelled too, so the next node and the owner stop serving it at once. The next message
        is read from the forwarded call only once the previous one has been taken downstream,
        so a slow consumer holds at most :data:`RELAY_WINDOW_BYTES` here.
        """
        timeout: float | None
        if open_ended and remaining is None:
            timeout, window = None, self.start_window
        else:
            timeout = window = outgoing_timeout(remaining, default=self.default_timeout)
        self._note(timeout)
        # Retries stop here; for a call with a deadline it is the deadline too.
        deadline = time.monotonic() + window
        stub = self._channel(endpoint).unary_stream(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        end = object()
        first: Any = end
        call: Any = None
        items: Any = None
        counted = self.metrics.method(method, "server_stream") if self.metrics else None
        started: float | None = None  # the attempt counted as started and not yet as handled
        code = grpc.StatusCode.CANCELLED  # unless the stream ends otherwise
        span = self.tracing.client_span(
            method, endpoint=endpoint, region=region, request_id=request_id
        )
        metadata = self._metadata(request_id, assertion, extra_metadata) + inject(span)
        try:
            async for attempt in self._retrying(deadline):
                with attempt:
                    breaker = self._admit(endpoint, region)
                    call = stub(
                        request,
                        timeout=(
                            None if timeout is None else max(deadline - time.monotonic(), 0.001)
                        ),
                        metadata=metadata,
                    )
                    started = counted.started() if counted is not None else None
                    items = aiter(call)
                    try:
                        first = await anext(items, end)
                    except grpc.aio.AioRpcError as exc:
                        self._record(breaker, exc)
                        if counted is not None and started is not None:
                            counted.handled(exc.code(), started)
                            started = None
                        raise
                    breaker.success()
            received = counted.received if counted is not None else None
            if first is not end:
                if received is not None:
                    received.inc()
                yield first
                async for item in items:
                    if received is not None:
                        received.inc()
                    yield item
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise self._refusal(exc, endpoint, region) from None
        except Refusal as exc:
            code = exc.code
            raise
        except BaseException:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if counted is not None and started is not None:
                counted.handled(code, started)
            self.tracing.client_done(span, code)
            # Our caller is gone (cancelled, or closed this generator) or the call ended:
            # cancelling an ended call does nothing, cancelling a running one ends it downstream.
            if call is not None:
                call.cancel()

    @staticmethod
    def _record(breaker: CircuitBreaker, exc: grpc.aio.AioRpcError) -> None:
        if _unavailable(exc):
            breaker.failure()
        elif exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
            breaker.release()
        else:
            breaker.success()  # the peer answered: it is reachable


def _request_id_of(metadata: tuple[tuple[str, str | bytes], ...]) -> str:
    return next((str(value) for key, value in metadata if key == REQUEST_ID_KEY), "")
