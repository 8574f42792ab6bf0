"""The city's side of catalog exchange: a background task that keeps the catalog in step with
the province over one mutual-TLS channel (the province never needs to reach a city).

- **up**: asks the province (Heartbeat) how far it has applied this city's feed, then streams
  the city's own changes after that point (PublishCatalog) and keeps streaming new ones as
  they commit: woken by the catalog's in-process notification, with a short poll for changes
  other processes of this node make.
- **down**: follows the province's feed (WatchCatalog) from the sequence last applied here
  (``feed_cursor``), applying every change not owned by this city. With nothing of the feed
  applied yet, it first takes the province's catalog as it stands (GetCatalogSnapshot) and
  follows the feed from the sequence the snapshot was taken at.

A heartbeat every ``federation.heartbeat_seconds`` keeps the province's last_seen_at of this
city fresh, records how the province answered (:class:`node.federation.ProvinceLink`, for
ListPeers) and catches up on the province's revocations: when the province's
``revocation_last_sequence`` is ahead of this city's cursor, GetRevocationList fetches the rest
and each one is applied once (:meth:`Revocations.apply_remote`). Either loop
reconnects with jittered exponential backoff (capped) when the province is
unreachable or a stream breaks; errors are logged, never raised into the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import structlog
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, federation_pb2, federation_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Identity, Role, make_identity
from gateway.tls import TlsFiles
from node.catalog import Catalog, CatalogChange, Replica
from node.clients._snapshot_parts import PROCESS_AFTER, Parsed, PartParser
from node.config import NodeConfig
from node.errors import DomainError, InvalidArgument, StorageUnavailable
from node.federation import CatalogExchange, ProvinceLink, set_own_approval, skew_ms
from node.pki import Revocation, Revocations, reason_from_rfc
from node.servicers.convert import optional_time, time_from_proto
from node.servicers.federation_sync import (
    change_from_proto,
    change_to_proto,
    node_info,
    snapshot_entries,
)

log = structlog.get_logger("govnode.catalog_sync")

#: How long the snapshot's reader waits for a parsing process it has just started (0: never,
#: the city parses meanwhile; tests wait, to send a small snapshot through the process).
PROCESS_WAIT_S = 0.0

#: A snapshot part read, and where its replicas come from: the parsing process (an awaitable),
#: or None (parsed here when it is applied).
_Part = tuple[federation_pb2.CatalogSnapshotPart, "asyncio.Future[Parsed] | None"]

#: How often the up loop looks for own changes committed by other processes of this node.
POLL_SECONDS = 0.5
#: Changes of the province's feed applied in one transaction, at most (and read ahead).
APPLY_BATCH = 500
#: Snapshot parts read ahead of the one being applied (each at most 1 MiB of entries).
SNAPSHOT_READ_AHEAD = 8
#: A snapshot is stored at most this many entries, or characters of their JSON, a transaction.
SNAPSHOT_BATCH = 2000
SNAPSHOT_BATCH_CHARS = 8 * 1024 * 1024
#: Backoff between reconnection attempts: first delay, cap (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
#: Default of how often the city tells the province it is alive (federation.heartbeat_seconds).
HEARTBEAT_SECONDS = 5.0
#: Streams are re-established at least this often (seconds), resuming where they were.
STREAM_SECONDS = 3600.0
#: grpc's own reconnection backoff, kept short so a restarted province is found quickly.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class Backoff:
    """Jittered exponential backoff: each delay is drawn from [d/2, d], d doubling to a cap."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return random.uniform(delay / 2, delay)


class CitySync:
    """Runs the up and down loops of a city node until :meth:`stop`."""

    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        tls: TlsFiles,
        catalog: Catalog,
        exchange: CatalogExchange,
        link: ProvinceLink | None = None,
    ) -> None:
        fed = config.federation
        assert fed.province_endpoint and fed.province_region, "a city config names its province"
        self._config = config
        self._identity = identity
        self._tls = tls
        self._catalog = catalog
        self._exchange = exchange
        self._revocations = Revocations(exchange.db)
        self.link = link if link is not None else ProvinceLink()
        self._heartbeat_seconds = fed.heartbeat_seconds
        self._endpoint = fed.province_endpoint
        self._province = make_identity(fed.province_region, config.node.trust_domain, Role.NODE)
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._log = log.bind(region=config.node.region, province=self._endpoint)

    def start(self) -> None:
        self._channel = secure_channel(
            self._endpoint,
            self._tls,
            timeout=5.0,
            streaming_timeout=STREAM_SECONDS,
            extra_options=_CHANNEL_OPTIONS,
        )
        self._tasks = [
            asyncio.create_task(self._forever("up", self._up), name="catalog_sync.up"),
            asyncio.create_task(self._forever("down", self._down), name="catalog_sync.down"),
            asyncio.create_task(self._heartbeats(), name="catalog_sync.heartbeat"),
        ]
        self._log.info("catalog_sync_started")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
        self._log.info("catalog_sync_stopped")

    async def _forever(
        self, loop: str, once: Callable[[grpc.aio.Channel, Backoff], Awaitable[None]]
    ) -> None:
        backoff = Backoff()
        while True:
            assert self._channel is not None
            try:
                await once(self._channel, backoff)
                self._log.info("catalog_sync_stream_ended", loop=loop)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self._log.warning(
                    "catalog_sync_disconnected",
                    loop=loop,
                    code=exc.code().name,
                    details=exc.details(),
                )
            except StorageUnavailable as exc:  # this node's database; retried with backoff
                self._log.warning("catalog_sync_storage_unavailable", loop=loop, error=exc.cause)
            except DomainError as exc:
                self._log.error("catalog_sync_refused_change", loop=loop, error=exc.message)
            except Exception:
                self._log.exception("catalog_sync_failed", loop=loop)
            await asyncio.sleep(backoff.next_delay())

    async def _heartbeats(self) -> None:
        backoff = Backoff(first=min(1.0, self._heartbeat_seconds), cap=self._heartbeat_seconds)
        while True:
            assert self._channel is not None
            stub = federation_pb2_grpc.FederationServiceStub(self._channel)
            delay = self._heartbeat_seconds
            try:
                await self._beat(stub)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                delay = backoff.next_delay()
                self.link.failed(f"{exc.code().name}: {exc.details()}", delay)
                self._log.info("catalog_sync_heartbeat_failed", code=exc.code().name)
            except Exception as exc:
                delay = backoff.next_delay()
                self.link.failed(f"{type(exc).__name__}: {exc}", delay)
                self._log.exception("catalog_sync_heartbeat_error")
            await asyncio.sleep(delay)

    async def _beat(self, stub: federation_pb2_grpc.FederationServiceAsyncStub) -> None:
        info = await node_info(self._config, self._identity, self._catalog, self._exchange.db)
        beat = await stub.Heartbeat(federation_pb2.HeartbeatRequest(node=info))
        server_time = optional_time(beat.node, "server_time", "Heartbeat: node.server_time")
        self.link.succeeded(beat.node, skew_ms(server_time))
        if beat.approved_sub_platform != info.approved_sub_platform:
            await set_own_approval(self._exchange.db, beat.approved_sub_platform)
            self._log.info("sub_platform_approval", approved=beat.approved_sub_platform)
        await self._catch_up_revocations(stub, beat.revocation_last_sequence)

    async def _catch_up_revocations(
        self, stub: federation_pb2_grpc.FederationServiceAsyncStub, target: int
    ) -> None:
        """Fetch and apply the province's revocations after this city's cursor, up to
        ``target`` (the province's last); each page in one transaction with the cursor."""
        province = self._province.region
        after = await self._revocations.cursor(province)
        while after < target:
            reply = await stub.GetRevocationList(
                federation_pb2.GetRevocationListRequest(after_sequence=after)
            )
            page = reply.revocation_list
            revoked = [
                Revocation(
                    serial_hex=r.serial,
                    identity="",
                    issuer_region=r.issuer_region,
                    reason=reason_from_rfc(r.reason),
                    revoked_at=time_from_proto(r.revoked_at, "revoked_at"),
                    revoked_by=str(self._province),
                    sequence=r.sequence,
                )
                for r in page.revoked
                if r.sequence > after
            ]
            applied = await self._revocations.apply_remote(province, revoked, page.last_sequence)
            if applied:
                self._log.info(
                    "revocations_applied", count=applied, last_sequence=page.last_sequence
                )
            if page.last_sequence <= after:
                break
            after = page.last_sequence

    # --- up: this city's changes to the province ------------------------------------------

    async def _up(self, channel: grpc.aio.Channel, backoff: Backoff) -> None:
        stub = federation_pb2_grpc.FederationServiceStub(channel)
        info = await node_info(self._config, self._identity, self._catalog, self._exchange.db)
        beat = await stub.Heartbeat(federation_pb2.HeartbeatRequest(node=info))
        after = beat.applied_catalog_sequence
        backoff.reset()
        self._log.info("catalog_publish_resumed", after_sequence=after)
        reply = await stub.PublishCatalog(self._own_changes(after))
        self._log.info("catalog_publish_acked", last_applied=reply.last_applied_sequence)

    async def _own_changes(self, after: int) -> AsyncIterator[catalog_pb2.CatalogChange]:
        region = self._catalog.region
        while True:
            waiter = self._catalog.changed()
            changes, scanned = await self._catalog.changes_of(region, after, limit=500)
            for change in changes:
                yield change_to_proto(change)
            if scanned == after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), POLL_SECONDS)
            after = scanned

    # --- down: the province-wide catalog from the province --------------------------------

    async def _snapshot(self, channel: grpc.aio.Channel, backoff: Backoff) -> int:
        """Take in the province's catalog as it stands (GetCatalogSnapshot), for a city that
        has applied none of its feed; returns the feed sequence to follow on from. 0 when the
        province serves no snapshot (a version without it): its feed is then replayed from
        its first change, as before.

        The parts are read by a task of their own; each batch's entries are parsed while the
        batch before them is being stored (CatalogExchange.apply_snapshot): past
        ``PROCESS_AFTER`` entries, by a process of its own (node.clients._snapshot_parts)."""
        stub = federation_pb2_grpc.FederationServiceStub(channel)
        call = stub.GetCatalogSnapshot(federation_pb2.GetCatalogSnapshotRequest())
        queue: asyncio.Queue[_Part | BaseException | None] = asyncio.Queue(SNAPSHOT_READ_AHEAD)
        parser = PartParser(
            self._exchange.region, self._province, after=PROCESS_AFTER, wait_s=PROCESS_WAIT_S
        )

        async def read() -> None:
            try:
                async for part in call:
                    await queue.put((part, await parser.submit(part)))
            except Exception as error:
                await queue.put(error)
            else:
                await queue.put(None)

        reader = asyncio.create_task(read(), name="govnode.catalog_snapshot.read")
        as_of: int | None = None
        stored = 0
        storing: asyncio.Task[int] | None = None
        try:
            while True:
                batch: list[Replica] = []
                size = 0
                refused: Exception | None = None
                item = await queue.get()
                while isinstance(item, tuple):
                    part, parsing = item
                    if as_of is None:
                        as_of = part.as_of_sequence
                    elif part.as_of_sequence != as_of:
                        raise InvalidArgument(
                            f"catalog snapshot: as_of_sequence changed from {as_of} to "
                            f"{part.as_of_sequence} within one snapshot"
                        )
                    replicas, refused = (
                        self._exchange.snapshot_replicas(snapshot_entries(part), self._province)
                        if parsing is None
                        else await _parsed(parsing, parser)
                    )
                    batch.extend(replicas)
                    size += sum(len(r.body) for r in replicas)
                    if refused is not None:  # what passed before it is stored, then it is raised
                        break
                    if len(batch) >= SNAPSHOT_BATCH or size >= SNAPSHOT_BATCH_CHARS:
                        break
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                if storing is not None:
                    stored += await storing
                    storing = None
                if batch:
                    backoff.reset()
                    storing = asyncio.create_task(
                        self._exchange.apply_snapshot(batch, self._province)
                    )
                if refused is not None:
                    if storing is not None:
                        stored += await storing
                        storing = None
                    raise refused
                if isinstance(item, grpc.aio.AioRpcError) and (
                    item.code() is grpc.StatusCode.UNIMPLEMENTED
                ):
                    self._log.info("catalog_snapshot_not_served")
                    return 0
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    break
            if storing is not None:
                stored += await storing
                storing = None
        finally:
            if storing is not None:
                storing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await storing
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            while not queue.empty():  # parts read ahead, their parsing no longer wanted
                if isinstance(left := queue.get_nowait(), tuple) and left[1] is not None:
                    left[1].cancel()
            parser.close()
        if as_of is None:
            raise InvalidArgument("catalog snapshot: the province sent no part")
        await self._exchange.finish_snapshot(self._province, as_of)
        self._log.info("catalog_snapshot_taken", as_of_sequence=as_of, stored=stored)
        return as_of

    async def _down(self, channel: grpc.aio.Channel, backoff: Backoff) -> None:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        after = await self._exchange.applied_sequence(self._province.region)
        if after == 0:
            after = await self._snapshot(channel, backoff)
        self._log.info("catalog_watch_resumed", after_sequence=after)
        call = stub.WatchCatalog(catalog_pb2.WatchCatalogRequest(after_sequence=after))
        # The stream is read by a task of its own while the changes already read are applied,
        # up to APPLY_BATCH in one transaction (CatalogExchange.apply_remote_many): a city
        # joining a province of 100,000 entries commits a few hundred times, not 100,000.
        queue: asyncio.Queue[CatalogChange | BaseException | None] = asyncio.Queue(APPLY_BATCH)

        async def read() -> None:
            try:
                async for msg in call:
                    await queue.put(change_from_proto(msg))
            except Exception as error:  # raised by the applier, after what came before it
                await queue.put(error)
            else:
                await queue.put(None)

        reader = asyncio.create_task(read(), name="govnode.catalog_watch.read")
        try:
            while True:
                item = await queue.get()
                batch: list[CatalogChange] = []
                while isinstance(item, CatalogChange):
                    batch.append(item)
                    if len(batch) >= APPLY_BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    backoff.reset()
                    await self._exchange.apply_remote_many(batch, self._province)
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def _parsed(parsing: asyncio.Future[Parsed], parser: PartParser) -> Parsed:
    """A part's replicas from the parsing process; if the process broke, the parser parses here
    from then on and the error is raised (the snapshot is then taken again from its start)."""
    try:
        return await parsing
    except DomainError:
        raise  # a part the city refuses, as if parsed here
    except Exception as error:
        parser.broke(error)
        raise
