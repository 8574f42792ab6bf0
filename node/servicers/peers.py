"""FederationService: GetRevocationList and ListPeers (node callers only).

GetRevocationList serves every revocation this node knows, in its sequence order, and the
signed CRL of this node's own region CA (``tls.ca_cert``/``tls.ca_key``) for standard tooling.
ListPeers answers `govnode status`: on the province its member cities, on a city its province.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from govnode.v1 import federation_pb2

from gateway.auth import current_peer
from gateway.identity import Role
from node import paging
from node.config import Mode, NodeConfig
from node.errors import InvalidArgument, PermissionDenied
from node.federation import CatalogExchange, ProvinceLink, province_peers
from node.pki import Revocation, Revocations, create_crl, reason_to_rfc, region_ca
from node.storage import Database

MAX_PAGE = 100
REGION_TOKEN = re.compile(r"[0-9]{6}")


def _require_node(action: str) -> None:
    caller = current_peer().identity
    if caller.role is not Role.NODE:
        raise PermissionDenied(f"{caller} may not {action}: govnode nodes only")


def revocation_to_proto(r: Revocation) -> federation_pb2.RevokedCertificate:
    msg = federation_pb2.RevokedCertificate(
        serial=r.serial_hex,
        issuer_region=r.issuer_region,
        reason=reason_to_rfc(r.reason),
        sequence=r.sequence or 0,
    )
    msg.revoked_at.FromDatetime(r.revoked_at.astimezone(dt.UTC))
    return msg


class PeersServicer:
    def __init__(
        self,
        config: NodeConfig,
        db: Database,
        exchange: CatalogExchange,
        link: ProvinceLink | None = None,
    ) -> None:
        self._config = config
        self._db = db
        self._exchange = exchange
        self._revocations = Revocations(db)
        self._link = link

    async def GetRevocationList(
        self, request: federation_pb2.GetRevocationListRequest, context: Any
    ) -> federation_pb2.GetRevocationListResponse:
        _require_node("fetch the revocation list")
        if request.after_sequence < 0:
            raise InvalidArgument(
                f"after_sequence: must be 0 or more, got {request.after_sequence}"
            )
        revoked, last = await self._revocations.after(request.after_sequence)
        region = self._config.node.region
        ca = region_ca(self._config)
        own = await self._revocations.of_issuer(region)
        crl = create_crl(ca, [(int(r.serial_hex, 16), r.revoked_at, r.reason) for r in own])
        return federation_pb2.GetRevocationListResponse(
            revocation_list=federation_pb2.RevocationList(
                revoked=[revocation_to_proto(r) for r in revoked],
                last_sequence=last,
                crls_der=[crl.public_bytes(serialization.Encoding.DER)],
            )
        )

    async def ListPeers(
        self, request: federation_pb2.ListPeersRequest, context: Any
    ) -> federation_pb2.ListPeersResponse:
        _require_node("list this node's peers")
        size = paging.page_size(request.page_size, default=MAX_PAGE, maximum=MAX_PAGE)
        # The token is the region of the last peer served.
        if request.page_token and not REGION_TOKEN.fullmatch(request.page_token):
            raise InvalidArgument("page_token: not a token from this list; omit it to start")
        if self._config.node.mode is Mode.PROVINCE:
            peers = await province_peers(
                self._db,
                self._config.federation.heartbeat_seconds,
                after_region=request.page_token,
                limit=size + 1,
            )
            more = len(peers) > size
            peers = peers[:size]
            return federation_pb2.ListPeersResponse(
                peers=peers, next_page_token=peers[-1].node.region if more else ""
            )
        if request.page_token:
            return federation_pb2.ListPeersResponse()
        return federation_pb2.ListPeersResponse(peers=[await self._province_peer()])

    async def _province_peer(self) -> federation_pb2.Peer:
        fed = self._config.federation
        assert fed.province_region and fed.province_endpoint
        link = self._link or ProvinceLink()
        info = federation_pb2.NodeInfo()
        if link.info is not None:
            info.CopyFrom(link.info)
        info.region = info.region or fed.province_region
        info.listen_address = info.listen_address or fed.province_endpoint
        info.mode = federation_pb2.NODE_MODE_PROVINCE
        peer = federation_pb2.Peer(
            node=info,
            health=link.health,
            applied_catalog_sequence=await self._exchange.applied_sequence(fed.province_region),
            last_error=link.last_error,
            clock_skew_ms=link.clock_skew_ms,
        )
        if link.last_seen is not None:
            peer.last_seen.FromDatetime(link.last_seen)
        if link.next_attempt_at is not None and link.failures:
            peer.next_attempt_at.FromDatetime(link.next_attempt_at)
        return peer
