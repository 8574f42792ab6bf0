"""Routing sharing calls to the node that owns the resource (第十九条, 第二十六条), and the
AccessService calls on what that node holds (第二十五条: Apply by its resource; an application
or grant by the region its id starts with, :meth:`Router.unary_to`).

The owner of a resource is the region of its catalog entry (other regions' entries arrive by
catalog exchange). A call on a local resource is served here. Otherwise it is forwarded:

- by a city, to the province, unless ``[federation] peers`` has a direct link to the owner;
- by the province, to the owning city (``[federation] peers``, else the endpoint the city gave
  when it joined). A region whose node the province never heard from (a city that never
  joined, a region outside the province) -> NOT_FOUND naming the region: nothing there can be
  found, and retrying would not change that. A city the province heard from (heartbeats, its
  catalog) but cannot dial (admitted by file, not in ``[federation] peers``) -> UNAVAILABLE
  naming it, like a node that does not answer.

The node that first accepts the call signs a caller assertion (gateway.assertion) over the
exact request bytes, with the call's deadline; a node relaying a forwarded call passes the same
assertion on unchanged. Cities do not relay: a forwarded call for another region's resource
reaching a city is refused. The transport (channels, retries, circuit breakers, deadlines) is
gateway.forward's.

Streams: Compare is forwarded like a unary call, with the caller's deadline or the forwarder's
default. Exchange and Subscribe are *open-ended* (:meth:`Router.stream` with ``open_ended``):
they run as long as their consumer reads, so a caller without a deadline is forwarded without
one, and their assertion is valid only for the start (gateway.forward). Resume tokens and
sequences need nothing here: the owner issues and checks them for the original caller.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from govnode.v1 import sharing_pb2

from gateway.assertion import make_assertion
from gateway.auth import current_forwarded, current_peer
from gateway.forward import Forwarder, Metadata
from gateway.identity import Identity
from gateway.interceptors import current_request_id
from node.catalog import ResourceEntry
from node.config import Mode, NodeConfig
from node.errors import FailedPrecondition, NotFound, Unavailable
from node.federation._peers import heard_from
from node.pki import load_certs, load_private_key
from node.records import MAX_COMPARE_RESULTS_PER_MESSAGE, MatchResult, VerifyOutcome
from node.storage import Database

SERVICE = "/govnode.v1.SharingService/"
_RESULTS = {
    sharing_pb2.MATCH_RESULT_MATCH: MatchResult.MATCH,
    sharing_pb2.MATCH_RESULT_MISMATCH: MatchResult.MISMATCH,
    sharing_pb2.MATCH_RESULT_NOT_PRESENT: MatchResult.NOT_PRESENT,
}


class Router:
    def __init__(self, config: NodeConfig, db: Database, forwarder: Forwarder) -> None:
        self._config = config
        self._db = db
        self.forwarder = forwarder
        self._region = config.node.region
        self._key: ec.EllipticCurvePrivateKey = load_private_key(config.path(config.tls.key))
        root = load_certs(config.path(config.tls.root))[0]
        self._chain: list[x509.Certificate] = [
            c for c in load_certs(config.path(config.tls.cert)) if c != root
        ]

    def is_local(self, entry: ResourceEntry) -> bool:
        return not entry.region or entry.region == self._region

    async def endpoint_for(self, region: str) -> tuple[str, str]:
        """Where to send a call on ``region``'s resource: the endpoint and the region of the
        node there (which names it when it is unreachable)."""
        fed = self._config.federation
        if region in fed.peers:
            return fed.peers[region], region
        if self._config.node.mode is Mode.CITY:
            if current_forwarded() is not None:
                raise FailedPrecondition(
                    f"this node ({self._region}) does not own resources of region {region} "
                    "and does not relay forwarded calls"
                )
            assert fed.province_endpoint and fed.province_region, "a city names its province"
            return fed.province_endpoint, fed.province_region
        row = await self._db.fetch_one(
            "SELECT endpoint FROM federation_member WHERE region = :region", {"region": region}
        )
        if row is not None and row[0]:
            return str(row[0]), region
        if not await heard_from(self._db, region):
            raise NotFound(
                f"region {region}: no node serves this region (no node of region {region} has "
                f"joined province {self._region} or is named in its [federation] peers), so "
                "nothing held there can be found"
            )
        raise Unavailable(
            f"region {region} holds what this call names, but this node knows no endpoint for "
            "its node (it has not joined online; configure [federation] peers)"
        )

    def _assertion(
        self, resource_code: str, request: Any, context: Any, *, open_ended: bool = False
    ) -> bytes:
        forwarded = current_forwarded()
        if forwarded is not None:
            return forwarded.assertion  # relayed unchanged; verified on arrival
        seconds = self.forwarder.assertion_validity(context.time_remaining(), open_ended=open_ended)
        return make_assertion(
            caller=current_peer().identity,
            node_key=self._key,
            node_chain=self._chain,
            resource_code=resource_code,
            request_bytes=request.SerializeToString(),
            deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds),
            request_id=current_request_id(),
        )

    async def unary(
        self, entry: ResourceEntry, method: str, request: Any, response_type: Any, context: Any
    ) -> Any:
        """Forward a SharingService call (``method``: "Verify", "Query"), or any routed call
        when ``method`` is a full path ("/govnode.v1.AccessService/Apply")."""
        return await self.unary_to(
            entry.region,
            method if method.startswith("/") else SERVICE + method,
            request,
            response_type,
            context,
            resource_code=entry.resource_code,
        )

    async def unary_to(
        self,
        region: str,
        path: str,
        request: Any,
        response_type: Any,
        context: Any,
        *,
        resource_code: str = "",
        extra_metadata: Metadata = (),
    ) -> Any:
        """Forward a unary call to the node of ``region``, which holds what the request names
        (a resource, or an application or grant by the region its id carries).
        ``extra_metadata``: the caller's metadata the owner needs too (checked here first)."""
        endpoint, node_region = await self.endpoint_for(region)
        return await self.forwarder.unary(
            endpoint,
            node_region,
            path,
            request,
            response_type,
            request_id=current_request_id(),
            assertion=self._assertion(resource_code, request, context),
            remaining=context.time_remaining(),
            extra_metadata=extra_metadata,
        )

    async def stream(
        self,
        entry: ResourceEntry,
        method: str,
        request: Any,
        response_type: Any,
        context: Any,
        *,
        open_ended: bool = False,
    ) -> AsyncIterator[Any]:
        """Forward a SharingService server stream ("Compare"; "Exchange" and "Subscribe" with
        ``open_ended``). Closing this generator cancels the forwarded call."""
        async for item in self.stream_to(
            entry.region,
            SERVICE + method,
            request,
            response_type,
            context,
            resource_code=entry.resource_code,
            open_ended=open_ended,
        ):
            yield item

    async def stream_to(
        self,
        region: str,
        path: str,
        request: Any,
        response_type: Any,
        context: Any,
        *,
        resource_code: str,
        open_ended: bool = False,
        extra_metadata: Metadata = (),
    ) -> AsyncIterator[Any]:
        """Forward a server stream (``path``: its full method) to the node of ``region``."""
        endpoint, node_region = await self.endpoint_for(region)
        async for item in self.forwarder.stream(
            endpoint,
            node_region,
            path,
            request,
            response_type,
            request_id=current_request_id(),
            assertion=self._assertion(resource_code, request, context, open_ended=open_ended),
            remaining=context.time_remaining(),
            open_ended=open_ended,
            extra_metadata=extra_metadata,
        ):
            yield item

    async def quality_compare(
        self,
        caller: Identity,
        source: ResourceEntry,
        for_resource: str,
        records: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]],
        seconds: float,
    ) -> list[tuple[str, VerifyOutcome]]:
        """Compare ``records`` against ``source`` at the node that owns it, as ``caller`` (this
        region's data management authority) taking a quality sample of ``for_resource``
        (node.quality's 一致性; allowed there by node.sharing.check_quality_sample). Made by
        this node itself, not for a call it serves: it signs the caller assertion for
        ``caller``, valid ``seconds``. Failures raise gateway.refusal.Refusal (the forwarder's)
        or the routing's own refusals."""
        request = sharing_pb2.CompareRequest(
            resource_code=source.resource_code,
            records=[
                sharing_pb2.CompareRecord(ref=ref, key=dict(key), claimed=dict(claimed))
                for ref, key, claimed in records
            ],
            quality_sample_for=for_resource,
            results_per_message=MAX_COMPARE_RESULTS_PER_MESSAGE,
        )
        endpoint, node_region = await self.endpoint_for(source.region)
        request_id = os.urandom(16).hex()
        assertion = make_assertion(
            caller=caller,
            node_key=self._key,
            node_chain=self._chain,
            resource_code=source.resource_code,
            request_bytes=request.SerializeToString(),
            deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds),
            request_id=request_id,
        )
        out = []
        async for message in self.forwarder.stream(
            endpoint,
            node_region,
            SERVICE + "Compare",
            request,
            sharing_pb2.CompareResult,
            request_id=request_id,
            assertion=assertion,
            remaining=seconds,
        ):
            # Several results a message; one, from a node that predates results_per_message.
            for result in message.results or (message,):
                matches = tuple(
                    (m.item, _RESULTS.get(m.result, MatchResult.MISMATCH)) for m in result.matches
                )
                out.append((result.ref, VerifyOutcome(found=result.found, matches=matches)))
        return out
