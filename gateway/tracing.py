"""W3C trace context across node hops: one trace for a call's whole path.

A routed call (厦门 -> province -> 福州) and the portal's calls into its node carry the W3C
``traceparent``/``tracestate`` metadata. The guard opens a SERVER span per call, continuing
the caller's trace, and makes it current for the handler; the forwarder opens a CLIENT span
per forwarded call under it and sends its context on. Each span names the call's govnode
request id (the key of its audit records), so a trace and the audit log point at each other.

Only the OpenTelemetry *API* is used here: without an SDK (``[tracing] exporter = "none"``,
the default) a node has no recorder, and :class:`Tracing` does next to nothing: it looks for a
``traceparent`` in the call's metadata and, only if there is one, passes that context on to
the next hop unchanged, so a node with tracing off does not cut its neighbours' traces in two.

Spans carry no caller identity, agency code or resource code: trace back ends are seldom
guarded like the audit log (第三十九条). The caller's *role* (agency, node, portal, ...) and
the request id are enough to find the audit record that names everything else.

Why not opentelemetry-instrumentation-grpc's aio server interceptor: it breaks handlers that
write through ``context.write()`` (the health service's Watch:
open-telemetry/opentelemetry-python-contrib#3066), and it cannot name the request id or the
role.
"""

from __future__ import annotations

import contextvars
import functools
import random
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_HEADERS = frozenset({TRACEPARENT, TRACESTATE})

#: W3C trace context only: no baggage, whose free-form entries a caller could fill.
#: The propagator bounds what it reads (a traceparent of at most 512 characters, a tracestate
#: of at most 32 well-formed members); gRPC bounds the metadata as a whole (8 KiB).
_PROPAGATOR = TraceContextTextMapPropagator()

#: Span attributes (OpenTelemetry's RPC conventions, and govnode's own).
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_STATUS_CODE = "rpc.grpc.status_code"
REQUEST_ID = "govnode.request_id"
CALLER_ROLE = "govnode.caller_role"
FORWARDED = "govnode.forwarded"
PEER_REGION = "govnode.peer_region"
SERVER_ADDRESS = "server.address"
HTTP_METHOD = "http.request.method"
HTTP_ROUTE = "http.route"
HTTP_STATUS = "http.response.status_code"

#: The instrumentation scope every govnode span is recorded under.
SCOPE = "govnode"


@functools.cache
def _rpc_attributes(method: str) -> dict[str, str]:
    """Per method, once (the server's methods are a fixed set; the guard calls this for
    the methods it serves, the forwarder for the routed ones)."""
    service, _, name = method.lstrip("/").partition("/")
    return {RPC_SYSTEM: "grpc", RPC_SERVICE: service, RPC_METHOD: name}


class _Carrier(dict[str, str]):
    """The two headers of W3C trace context, read from gRPC metadata (its other keys are not
    copied: the propagator asks for these two only)."""

    @classmethod
    def of(cls, metadata: Iterable[tuple[str, Any]]) -> _Carrier | None:
        carrier = None
        for key, value in metadata:
            if key in _HEADERS and isinstance(value, str):
                carrier = carrier if carrier is not None else cls()
                carrier[key] = value
        return carrier


#: Set while a call serves that began a new trace and was sampled out by :class:`Tracing`
#: itself (see ``root_ratio``): no span exists, but a call it forwards must still tell the
#: next hop "not sampled", as a sampled-out span's context would.
_SAMPLED_OUT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "govnode_trace_sampled_out", default=False
)


def _sampled_out_span() -> Span:
    """A span that records nothing, with a new trace's ids and the "sampled" flag clear: what
    a sampled-out call passes on, so that the next hops do not record a trace of their own."""
    trace_id = random.getrandbits(128) or 1
    span_id = random.getrandbits(64) or 1
    return NonRecordingSpan(
        SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    )


class ServerSpan:
    """What the guard holds of one call's span: the span, the token that made it current, and
    the attributes known at its start, set with the final ones when it ends (one pass of the
    SDK's attribute checks and one lock per span instead of two; none for a span not
    recorded). ``span`` None: a new trace sampled out at its root; the token is then
    :data:`_SAMPLED_OUT`'s."""

    __slots__ = ("attributes", "span", "token")

    def __init__(
        self,
        span: Span | None,
        token: contextvars.Token[otel_context.Context] | contextvars.Token[bool],
        attributes: dict[str, str | bool | int],
    ) -> None:
        self.span = span
        self.token = token
        self.attributes = attributes


_NO_ATTRIBUTES: dict[str, str | bool | int] = {}  # a sampled-out span's (never written)


class Tracing:
    """The spans of one node (or portal). ``tracer``: from the node's own TracerProvider
    (gateway.tracing_setup), or None when tracing is off: then calls only pass on a context
    they were given. A provider per node, never the process's global one, since tests run
    several nodes in one process and the global provider can be set only once."""

    def __init__(self, tracer: Tracer | None = None, root_ratio: float | None = None) -> None:
        self.recording = tracer is not None
        self._tracer: Tracer = tracer if tracer is not None else trace.NoOpTracer()
        #: The share of new traces (calls with no ``traceparent``) recorded, decided here
        #: before the SDK is asked for anything: a call sampled out costs a random number
        #: and a context variable, not a span's ids, context and sampler (measured in a
        #: serving node: 15-70 µs a call; bench/tracing_cost.py). The tracer's own sampler
        #: must then record every root it is given (gateway.tracing_setup). None: the
        #: tracer's sampler decides every span.
        self._root_ratio = root_ratio if root_ratio is not None and root_ratio < 1.0 else None

    def server_span(
        self, method: str, metadata: Iterable[tuple[str, Any]] | None, request_id: str
    ) -> ServerSpan | None:
        """Open the SERVER span of an incoming call, continuing the caller's trace, and make it
        current (until :meth:`end`). None when tracing is off and the caller sent no trace."""
        carrier = _Carrier.of(metadata or ())
        if carrier is None and not self.recording:
            return None
        server = self._open(method, carrier)
        if server is not None and server.span is not None and server.span.is_recording():
            server.attributes.update(_rpc_attributes(method))
            server.attributes[REQUEST_ID] = request_id
        return server

    def http_span(self, method: str, route: str, headers: Mapping[str, str]) -> ServerSpan | None:
        """The SERVER span of an HTTP request (the portal's), continuing a ``traceparent``
        header if the request has one; made current until :meth:`end_http`."""
        carrier = _Carrier.of((k, headers[k]) for k in (TRACEPARENT, TRACESTATE) if k in headers)
        if carrier is None and not self.recording:
            return None
        name = f"{method} {route}" if route else method
        server = self._open(name, carrier)
        if server is not None and server.span is not None and server.span.is_recording():
            server.attributes.update({HTTP_METHOD: method, HTTP_ROUTE: route})
        return server

    def _open(self, name: str, carrier: _Carrier | None) -> ServerSpan | None:
        """The span (its attributes are the caller's to add, only if it records: a span
        sampled out builds none), made current."""
        if carrier is None and self._root_ratio is not None and random.random() >= self._root_ratio:
            return ServerSpan(None, _SAMPLED_OUT.set(True), _NO_ATTRIBUTES)
        parent = _PROPAGATOR.extract(carrier) if carrier is not None else None
        if not self.recording:
            # No recorder: the caller's context passes through as it came.
            span: Span = trace.get_current_span(parent)
            if not span.get_span_context().is_valid:
                return None
        else:
            span = self._tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        return ServerSpan(span, otel_context.attach(trace.set_span_in_context(span, parent)), {})

    def end(
        self,
        server: ServerSpan | None,
        code: grpc.StatusCode | None,
        *,
        role: str = "",
        forwarded: bool = False,
    ) -> None:
        """End the call's span, naming its final status (None: it has none of ours) and the
        caller's role, and restore the context from before the call. The guard calls this
        last, after the audit record, so that the span covers it."""
        if server is None:
            return
        span = server.span
        if span is None:
            _SAMPLED_OUT.reset(server.token)  # type: ignore[arg-type]
            return
        otel_context.detach(server.token)  # type: ignore[arg-type]
        if not self.recording or not span.is_recording():
            return  # nothing recorded (a span sampled out ends as it began: no-op)
        final = server.attributes
        if role:
            final[CALLER_ROLE] = role
        if forwarded:
            final[FORWARDED] = True
        if code is not None:
            final[RPC_STATUS_CODE] = code.value[0]
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.set_attributes(final)  # one lock and one pass for all of them
        span.end()

    def end_http(self, server: ServerSpan | None, status: int) -> None:
        """End an HTTP request's span with its response status (5xx: an error)."""
        if server is None:
            return
        if server.span is None:
            _SAMPLED_OUT.reset(server.token)  # type: ignore[arg-type]
            return
        otel_context.detach(server.token)  # type: ignore[arg-type]
        if not self.recording or not server.span.is_recording():
            return
        server.attributes[HTTP_STATUS] = status
        server.span.set_attributes(server.attributes)
        if status >= 500:
            server.span.set_status(Status(StatusCode.ERROR, str(status)))
        server.span.end()

    def client_span(
        self, method: str, *, endpoint: str, region: str, request_id: str
    ) -> Span | None:
        """A CLIENT span for a call this node makes to another (a forwarded call), child of
        the current span, not made current (a forwarded stream outlives the turn it started
        in). None when there is nothing to record or pass on."""
        if _SAMPLED_OUT.get():
            return _sampled_out_span()
        if not self.recording:
            current = trace.get_current_span()
            return current if current.get_span_context().is_valid else None
        if (
            self._root_ratio is not None
            and not trace.get_current_span().get_span_context().is_valid
            and random.random() >= self._root_ratio
        ):
            # A call made outside any traced call (a background job's) starts a trace of
            # its own: sampled like any new trace.
            return _sampled_out_span()
        return self._tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={
                **_rpc_attributes(method),
                REQUEST_ID: request_id,
                SERVER_ADDRESS: endpoint,
                PEER_REGION: region,
            },
        )

    def client_done(self, span: Span | None, code: grpc.StatusCode) -> None:
        if span is None or isinstance(span, NonRecordingSpan):
            return
        _set_status(span, code)
        span.end()


def inject(span: Span | None) -> tuple[tuple[str, str], ...]:
    """The metadata that carries ``span``'s context to the next hop (none for None)."""
    if span is None:
        return ()
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return tuple(carrier.items())


def inject_current() -> tuple[tuple[str, str], ...]:
    """The metadata that carries the current span's context (the portal's calls into its
    node, under its HTTP request's span); none without a current trace."""
    if _SAMPLED_OUT.get():
        return inject(_sampled_out_span())
    span = trace.get_current_span()
    return inject(span) if span.get_span_context().is_valid else ()


def _set_status(span: Span, code: grpc.StatusCode) -> None:
    span.set_attribute(RPC_STATUS_CODE, code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))


def log_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, as hex, for a log line (empty
    without one)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
