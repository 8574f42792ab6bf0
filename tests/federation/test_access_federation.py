"""Applications and grants across the federation (第二十五条, 第三十七条): a 厦门 agency applies
at 厦门 for a 福州 resource; the application is made at 福州 (forwarded with a signed caller
assertion, like Verify) and reviewed by 福州's authority only; the grant then bounds the 厦门
agency's routed Query and Verify at 福州, and its revocation stops the next routed call. For a
province resource, the province's authority reviews. Real nodes over real mutual TLS, on both
backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from govnode.v1 import access_pb2

from node.app import node_tls_files
from node.catalog import ShareMethod
from tests.support.access import (
    ACME,
    ITEMS,
    KIND,
    M,
    access,
    apply_request,
    approve,
    authority,
    notifications,
    query,
    refused,
    sharing,
    submit,
    verify,
)
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.nodes import FUZHOU, PROVINCE, XIAMEN, Federation, entry_of, federation

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)
AT_FUZHOU = entry_of(FUZHOU, 7, items=ITEMS, share_methods=METHODS)
AT_PROVINCE = entry_of(PROVINCE, 7, items=ITEMS, share_methods=METHODS)


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    async with federation(tmp_path, db_urls) as running:
        await running.fuzhou.register(AT_FUZHOU)
        await running.province.register(AT_PROVINCE)
        await submit(
            running.fuzhou.running, running.fuzhou.agency(), AT_FUZHOU.resource_code, [ACME]
        )
        await submit(
            running.province.running, running.province.agency(), AT_PROVINCE.resource_code, [ACME]
        )
        await running.converged(2)
        yield running


async def test_an_application_across_cities_is_reviewed_by_the_owners_authority(
    fed: Federation,
) -> None:
    xiamen, fuzhou, province = fed.xiamen, fed.fuzhou, fed.province
    applicant = xiamen.setup.agency(agency_code(2, XIAMEN))
    code = AT_FUZHOU.resource_code

    # Applied at 厦门, made at 福州 (the id carries 福州's region).
    applied = (await access(xiamen.running, applicant, "Apply", apply_request(code))).application
    assert applied.id.startswith(f"{FUZHOU}-A-")
    assert applied.applicant.region == XIAMEN
    # Read back through 厦门: routed to 福州 by the id's region.
    got = await access(
        xiamen.running, applicant, "GetApplication", access_pb2.GetApplicationRequest(id=applied.id)
    )
    assert got.application.status == access_pb2.APPLICATION_STATUS_PENDING
    # 福州's provider and authority are told at 福州; 厦门's authority holds nothing.
    fuzhou_boss, xiamen_boss = authority(fuzhou.setup), authority(xiamen.setup)
    [note] = await notifications(fuzhou.running, fuzhou.agency())
    assert note.kind == KIND.NOTIFICATION_KIND_APPLICATION_RECEIVED
    assert [n.application_id for n in await notifications(fuzhou.running, fuzhou_boss)] == [
        applied.id
    ]
    listed = await access(
        xiamen.running, xiamen_boss, "ListApplications", access_pb2.ListApplicationsRequest()
    )
    assert list(listed.applications) == []

    # Only 福州's authority reviews it: 厦门's is refused at 福州, naming the rule.
    err = await refused(
        access(fuzhou.running, xiamen_boss, "ReviewApplication", approve(applied.id))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"region {FUZHOU}" in (err.details() or "") and "第二十五条" in (err.details() or "")
    reviewed = await access(
        fuzhou.running,
        fuzhou_boss,
        "ReviewApplication",
        approve(applied.id, items=["tyshxydm", "fddbr"], share_methods=[M.SHARE_METHOD_QUERY]),
    )
    grant = reviewed.grant
    assert grant.id.startswith(f"{FUZHOU}-G-")

    # The routed Query (厦门 -> province -> 福州) returns only granted items, masked.
    [row] = (await sharing(xiamen.running, applicant, "Query", query(code))).rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "fddbr": "王*"}
    err = await refused(sharing(xiamen.running, applicant, "Query", query(code, ("qymc",))))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "qymc" in (err.details() or "")
    err = await refused(sharing(xiamen.running, applicant, "Verify", verify(code, fddbr="王五")))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "越权使用" in (err.details() or "")
    # Another 厦门 agency holds no grant.
    other = xiamen.setup.agency(agency_code(3, XIAMEN))
    err = await refused(sharing(xiamen.running, other, "Query", query(code)))
    assert "needs an approved application" in (err.details() or "")
    # The grant is readable through 厦门 as well.
    got_grant = await access(
        xiamen.running, applicant, "GetGrant", access_pb2.GetGrantRequest(id=grant.id)
    )
    assert list(got_grant.grant.items) == ["tyshxydm", "fddbr"]

    # Revocation at 福州 stops the next routed call.
    await access(
        fuzhou.running,
        fuzhou_boss,
        "RevokeGrant",
        access_pb2.RevokeGrantRequest(grant_id=grant.id, reason="审批事项已办结"),
    )
    err = await refused(sharing(xiamen.running, applicant, "Query", query(code)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "revoked" in (err.details() or "")

    # A province resource: applied at 厦门, made and reviewed at the province.
    applied = (
        await access(xiamen.running, applicant, "Apply", apply_request(AT_PROVINCE.resource_code))
    ).application
    assert applied.id.startswith(f"{PROVINCE}-A-")
    err = await refused(
        access(province.running, fuzhou_boss, "ReviewApplication", approve(applied.id))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    await access(
        province.running,
        authority(province.setup),
        "ReviewApplication",
        approve(applied.id, items=["tyshxydm", "qymc"]),
    )
    [row] = (
        await sharing(xiamen.running, applicant, "Query", query(AT_PROVINCE.resource_code))
    ).rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "qymc": ACME["qymc"]}
    # The applicant withdraws a pending one through 厦门 (routed by the id's region).
    pending = (await access(xiamen.running, applicant, "Apply", apply_request(code))).application
    withdrawn = await access(
        xiamen.running,
        applicant,
        "WithdrawApplication",
        access_pb2.WithdrawApplicationRequest(id=pending.id),
    )
    assert withdrawn.application.status == access_pb2.APPLICATION_STATUS_WITHDRAWN
    # A node calls Apply only on behalf of a caller, with a signed caller assertion.
    as_node = node_tls_files(xiamen.setup.config)
    err = await refused(access(fuzhou.running, as_node, "Apply", apply_request(code)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "on behalf of" in (
        err.details() or ""
    )


async def test_ids_of_a_region_without_a_node_are_not_found_and_never_unavailable(
    fed: Federation,
) -> None:
    """An application or grant id names the region whose node holds it. A region no node
    serves (宁德 350900 never joined; 广州 440100 is in another province) is NOT_FOUND naming
    the region, like Verify on a resource of such a region, at the province and routed through
    a city: UNAVAILABLE would invite retries that can never succeed. UNAVAILABLE stays for a
    node that exists but cannot be reached."""
    province, xiamen = fed.province, fed.xiamen
    for region in ("350900", "440100"):
        for member in (province, xiamen):
            caller = member.agency()
            for method, request in (
                ("GetApplication", access_pb2.GetApplicationRequest(id=f"{region}-A-00ff")),
                ("WithdrawApplication", access_pb2.WithdrawApplicationRequest(id=f"{region}-A-1")),
                ("GetGrant", access_pb2.GetGrantRequest(id=f"{region}-G-00ff")),
            ):
                err = await refused(access(member.running, caller, method, request))
                details = err.details() or ""
                assert err.code() is grpc.StatusCode.NOT_FOUND, (member.region, method, details)
                assert f"region {region}" in details and "no node" in details, details
            err = await refused(
                sharing(member.running, caller, "Verify", verify(f"{region}-3-000001"))
            )
            assert err.code() is grpc.StatusCode.NOT_FOUND, err.details()

    # 福州 is a known node: stopped, its ids are UNAVAILABLE naming it, at once and through 厦门.
    await fed.fuzhou.stop()
    for member in (province, xiamen):
        err = await refused(
            access(
                member.running,
                member.agency(),
                "GetApplication",
                access_pb2.GetApplicationRequest(id=f"{FUZHOU}-A-00ff"),
            )
        )
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
        assert f"({FUZHOU}) is unreachable" in (err.details() or "")
