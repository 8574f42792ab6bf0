"""The one place a gRPC server is built and shut down.

Every option is set here, once: message-size limits, keepalive policy, concurrency, health
checking and reflection. Nodes and test fixtures both use :func:`build_server`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from gateway.health import NodeHealth
from gateway.interceptors import GuardInterceptor


@dataclass(frozen=True)
class ServerLimits:
    #: Largest request or response message, in bytes; larger ones get RESOURCE_EXHAUSTED.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Concurrent streams per HTTP/2 connection.
    max_concurrent_streams: int = 256
    #: Ping idle clients every this many ms, and drop them after the timeout.
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    #: Refuse client pings more often than this (protects against ping floods).
    min_ping_interval_ms: int = 10_000
    #: Connections older than this are gracefully cycled, so certificate changes and
    #: revocations are re-checked at the handshake too. After the grace, calls still open are
    #: cut: this also bounds how long a stream the node ended for not being read (its status
    #: queued behind messages the peer never takes) holds its HTTP/2 stream.
    max_connection_age_ms: int = 3_600_000
    max_connection_age_grace_ms: int = 30_000
    #: A connection must finish its TLS handshake within this long, or it is closed (gRPC's own
    #: default, 120 s, lets silent connections hold sockets and memory).
    handshake_timeout_ms: int = 10_000
    #: Connections without any call for this long are closed (clients reconnect on their next
    #: call); a dead peer is found sooner by keepalive (keepalive_time + keepalive_timeout).
    max_connection_idle_ms: int = 900_000
    #: Let other processes listen on the same address (SO_REUSEPORT): several processes of one
    #: node. Off, a second listener on the address fails loudly.
    reuse_port: bool = False


def server_options(limits: ServerLimits) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.keepalive_time_ms", limits.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", limits.keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", limits.min_ping_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_age_ms", limits.max_connection_age_ms),
        ("grpc.max_connection_age_grace_ms", limits.max_connection_age_grace_ms),
        ("grpc.server_handshake_timeout_ms", limits.handshake_timeout_ms),
        ("grpc.max_connection_idle_ms", limits.max_connection_idle_ms),
        # One listening socket per address unless the node's processes share it: a second node
        # on the same port must fail loudly.
        ("grpc.so_reuseport", int(limits.reuse_port)),
    ]


def build_server(guard: GuardInterceptor, limits: ServerLimits) -> grpc.aio.Server:
    return grpc.aio.server(interceptors=[guard], options=server_options(limits))


class HealthReporter:
    """Standard gRPC health checking (grpc.health.v1) for the whole node and each service
    (gateway.health: grpc's, plus an end for the Watch streams when the node stops)."""

    def __init__(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        self._servicer = NodeHealth()
        self._services = ["", *services]
        #: What the node last reported (started, storage writable, stopping); the metrics
        #: listener's /healthz and the console repeat :attr:`serving`.
        self._serving = False
        self._maintenance = False
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)

    @property
    def maintenance(self) -> bool:
        return self._maintenance

    @property
    def serving(self) -> bool:
        """What the node's health says now (False in maintenance mode)."""
        return self._serving and not self._maintenance

    async def set_serving(self, serving: bool) -> None:
        """What the node's state says (started, storage writable, stopping). Maintenance mode
        wins over it: a storage probe that recovers does not end maintenance."""
        self._serving = serving
        await self._publish()

    async def set_maintenance(self, on: bool) -> None:
        """Maintenance mode: NOT_SERVING for peers and load balancers while on, whatever the
        storage says; off restores what :meth:`set_serving` last said. The switch itself is
        kept in the node's database (node.maintenance), which calls this."""
        self._maintenance = on
        await self._publish()

    async def _publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._serving and not self._maintenance
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._services:
            await self._servicer.set(name, status)

    async def stop(self) -> None:
        """NOT_SERVING for good; every Watch stream is told so, then ended (UNAVAILABLE)."""
        await self._servicer.stop()


def infrastructure_services() -> list[ServiceDescriptor]:
    """The services every node serves besides govnode.v1: health checking and reflection."""
    return [
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]


def enable_reflection(server: grpc.aio.Server, services: Sequence[str]) -> None:
    """Server reflection, so grpcurl and any gRPC client can discover the API."""
    names = [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
