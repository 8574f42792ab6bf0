"""Budgets per member of the public, kept by the node (node.opendata._budget), over the wire:
two portal processes (two portal certificates, two connections) naming the same member of the
public spend one budget, which is what makes a limit hold however many portal processes there
are; another member of the public, a portal's own calls and agencies are not touched; the
refusal is RESOURCE_EXHAUSTED naming the recipient and the limit, with retry-after-ms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from govnode.v1 import opendata_pb2, opendata_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.config import load_config
from tests.opendata.test_download_api import UNIVERSAL, publish
from tests.support.access import refused
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, make_province, start
from tests.support.oracle import retry_after_ms

A, B = "ip:203.0.113.9", "ip:198.51.100.7"


def limited(setup: ProvinceSetup) -> ProvinceSetup:
    """The province with a budget of 5 requests, one more a minute; a download costs 3."""
    text = setup.config_path.read_text(encoding="utf-8")
    for line, value in (
        ("public_requests_per_minute = 120", "public_requests_per_minute = 1"),
        ("public_burst = 60", "public_burst = 5"),
        ("download_cost = 10", "download_cost = 3"),
    ):
        assert line in text
        text = text.replace(line, value)
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


async def call(
    node: RunningNode, files: TlsFiles, method: str, request: Any, recipient: str = ""
) -> Any:
    metadata = (("govnode-recipient", recipient),) if recipient else ()
    async with channel(node, files) as ch:
        rpc = getattr(opendata_pb2_grpc.OpenDataServiceStub(ch), method)
        if method == "Download":
            return [chunk async for chunk in rpc(request, metadata=metadata)]
        return await rpc(request, metadata=metadata)


LIST = opendata_pb2.ListOpenResourcesRequest()


async def test_portals_naming_one_member_of_the_public_share_one_budget(
    tmp_path: Path, db_url: str
) -> None:
    setup = limited(make_province(tmp_path / "province", db_url))
    node = await start(setup)
    try:
        first, second = setup.portal("opendata-1"), setup.portal("opendata-2")
        agency = setup.agency(PUBLIC_SECURITY)
        await publish(node, setup, UNIVERSAL, 20)
        u = UNIVERSAL.resource_code

        # --- one member of the public through two portals: one budget ------------------------
        for portal in (first, first, second, first, second):
            await call(node, portal, "ListOpenResources", LIST, A)
        for portal in (second, first):
            over = await refused(call(node, portal, "ListOpenResources", LIST, A))
            assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            details = over.details() or ""
            assert "'ip:203.0.113.9'" in details and "1 requests a minute, bursts of 5" in details
            waited = retry_after_ms(over)
            assert waited is not None and 30_000 < int(waited) <= 60_000
        # Every open call spends from it, the 授权开放 applicant's too.
        application = opendata_pb2.GetOpenApplicationRequest(id="350000-OA-00")
        over = await refused(call(node, second, "GetOpenApplication", application, A))
        assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        # --- another member of the public is untouched; a download costs 3 -------------------
        download = opendata_pb2.DownloadRequest(resource_code=u, format="csv")
        assert (await call(node, second, "Download", download, B))[0].sha256
        one = opendata_pb2.GetOpenResourceRequest(resource_code=u)
        await call(node, first, "GetOpenResource", one, B)
        document = opendata_pb2.GetOpenCatalogDocumentRequest(format="ttl")
        await call(node, second, "GetOpenCatalogDocument", document, B)
        rows = opendata_pb2.QueryOpenRowsRequest(resource_code=u)
        over = await refused(call(node, first, "QueryOpenRows", rows, B))
        assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await call(node, first, "Download", download, "ip:192.0.2.1"))[0].size

        # --- a call naming nobody spends the portal's own budget, each portal its own ---------
        for _ in range(5):
            await call(node, first, "ListOpenResources", LIST)
        over = await refused(call(node, first, "ListOpenResources", LIST))
        assert over.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "portal/opendata-1" in (over.details() or "")
        await call(node, second, "ListOpenResources", LIST)

        # --- agencies have no such budget -----------------------------------------------------
        for _ in range(10):
            await call(node, agency, "ListOpenResources", LIST, A)
    finally:
        await node.stop(grace=0)
