"""gRPC metrics with the names every gRPC dashboard knows (go-grpc-prometheus).

Server side, counted by the guard (gateway.interceptors) around each guarded handler:
``grpc_server_started_total`` when a call enters, ``grpc_server_handled_total`` with its final
status on every path (OK, a refusal, an abort, INTERNAL, a cancelled or interrupted call),
``grpc_server_handling_seconds`` for unary and client-streaming calls only (a server stream
lasts as long as its consumer reads: Subscribe, WatchCatalog would swamp the histogram), and
``grpc_server_msg_received_total`` / ``grpc_server_msg_sent_total`` for streams. Client side,
``grpc_client_*`` the same for the calls the node forwards (gateway.forward), one per attempt.

Labels are ``grpc_type`` (unary, client_stream, server_stream, bidi_stream), ``grpc_service``,
``grpc_method`` and ``grpc_code`` in Go's spelling (OK, Canceled, InvalidArgument, ...), so
Grafana's gRPC dashboards work unchanged. Never a caller, agency or resource: their number has
no bound. Each node has its own :class:`~prometheus_client.CollectorRegistry` (tests start
several nodes in one process, and the global registry refuses duplicate series).

The labelled children are looked up once per method and code and kept (a dict by method):
about 3 µs a call instead of about 11 µs for ``.labels(...)`` on every call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import grpc
import grpc.aio
from prometheus_client import CollectorRegistry, Counter, Histogram

GrpcType = Literal["unary", "client_stream", "server_stream", "bidi_stream"]
Side = Literal["server", "client"]

#: Handling-time buckets (seconds): a local Verify takes about a millisecond, a routed call
#: to a city tens of milliseconds, a large download seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_GO_SPECIAL = {"OK": "OK", "CANCELLED": "Canceled"}


def go_code(code: grpc.StatusCode) -> str:
    """A status code as Go's ``codes.Code.String()`` spells it: ``INVALID_ARGUMENT`` is
    ``InvalidArgument``, ``CANCELLED`` is ``Canceled`` (one L)."""
    return _GO_SPECIAL.get(code.name) or "".join(p.capitalize() for p in code.name.split("_"))


#: Every code's Go spelling, computed once.
GO_CODES: dict[grpc.StatusCode, str] = {code: go_code(code) for code in grpc.StatusCode}


def split_method(full_method: str) -> tuple[str, str]:
    """``/govnode.v1.SharingService/Verify`` -> (``govnode.v1.SharingService``, ``Verify``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method


class MethodMetrics:
    """The children of one method's series, created on first use and kept."""

    def __init__(self, rpc: GrpcMetrics, grpc_type: GrpcType, full_method: str) -> None:
        service, method = split_method(full_method)
        labels = (grpc_type, service, method)
        self._labels = labels
        self._handled_family = rpc.handled
        self._handled: dict[grpc.StatusCode, Any] = {}
        self._started = rpc.started.labels(*labels)
        from_client = grpc_type in ("client_stream", "bidi_stream")
        from_server = grpc_type in ("server_stream", "bidi_stream")
        streams_in, streams_out = (
            (from_client, from_server) if rpc.side == "server" else (from_server, from_client)
        )
        #: Only calls that end when their work ends are timed (see the module).
        self.seconds = (
            rpc.seconds.labels(*labels) if grpc_type in ("unary", "client_stream") else None
        )
        self.received = rpc.received.labels(*labels) if streams_in else None
        self.sent = rpc.sent.labels(*labels) if streams_out else None
        self._portal_family = rpc.portal
        self._portal: dict[grpc.StatusCode, Any] = {}

    def started(self) -> float:
        """Count a call that starts; returns its start time for :meth:`handled`."""
        self._started.inc()
        return time.perf_counter()

    def handled(self, code: grpc.StatusCode, started: float) -> None:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = self._handled_family.labels(*self._labels, GO_CODES[code])
        child.inc()
        if self.seconds is not None:
            self.seconds.observe(time.perf_counter() - started)

    def portal_call(self, code: grpc.StatusCode) -> None:
        """Count a call an open data portal made (the portal's own requests, from the public,
        are what reach the node as these calls)."""
        if self._portal_family is None:
            return
        child = self._portal.get(code)
        if child is None:
            child = self._portal[code] = self._portal_family.labels(self._labels[2], GO_CODES[code])
        child.inc()


class GrpcMetrics:
    """One side's (server or client) gRPC series in ``registry``."""

    def __init__(self, registry: CollectorRegistry, side: Side) -> None:
        self.side = side
        names = ["grpc_type", "grpc_service", "grpc_method"]
        what = "RPCs" if side == "server" else "RPCs this node made (forwarded calls)"
        self.started = Counter(
            f"grpc_{side}_started_total", f"{what} started", names, registry=registry
        )
        self.handled = Counter(
            f"grpc_{side}_handled_total",
            f"{what} completed, by final status",
            [*names, "grpc_code"],
            registry=registry,
        )
        self.seconds = Histogram(
            f"grpc_{side}_handling_seconds",
            f"{what}: time until the status (unary and client-streaming calls)",
            names,
            registry=registry,
            buckets=BUCKETS,
        )
        self.received = Counter(
            f"grpc_{side}_msg_received_total",
            f"stream messages received ({what})",
            names,
            registry=registry,
        )
        self.sent = Counter(
            f"grpc_{side}_msg_sent_total",
            f"stream messages sent ({what})",
            names,
            registry=registry,
        )
        #: Server side: the calls of open data portals (role portal), by method and code.
        self.portal = (
            Counter(
                "govnode_portal_requests_total",
                "calls made by an open data portal (开放平台) for the public, by final status",
                ["grpc_method", "grpc_code"],
                registry=registry,
            )
            if side == "server"
            else None
        )
        self._methods: dict[tuple[str, str], MethodMetrics] = {}

    def method(self, full_method: str, grpc_type: GrpcType) -> MethodMetrics:
        key = (full_method, grpc_type)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(self, grpc_type, full_method)
        return found


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def metered(handler: Handler, method: MethodMetrics) -> Handler:
    """``handler`` (a guarded handler of any shape: it writes stream messages through the
    context and returns the unary response) counted as a server call. The guard ends every
    refusal with ``context.abort``, whose code the context keeps; an exception that escapes
    otherwise is what gRPC reports as UNKNOWN."""

    async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = method.started()
        try:
            response = await handler(request, context)
        except (asyncio.CancelledError, GeneratorExit):
            # Cancelled by the caller, its deadline, or a stopping server.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            method.handled(
                grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED,
                started,
            )
            raise
        except BaseException:
            code = context.code()
            method.handled(
                code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, started
            )
            raise
        code = context.code()
        method.handled(code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK, started)
        return response

    return counted
