"""FederationService/GetNodeInfo: what this node is, for any authenticated caller."""

from __future__ import annotations

from typing import Any

from govnode.v1 import federation_pb2

from gateway.identity import Identity
from node.catalog import Catalog
from node.config import NodeConfig
from node.servicers.federation_sync import node_info
from node.storage import Database


class FederationServicer:
    def __init__(
        self, config: NodeConfig, identity: Identity, catalog: Catalog, db: Database
    ) -> None:
        self._config = config
        self._identity = identity
        self._catalog = catalog
        self._db = db

    async def GetNodeInfo(
        self, request: federation_pb2.GetNodeInfoRequest, context: Any
    ) -> federation_pb2.GetNodeInfoResponse:
        info = await node_info(self._config, self._identity, self._catalog, self._db)
        return federation_pb2.GetNodeInfoResponse(node=info)
