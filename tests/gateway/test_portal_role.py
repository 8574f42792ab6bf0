"""The open data portal's identity (开放平台, 第三十条): `govnode certs issue-portal` writes a
bundle whose identity is .../portal/NAME; the node authenticates it like any caller, lets it
call only the open data RPCs the public uses (and health checking) and refuses it everything
else with PERMISSION_DENIED naming the role; revoked, it is refused like any certificate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, opendata_pb2, opendata_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.identity import Role, identity_of, make_identity
from gateway.roles import method_refusal
from gateway.tls import TlsFiles
from node.pki import ProvisionError, issue_portal, load_certs
from node.servicers.convert import entry_to_proto
from tests.support.access import refused
from tests.support.cli import assert_one_line_error, govnode
from tests.support.nodes import PROVINCE, channel, entry_of, make_province, start

PORTAL = "spiffe://350000.fujian.gov.cn/portal/opendata-1"


def test_a_portal_may_call_only_the_public_open_data_methods() -> None:
    portal = make_identity(PROVINCE, "fujian.gov.cn", Role.PORTAL, "opendata-1")
    agency = make_identity(PROVINCE, "fujian.gov.cn", Role.AGENCY, "11350000003591001X")
    for method in ("ListOpenResources", "Download", "QueryOpenRows"):
        assert method_refusal(portal, f"/govnode.v1.OpenDataService/{method}") is None
    assert method_refusal(portal, "/grpc.health.v1.Health/Check") is None
    refusal = method_refusal(portal, "/govnode.v1.OpenDataService/PublishOpenResource")
    assert refusal is not None and "portal role" in refusal and "Download" in refusal
    assert method_refusal(portal, "/grpc.reflection.v1.ServerReflection/X") is not None
    assert method_refusal(agency, "/govnode.v1.CatalogService/RegisterResource") is None


async def test_a_portal_is_authenticated_confined_to_its_methods_and_revocable(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    out = tmp_path / "portal"
    issued = await asyncio.to_thread(
        govnode,
        "certs", "issue-portal", "--config", setup.config_path, "--name", "opendata-1",
        "--out", out,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    assert PORTAL in issued.stdout
    assert str(identity_of(load_certs(out / "client.crt")[0])) == PORTAL
    files = TlsFiles(out / "client.key", out / "client.crt", out / "ca.crt")
    node = await start(setup)
    try:
        async with channel(node, files) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            listed = await opendata_pb2_grpc.OpenDataServiceStub(ch).ListOpenResources(
                opendata_pb2.ListOpenResourcesRequest()
            )
            assert list(listed.resources) == []
            entry = entry_of(PROVINCE, 1)
            denied = await refused(
                catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                    catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
                )
            )
            assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
            details = denied.details() or ""
            assert PORTAL in details and "portal role" in details
            assert "RegisterResource" in details
            publish = await refused(
                opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
                    opendata_pb2.PublishOpenResourceRequest(resource_code=entry.resource_code)
                )
            )
            assert publish.code() is grpc.StatusCode.PERMISSION_DENIED
        rows = await node.db.fetch_all(
            "SELECT method, outcome FROM audit_record WHERE caller = :c ORDER BY sequence",
            {"c": PORTAL},
        )
        assert ("/govnode.v1.CatalogService/RegisterResource", "PERMISSION_DENIED") in [
            (str(m), str(o)) for m, o in rows
        ]

        revoked = await asyncio.to_thread(
            govnode, "certs", "revoke", "--config", setup.config_path, "--cert", out / "client.crt"
        )
        assert revoked.returncode == 0, revoked.stderr
        async with channel(node, files) as ch:
            gone = await refused(
                opendata_pb2_grpc.OpenDataServiceStub(ch).ListOpenResources(
                    opendata_pb2.ListOpenResourcesRequest()
                )
            )
        assert gone.code() is grpc.StatusCode.UNAUTHENTICATED and "revoked" in (
            gone.details() or ""
        )
    finally:
        await node.stop(grace=0)


def test_issue_portal_refuses_bad_names_and_an_existing_bundle(tmp_path: Path) -> None:
    setup = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    with pytest.raises(ProvisionError, match="--name: portal identity needs a subject"):
        issue_portal(setup.config, name="open/data", out=tmp_path / "x")
    issue_portal(setup.config, name="opendata-1", out=tmp_path / "portal")
    again = govnode(
        "certs", "issue-portal", "--config", setup.config_path, "--name", "opendata-2",
        "--out", tmp_path / "portal",
    )  # fmt: skip
    assert_one_line_error(again, "exists already")
    shown = govnode("certs", "issue-portal", "--help")
    assert shown.returncode == 0 and "govnode-recipient" in shown.stdout
