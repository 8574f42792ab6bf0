"""Conformance testers: the tester's and real agencies' resources and the calls the tester-role
tests make (register, submit, verify, catalog and node info), with refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    federation_pb2,
    federation_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import (
    MaskingKind,
    MaskingRule,
    ResourceEntry,
    ShareMethod,
    ShareType,
)
from node.servicers.convert import entry_to_proto
from tests.support.entries import item
from tests.support.nodes import (
    PROVINCE,
    channel,
    entry_of,
)

METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)

ITEMS = (
    item("tyshxydm", key=True, required=True),
    item("qymc"),
    item("fddbr", masking=MaskingRule(kind=MaskingKind.NAME)),
)

ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司", "fddbr": "王五"}

SHARED: dict[str, Any] = {
    "share_type": ShareType.UNCONDITIONAL,
    "share_methods": METHODS,
    "items": ITEMS,
}

#: An agency's own resource (public security's, 无条件共享) and three probes a tester makes,
#: all naming public security as provider: a probe's provider_code need not be the tester's.
REAL = entry_of(PROVINCE, 1, **SHARED)


async def catalog(node: RunningNode, files: TlsFiles, method: str, request: Any) -> Any:
    async with channel(node, files) as ch:
        return await getattr(catalog_pb2_grpc.CatalogServiceStub(ch), method)(request)


async def sharing(
    node: RunningNode,
    files: TlsFiles,
    method: str,
    request: Any,
    metadata: Sequence[tuple[str, str]] = (),
) -> Any:
    async with channel(node, files) as ch:
        result = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(
            request, metadata=tuple(metadata)
        )
        if method == "Compare":
            return [r async for r in result]
        return await result


async def submit(
    node: RunningNode, files: TlsFiles, code: str, rows: Sequence[dict[str, str]], batch: str = "b1"
) -> list[sharing_pb2.SubmitAck]:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code, batch_id=batch, records=[common_pb2.Record(values=r) for r in rows]
        )

    async with channel(node, files) as ch:
        return [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]


async def node_info(node: RunningNode, files: TlsFiles) -> federation_pb2.NodeInfo:
    async with channel(node, files, timeout=3) as ch:
        reply = await federation_pb2_grpc.FederationServiceStub(ch).GetNodeInfo(
            federation_pb2.GetNodeInfoRequest()
        )
    return reply.node


async def refused(coro: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value


def register(
    entry: ResourceEntry | common_pb2.ResourceEntry,
) -> catalog_pb2.RegisterResourceRequest:
    msg = entry if isinstance(entry, common_pb2.ResourceEntry) else entry_to_proto(entry)
    return catalog_pb2.RegisterResourceRequest(entry=msg)


def verify(code: str, claimed: str = ACME["qymc"]) -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": claimed}
    )
