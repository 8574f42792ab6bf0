"""FederationService: node information now; joining and sync arrive with federation."""

from __future__ import annotations

import datetime as dt
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from govnode.v1 import federation_pb2

from gateway.identity import Identity
from node.catalog import Catalog
from node.config import Mode, NodeConfig


def _software_version() -> str:
    try:
        return version("govnode")
    except PackageNotFoundError:
        return "unknown"


class FederationServicer:
    def __init__(self, config: NodeConfig, identity: Identity, catalog: Catalog) -> None:
        self._config = config
        self._identity = identity
        self._catalog = catalog
        self._version = _software_version()

    async def GetNodeInfo(
        self, request: federation_pb2.GetNodeInfoRequest, context: Any
    ) -> federation_pb2.GetNodeInfoResponse:
        digest, _, last = await self._catalog.digest()
        info = federation_pb2.NodeInfo(
            region=self._config.node.region,
            name=self._config.node.name,
            mode=(
                federation_pb2.NODE_MODE_PROVINCE
                if self._config.node.mode is Mode.PROVINCE
                else federation_pb2.NODE_MODE_CITY
            ),
            node_identity=str(self._identity),
            software_version=self._version,
            approved_sub_platform=False,
            catalog_digest=digest,
            catalog_last_sequence=last,
            listen_address=self._config.node.listen,
        )
        info.server_time.FromDatetime(dt.datetime.now(dt.UTC))
        return federation_pb2.GetNodeInfoResponse(node=info)
