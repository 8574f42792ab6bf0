"""CatalogService (登记, 第十七-十八条): protobuf in, domain call, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from govnode.v1 import catalog_pb2, common_pb2

from gateway.auth import current_peer
from gateway.identity import Role
from gateway.interceptors import add_audit_detail
from node.catalog import PAGE_BYTES, Catalog, ChangeKind, Classification, ResourceEntry, ShareType
from node.errors import InvalidArgument, PermissionDenied
from node.governance import ChangeRequests
from node.servicers.convert import _enum_in, entry_from_proto, entry_to_proto
from node.servicers.stopping import wait_or_stop

_KINDS = {
    ChangeKind.REGISTERED: catalog_pb2.CATALOG_CHANGE_KIND_REGISTERED,
    ChangeKind.UPDATED: catalog_pb2.CATALOG_CHANGE_KIND_UPDATED,
    ChangeKind.WITHDRAWN: catalog_pb2.CATALOG_CHANGE_KIND_WITHDRAWN,
}

#: How often an idle WatchCatalog stream looks for changes written by other processes.
WATCH_POLL_SECONDS = 0.5


def _entry(msg: common_pb2.ResourceEntry) -> ResourceEntry:
    try:
        return entry_from_proto(msg)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidArgument(f"entry.{loc}: {err['msg']}") from None


class CatalogServicer:
    """``changes`` turns UpdateResource and WithdrawResource into change requests for the
    authority (第四十一条), except on probe entries."""

    def __init__(
        self,
        catalog: Catalog,
        changes: ChangeRequests,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._catalog = catalog
        self._changes = changes
        self._stopping = stopping if stopping is not None else asyncio.Event()

    async def RegisterResource(
        self, request: catalog_pb2.RegisterResourceRequest, context: Any
    ) -> catalog_pb2.RegisterResourceResponse:
        entry = await self._catalog.register(
            current_peer().identity, _entry(request.entry), request.request_id
        )
        return catalog_pb2.RegisterResourceResponse(entry=entry_to_proto(entry))

    async def UpdateResource(
        self, request: catalog_pb2.UpdateResourceRequest, context: Any
    ) -> catalog_pb2.UpdateResourceResponse:
        entry, change = await self._changes.update_entry(
            current_peer().identity,
            _entry(request.entry),
            expected_version=request.expected_version,
            reason=request.reason,
            request_id=request.request_id,
        )
        if change is not None:
            add_audit_detail(change_request=change.id)
        return catalog_pb2.UpdateResourceResponse(
            entry=entry_to_proto(entry), change_request_id=change.id if change else ""
        )

    async def GetResource(
        self, request: catalog_pb2.GetResourceRequest, context: Any
    ) -> catalog_pb2.GetResourceResponse:
        entry = await self._catalog.get(request.resource_code, request.version)
        return catalog_pb2.GetResourceResponse(entry=entry_to_proto(entry))

    async def ListResources(
        self, request: catalog_pb2.ListResourcesRequest, context: Any
    ) -> catalog_pb2.ListResourcesResponse:
        classification = (
            _enum_in("Classification", request.classification, "classification", Classification)
            if request.classification
            else None
        )
        share_type = (
            _enum_in("ShareType", request.share_type, "share_type", ShareType)
            if request.share_type
            else None
        )
        entries, token = await self._catalog.list(
            provider_code=request.provider_code or None,
            region=request.region or None,
            classification=classification,
            share_type=share_type,
            industry_category=request.industry_category or None,
            include_withdrawn=request.include_withdrawn,
            page_size=request.page_size,
            page_token=request.page_token,
            max_bytes=PAGE_BYTES,  # the page must fit in a message
        )
        return catalog_pb2.ListResourcesResponse(
            entries=[entry_to_proto(e) for e in entries], next_page_token=token
        )

    async def GetResourceHistory(
        self, request: catalog_pb2.GetResourceHistoryRequest, context: Any
    ) -> catalog_pb2.GetResourceHistoryResponse:
        versions = await self._catalog.history(request.resource_code)
        return catalog_pb2.GetResourceHistoryResponse(
            versions=[entry_to_proto(e) for e in versions]
        )

    async def WithdrawResource(
        self, request: catalog_pb2.WithdrawResourceRequest, context: Any
    ) -> catalog_pb2.WithdrawResourceResponse:
        entry, change = await self._changes.withdraw_entry(
            current_peer().identity,
            request.resource_code,
            reason=request.reason,
            request_id=request.request_id,
        )
        if change is not None:
            add_audit_detail(change_request=change.id)
        return catalog_pb2.WithdrawResourceResponse(
            entry=entry_to_proto(entry), change_request_id=change.id if change else ""
        )

    async def GetCatalogDigest(
        self, request: catalog_pb2.GetCatalogDigestRequest, context: Any
    ) -> catalog_pb2.GetCatalogDigestResponse:
        digest, count, last = await self._catalog.digest()
        return catalog_pb2.GetCatalogDigestResponse(
            digest=digest, entries=count, last_sequence=last
        )

    async def WatchCatalog(
        self, request: catalog_pb2.WatchCatalogRequest, context: Any
    ) -> AsyncIterator[catalog_pb2.CatalogChange]:
        """The ordered change feed for other nodes: backlog first, then changes as they land."""
        caller = current_peer().identity
        if caller.role is not Role.NODE:
            raise PermissionDenied(
                f"{caller} may not watch the catalog feed: it is for govnode nodes only"
            )
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must be 0 or a sequence already received")
        after = request.after_sequence
        while True:
            waiter = self._catalog.changed()
            changes, scanned = await self._catalog.changes_of(
                request.origin_region or None, after, limit=500
            )
            for change in changes:
                msg = catalog_pb2.CatalogChange(
                    sequence=change.sequence,
                    kind=_KINDS[change.kind],
                    entry=entry_to_proto(change.entry),
                    origin_region=change.origin_region,
                )
                msg.at.FromDatetime(change.at)
                yield msg
            if scanned == after:
                # Idle: a stopping node ends the stream now (UNAVAILABLE, node.servicers.stopping).
                await wait_or_stop(waiter, self._stopping, within_s=WATCH_POLL_SECONDS)
            after = scanned
