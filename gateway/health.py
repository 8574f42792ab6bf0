"""The standard gRPC health service (grpc.health.v1) of a node, with an end.

grpc's own asyncio servicer (``grpc_health.v1.health.aio``) keeps every Watch stream open
until the server ends it: a stopping node reported NOT_SERVING (so that load balancers drain
it), then waited its whole grace period for the load balancers' watches. This is the same
service, Check and Watch answered as grpc's answers them (List is not served, as by grpc's),
plus :meth:`NodeHealth.stop`: every status turns NOT_SERVING, every watcher is sent it, and
its stream then ends with UNAVAILABLE. A Watch that starts after that gets NOT_SERVING and
ends the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.quote import quote
from gateway.refusal import Refusal

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

STOPPING_MESSAGE = "this node is stopping; watch again once it is back"


class NodeHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Statuses per service name ("" for the whole node), SERVING for "" until set."""

    def __init__(self) -> None:
        self._status: dict[str, Any] = {"": SERVING}
        self._changed = asyncio.Condition()
        self._stopping = False

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"no service {quote(request.service)}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        """The service's status now and on every change (SERVICE_UNKNOWN for a name the node
        does not serve, which may come to be served), until the node stops."""
        service = request.service
        sent = None
        while True:
            async with self._changed:
                while not self._stopping and self._status.get(service, SERVICE_UNKNOWN) == sent:
                    await self._changed.wait()
                status = self._status.get(service, SERVICE_UNKNOWN)
                stopping = self._stopping
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if stopping:
                raise Refusal(grpc.StatusCode.UNAVAILABLE, STOPPING_MESSAGE)

    async def set(self, service: str, status: Any) -> None:
        """Set ``service``'s status (ignored once stopping: it stays NOT_SERVING)."""
        async with self._changed:
            if self._stopping:
                return
            self._status[service] = status
            self._changed.notify_all()

    async def stop(self) -> None:
        """Every status NOT_SERVING for good, and every Watch stream ended after saying so."""
        async with self._changed:
            self._stopping = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._changed.notify_all()
