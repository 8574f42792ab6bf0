"""FederationService, catalog exchange: PublishCatalog (city -> province) and Heartbeat.

The wire translation of a feed change (:func:`change_to_proto`, :func:`change_from_proto`)
lives here too: the city's sync task (:mod:`node.clients._catalog_sync`) speaks the same messages.
Replicas must store the owner's entry verbatim (the digest depends on it), so a change carries
the whole entry, node-owned fields included, and comes back field for field.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pydantic
from govnode.v1 import catalog_pb2, common_pb2, federation_pb2

from gateway.auth import current_peer
from gateway.identity import Identity
from gateway.quote import quote
from node.catalog import (
    Catalog,
    CatalogChange,
    ChangeKind,
    ResourceEntry,
    ResourceStatus,
    entry_from_json,
    entry_to_json,
)
from node.config import Mode, NodeConfig
from node.errors import FailedPrecondition, InvalidArgument
from node.federation import CatalogExchange, is_approved, own_approval, record_peer_info
from node.pki import Revocations
from node.servicers.convert import (
    _enum_in,
    entry_from_proto,
    entry_to_proto,
    optional_time,
    time_from_proto,
)
from node.servicers.stopping import until_stopping
from node.storage import Database
from node.version import software_version

#: A catalog snapshot's part holds at most this many bytes of entry JSON; a larger entry has
#: a part of its own, in its structured form.
SNAPSHOT_PART_BYTES = 1024 * 1024

KINDS = {
    ChangeKind.REGISTERED: catalog_pb2.CATALOG_CHANGE_KIND_REGISTERED,
    ChangeKind.UPDATED: catalog_pb2.CATALOG_CHANGE_KIND_UPDATED,
    ChangeKind.WITHDRAWN: catalog_pb2.CATALOG_CHANGE_KIND_WITHDRAWN,
}
_KINDS_IN = {number: kind for kind, number in KINDS.items()}


def replica_entry_to_proto(body: str) -> common_pb2.ResourceEntry:
    """A stored entry, complete (region, version, status and times), as a replica needs it."""
    return entry_to_proto(entry_from_json(body))


def replica_entry_from_proto(wire: common_pb2.ResourceEntry) -> ResourceEntry:
    """An entry from a peer, complete (region, version, status, times): what
    :func:`replica_entry_to_proto` sends and what a feed change carries."""
    if not (wire.HasField("created_at") and wire.HasField("updated_at")):
        raise InvalidArgument(
            f"resource {quote(wire.resource_code)}: a replicated entry needs entry.created_at "
            "and entry.updated_at"
        )
    status = _enum_in("ResourceStatus", wire.status, "entry.status", ResourceStatus)
    return entry_from_proto(wire).model_copy(
        update={
            "region": wire.region,
            "version": wire.version,
            "status": status,
            "created_at": time_from_proto(wire.created_at, "entry.created_at"),
            "updated_at": time_from_proto(wire.updated_at, "entry.updated_at"),
        }
    )


def snapshot_entries(
    part: federation_pb2.CatalogSnapshotPart,
) -> Iterator[tuple[ResourceEntry, str]]:
    """The entries of a catalog snapshot's part, each with the body to store: the owner's
    JSON as sent, or the canonical JSON of a large entry sent in its structured form. Parsed
    one at a time as the caller takes them (CatalogExchange.snapshot_replicas lets each go
    once it is a replica)."""
    for body in part.entries_json:
        try:
            entry = entry_from_json(body)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "the entry"
            raise InvalidArgument(
                f"catalog snapshot: entry {quote(body)} is not a catalog entry: "
                f"{where}: {quote(err['msg'])}"
            ) from None
        yield entry, body
    if part.HasField("large_entry"):
        entry = replica_entry_from_proto(part.large_entry)
        yield entry, entry_to_json(entry)


def change_to_proto(change: CatalogChange) -> catalog_pb2.CatalogChange:
    msg = catalog_pb2.CatalogChange(
        sequence=change.sequence,
        kind=KINDS[change.kind],
        entry=entry_to_proto(change.entry),
        origin_region=change.origin_region,
    )
    msg.at.FromDatetime(change.at.astimezone(dt.UTC))
    return msg


def change_from_proto(msg: catalog_pb2.CatalogChange) -> CatalogChange:
    """A feed change from a peer, the entry complete (region, version, status, times)."""
    kind = _KINDS_IN.get(msg.kind)
    if kind is None:
        raise InvalidArgument(f"kind: {msg.kind} is not a catalog change kind")
    if not msg.HasField("at"):
        raise InvalidArgument(
            f"resource {quote(msg.entry.resource_code)}: a feed change needs at, the time of "
            "the change"
        )
    entry = replica_entry_from_proto(msg.entry)
    return CatalogChange(
        sequence=msg.sequence,
        resource_code=entry.resource_code,
        version=entry.version,
        kind=kind,
        origin_region=msg.origin_region,
        at=time_from_proto(msg.at, "at"),
        entry=entry,
    )


async def node_info(
    config: NodeConfig, identity: Identity, catalog: Catalog, db: Database
) -> federation_pb2.NodeInfo:
    """This node's NodeInfo (GetNodeInfo, heartbeats); a city is an approved sub-platform when
    the province said so on its last heartbeat (第三十一条). Its catalog digest may lag a
    catalog that is changing all the time (Catalog.digest's ``current=False``); the feed's
    last sequence is always read as it stands (the province's lag figures go by it)."""
    digest, _, _ = await catalog.digest(current=False)
    last = await catalog.last_sequence()
    city = config.node.mode is Mode.CITY
    info = federation_pb2.NodeInfo(
        region=config.node.region,
        name=config.node.name,
        mode=(
            federation_pb2.NODE_MODE_PROVINCE
            if config.node.mode is Mode.PROVINCE
            else federation_pb2.NODE_MODE_CITY
        ),
        node_identity=str(identity),
        software_version=software_version(),
        approved_sub_platform=city and await own_approval(db),
        catalog_digest=digest,
        catalog_last_sequence=last,
        listen_address=config.node.listen,
    )
    info.server_time.FromDatetime(dt.datetime.now(dt.UTC))
    return info


class FederationSyncServicer:
    def __init__(
        self,
        config: NodeConfig,
        identity: Identity,
        catalog: Catalog,
        exchange: CatalogExchange,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._config = config
        self._identity = identity
        self._catalog = catalog
        self._exchange = exchange
        self._stopping = stopping if stopping is not None else asyncio.Event()

    async def Heartbeat(
        self, request: federation_pb2.HeartbeatRequest, context: Any
    ) -> federation_pb2.HeartbeatResponse:
        caller = current_peer().identity
        self._exchange.check_peer(caller, "send heartbeats")
        applied = await self._exchange.applied_sequence(caller.region)
        if self._exchange.is_province:
            await self._exchange.touch_member(caller.region)
            if request.HasField("node") and request.node.region == caller.region:
                server_time = optional_time(request.node, "server_time", "node.server_time")
                await record_peer_info(self._exchange.db, caller.region, request.node, server_time)
        return federation_pb2.HeartbeatResponse(
            node=await node_info(self._config, self._identity, self._catalog, self._exchange.db),
            applied_catalog_sequence=applied,
            revocation_last_sequence=await Revocations(self._exchange.db).last_sequence(),
            approved_sub_platform=(
                self._exchange.is_province and await is_approved(self._exchange.db, caller.region)
            ),
        )

    async def PublishCatalog(
        self, request_iterator: AsyncIterator[catalog_pb2.CatalogChange], context: Any
    ) -> federation_pb2.PublishCatalogResponse:
        caller = current_peer().identity
        if not self._exchange.is_province:
            raise FailedPrecondition(
                "PublishCatalog is served by the province node only; this is a city node"
            )
        self._exchange.check_peer(caller, "publish catalog changes")
        last = await self._exchange.applied_sequence(caller.region)
        # Idle between changes: a stopping node ends the stream now (node.servicers.stopping).
        async for msg in until_stopping(request_iterator, self._stopping):
            change = change_from_proto(msg)
            await self._exchange.apply_remote(change, caller)
            last = max(last, change.sequence)
        return federation_pb2.PublishCatalogResponse(last_applied_sequence=last)

    async def GetCatalogSnapshot(
        self, request: federation_pb2.GetCatalogSnapshotRequest, context: Any
    ) -> AsyncIterator[federation_pb2.CatalogSnapshotPart]:
        caller = current_peer().identity
        if not self._exchange.is_province:
            raise FailedPrecondition(
                "GetCatalogSnapshot is served by the province node only; this is a city node"
            )
        self._exchange.check_peer(caller, "read the catalog snapshot")
        as_of = await self._catalog.last_sequence()
        part = federation_pb2.CatalogSnapshotPart(as_of_sequence=as_of)
        size = 0
        async for bodies in self._catalog.snapshot_bodies():
            for body in bodies:
                length = len(body.encode())
                if length > SNAPSHOT_PART_BYTES:
                    yield federation_pb2.CatalogSnapshotPart(
                        as_of_sequence=as_of, large_entry=replica_entry_to_proto(body)
                    )
                    continue
                if size + length > SNAPSHOT_PART_BYTES:
                    yield part
                    part = federation_pb2.CatalogSnapshotPart(as_of_sequence=as_of)
                    size = 0
                part.entries_json.append(body)
                size += length
        yield part
