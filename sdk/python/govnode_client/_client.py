"""The client object: one mutual-TLS channel to a node and the methods agencies call on it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable, Mapping
from types import TracebackType

import grpc.aio
from govnode.v1 import sharing_pb2

from govnode_client._bundle import Bundle, secure_channel
from govnode_client._calls import BULK_TIMEOUT, Metadata
from govnode_client._services import (
    Access,
    Audit,
    Catalog,
    OpenData,
    Quality,
    Sharing,
    Supervision,
)
from govnode_client._submit import SubmitResult, batches_of, submit


class Client:
    """An agency system's connection to its govnode node.

        async with Client.from_bundle("fzga/", endpoint="node.example:7443") as gn:
            reply = await gn.sharing.verify(resource_code=code, key=key, claimed=claimed)

    Methods are grouped as the node's services: ``sharing``, ``catalog``, ``access``,
    ``audit``, ``quality``, ``open_data``, ``supervision``; :meth:`submit` sends batches of
    records and resends the unacknowledged ones after a reconnect. ``channel`` is the
    underlying ``grpc.aio.Channel``, for anything else.
    """

    def __init__(self, channel: grpc.aio.Channel, endpoint: str = "") -> None:
        self._channel = channel
        self.endpoint = endpoint
        self.sharing = Sharing(self)
        self.catalog = Catalog(self)
        self.access = Access(self)
        self.audit = Audit(self)
        self.quality = Quality(self)
        self.open_data = OpenData(self)
        self.supervision = Supervision(self)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], endpoint: str | None = None) -> Client:
        """A client with the bundle ``govnode agency add --out PATH`` wrote (client.key,
        client.crt, ca.crt); the node at ``endpoint`` (HOST:PORT), else the one the bundle's
        ``endpoint`` file names, else ``$GOVNODE_ENDPOINT``. Call it inside a running event
        loop (grpc.aio binds the channel to it)."""
        bundle = Bundle.read(path, endpoint)
        return cls(secure_channel(bundle), bundle.endpoint)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def submit(
        self,
        batches: Iterable[sharing_pb2.SubmitBatch] | AsyncIterable[sharing_pb2.SubmitBatch],
        *,
        window: int = 8,
        timeout: float | None = BULK_TIMEOUT,
        reconnect_for: float = 60.0,
        metadata: Metadata = (),
    ) -> SubmitResult:
        """Aggregate ``batches`` (汇聚, 第二十一条) into their resources: every batch is sent
        until the node acknowledges it, on a new stream after a reconnect (a batch id the node
        applied before is acknowledged as a duplicate and not applied again)."""
        return await submit(
            self._channel,
            batches,
            window=window,
            timeout=timeout,
            reconnect_for=reconnect_for,
            metadata=metadata,
        )

    async def submit_records(
        self,
        resource_code: str,
        records: Iterable[Mapping[str, str]],
        *,
        batch_size: int = 500,
        batch_prefix: str | None = None,
        window: int = 8,
        reconnect_for: float = 60.0,
    ) -> SubmitResult:
        """:meth:`submit` for plain records: cut into batches ``<batch_prefix>-<n>``."""
        batches = batches_of(
            resource_code, records, batch_size=batch_size, batch_prefix=batch_prefix
        )
        return await self.submit(batches, window=window, reconnect_for=reconnect_for)
