"""The SDK's methods against the wire contract: each one names an RPC of proto/ with its
request and response types and streaming shape, and every RPC an agency may call is in the
SDK or left out on purpose (a new RPC fails this test until it is decided)."""

from __future__ import annotations

from google.protobuf import descriptor_pool
from govnode.v1 import (
    access_pb2,
    audit_pb2,
    catalog_pb2,
    federation_pb2,
    opendata_pb2,
    quality_pb2,
    sharing_pb2,
    supervision_pb2,
    witness_pb2,
)
from govnode_client import BoundPaged, BoundStream, BoundUnary, Client, Method

#: RPCs an agency system does not call through the SDK, and why (sdk/python/README.md).
LEFT_OUT = {
    # node to node
    **dict.fromkeys(
        [
            "FederationService." + m
            for m in (
                "Join",
                "Heartbeat",
                "GetNodeInfo",
                "GetRevocationList",
                "PublishCatalog",
                "GetCatalogSnapshot",
                "ListPeers",
                "DeliverNotifications",
                "PublishSupervisionSummary",
            )
        ]
        + ["CatalogService.WatchCatalog", "WitnessService.AddCheckpoint"]
        + ["WitnessService.GetWitnessed"],
        "nodes",
    ),
    # the data management authority's
    **dict.fromkeys(
        [
            "AccessService.ReviewApplication",
            "AccessService.RevokeGrant",
            "AccessService.ReviewChangeRequest",
            "SupervisionService.IssueRectificationNotice",
            "SupervisionService.GetProvinceSummary",
            "OpenDataService.PublishOpenResource",
            "OpenDataService.UnpublishOpenResource",
            "OpenDataService.ListOpenDatasets",
            "OpenDataService.ReviewOpenApplication",
            "OpenDataService.RevokeOpenKey",
            "OpenDataService.ListUseReports",
        ],
        "authority",
    ),
    # the open data portal's, for the public
    **dict.fromkeys(
        [
            "OpenDataService.ApplyOpenAccess",
            "OpenDataService.GetOpenApplication",
            "OpenDataService.ListOpenApplications",
            "OpenDataService.FileUseReport",
        ],
        "portal",
    ),
    # Submit is Client.submit (the helper), not a method of gn.sharing
    "SharingService.Submit": "helper",
}


def sdk_methods() -> dict[str, tuple[Method, type]]:  # type: ignore[type-arg]
    """ "Service.Method" -> (the SDK's method, its kind), over every group of a client."""
    found: dict[str, tuple[Method, type]] = {}  # type: ignore[type-arg]
    client = Client(channel=None, endpoint="")  # type: ignore[arg-type]  # binding needs none
    for group in vars(client).values():
        for name in dir(group):
            bound = getattr(group, name)
            if isinstance(bound, BoundUnary | BoundStream):
                key = bound.method.path.removeprefix("/govnode.v1.").replace("/", ".")
                found[key] = (bound.method, type(bound))
    return found


def test_each_method_matches_its_rpc() -> None:
    pool = descriptor_pool.Default()
    for name, (method, kind) in sdk_methods().items():
        rpc = pool.FindMethodByName(f"govnode.v1.{name}")
        assert method.request_type.DESCRIPTOR is rpc.input_type, name
        assert method.response_type.DESCRIPTOR is rpc.output_type, name
        assert not rpc.client_streaming, name
        assert rpc.server_streaming == (kind is BoundStream), name
        paged = "page_token" in rpc.input_type.fields_by_name
        # GetComplianceReport pages over one report's findings: read page by page.
        assert paged == (kind is BoundPaged) or name.endswith("GetComplianceReport"), name
        # A write the node applies once (request_id) is retried; any other write is not.
        if method.idempotent:
            assert "request_id" in rpc.input_type.fields_by_name, name


def test_every_rpc_is_in_the_sdk_or_left_out_on_purpose() -> None:
    files = [sharing_pb2, access_pb2, audit_pb2, catalog_pb2, federation_pb2, opendata_pb2]
    files += [quality_pb2, supervision_pb2, witness_pb2]
    rpcs = {
        f"{service.name}.{m.name}"
        for file in files
        for service in file.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    ours = set(sdk_methods())
    assert not ours & set(LEFT_OUT)
    assert ours | set(LEFT_OUT) == rpcs, sorted(rpcs ^ (ours | set(LEFT_OUT)))
