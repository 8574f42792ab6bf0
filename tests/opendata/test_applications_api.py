"""授权开放 over the wire and from the command line (第三十二至三十五条): a real province node
over mutual TLS. The authority lists, reads, reviews (the key in the response, once) and
revokes, and reads the use reports; an agency is refused all of it, and may not apply or report
in the portal's place. The applicant-facing calls are the portal's: the application and the
report are made here at the domain level, on the node's database with its key secret."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from govnode.v1 import common_pb2, opendata_pb2, opendata_pb2_grpc

from gateway.identity import Identity, Role
from node.catalog import Catalog, OpenType
from node.opendata import OpenApplications, OpenData, OpenKeys, open_data_gate
from node.pki import load_or_create_secret
from node.sharing import Notifications
from node.storage import Database
from tests.opendata.test_applications import draft
from tests.opendata.test_publish import ITEMS, person
from tests.support.access import refused, register, submit
from tests.support.cli import govnode
from tests.support.nodes import (
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    entry_of,
    make_province,
    start,
)


def domain(setup: ProvinceSetup, db: Database) -> tuple[OpenApplications, OpenKeys, Identity]:
    """The node's 授权开放 on its database, as the portal's calls reach it."""
    config = setup.config
    node = Identity(config.node.region, config.node.trust_domain, Role.NODE)
    catalog = Catalog(db, node_region=config.node.region)
    opendata = OpenData(
        db,
        catalog,
        node_region=config.node.region,
        min_k=config.opendata.min_k,
        max_suppressed=config.opendata.max_suppressed,
        may_open=open_data_gate(db, province=True),
    )
    notifications = Notifications(db)
    secret = load_or_create_secret(config.path(config.opendata.key_secret))
    keys = OpenKeys(db, notifications, node, key_secret=secret)
    applications = OpenApplications(db, catalog, opendata, notifications, keys, node)
    return applications, keys, node


async def test_the_authority_reviews_over_the_wire_and_the_cli_writes_its_audit_records(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        provider = setup.agency(PUBLIC_SECURITY)
        entry = entry_of(PROVINCE, 7, items=ITEMS, open_type=OpenType.AUTHORIZED)
        code = entry.resource_code
        await register(node, provider, entry)
        await submit(node, provider, code, [person(i, 1980 + i % 3) for i in range(60)])
        async with channel(node, setup.authority()) as ch:
            await opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(
                opendata_pb2.PublishOpenResourceRequest(resource_code=code)
            )
        applications, keys, portal = domain(setup, node.db)
        app = await applications.apply(portal, draft(code))

        async with channel(node, provider) as ch:
            stub = opendata_pb2_grpc.OpenDataServiceStub(ch)
            for call in (
                stub.ListOpenApplications(opendata_pb2.ListOpenApplicationsRequest()),
                stub.GetOpenApplication(opendata_pb2.GetOpenApplicationRequest(id=app.id)),
                stub.ReviewOpenApplication(
                    opendata_pb2.ReviewOpenApplicationRequest(
                        id=app.id, decision=common_pb2.REVIEW_DECISION_APPROVE
                    )
                ),
                stub.ListUseReports(opendata_pb2.ListUseReportsRequest()),
            ):
                denied = await refused(call)
                assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "only this node's data management authority" in (denied.details() or "")
            for portals in (
                stub.ApplyOpenAccess(opendata_pb2.ApplyOpenAccessRequest(resource_code=code)),
                stub.FileUseReport(opendata_pb2.FileUseReportRequest(key="x", text="y")),
            ):
                denied = await refused(portals)
                assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
                assert "open data portal (第三十条)" in (denied.details() or "")

        async with channel(node, setup.authority()) as ch:
            stub = opendata_pb2_grpc.OpenDataServiceStub(ch)
            listed = await stub.ListOpenApplications(
                opendata_pb2.ListOpenApplicationsRequest(
                    status=opendata_pb2.OPEN_APPLICATION_STATUS_PENDING
                )
            )
            [shown] = listed.applications
            assert (shown.id, shown.entity_code, shown.contact) == (
                app.id,
                app.entity_code,
                "林工 0591-87654321",
            )
            assert shown.domestic_control_declared and shown.evidence_reference
            narrowing = await refused(
                stub.ReviewOpenApplication(
                    opendata_pb2.ReviewOpenApplicationRequest(
                        id=app.id, decision=common_pb2.REVIEW_DECISION_APPROVE, items=["sfzhm"]
                    )
                )
            )
            assert narrowing.code() is grpc.StatusCode.INVALID_ARGUMENT
            reply = await stub.ReviewOpenApplication(
                opendata_pb2.ReviewOpenApplicationRequest(
                    id=app.id,
                    decision=common_pb2.REVIEW_DECISION_APPROVE,
                    items=["csrq", "qh"],
                    request_id="review-1",
                )
            )
            key = reply.key
            assert key.startswith(f"gok_{reply.application.key_id}_")
            assert reply.application.status == opendata_pb2.OPEN_APPLICATION_STATUS_APPROVED
            assert list(reply.application.items) == ["csrq", "qh"]
            assert reply.application.HasField("not_after")
            retried = await stub.ReviewOpenApplication(
                opendata_pb2.ReviewOpenApplicationRequest(
                    id=app.id, decision=common_pb2.REVIEW_DECISION_APPROVE, request_id="review-1"
                )
            )
            assert retried.key == "" and retried.application.key_id == reply.application.key_id
            got = await stub.GetOpenApplication(opendata_pb2.GetOpenApplicationRequest(id=app.id))
            assert got.application.key_id == reply.application.key_id

            # The node's key secret recognises the key the authority was given.
            assert (await keys.authorize(key, code)).items == ("csrq", "qh")
            await keys.file_report(portal, "第一季度开发利用情况", key=key)
            reports = await stub.ListUseReports(opendata_pb2.ListUseReportsRequest())
            [report] = reports.reports
            assert (report.key_id, report.period, report.text) == (
                reply.application.key_id,
                1,
                "第一季度开发利用情况",
            )
            revoked = await stub.RevokeOpenKey(
                opendata_pb2.RevokeOpenKeyRequest(
                    key_id=reply.application.key_id, reason="超出授权用途"
                )
            )
            assert revoked.application.key_revoked

        # The operator's commands work on the database and write their own audit records.
        second = await applications.apply(portal, draft(code))
        third = await applications.apply(portal, draft(code))
        config = setup.config_path
        listed_cli = await asyncio.to_thread(
            govnode, "opendata", "applications", "list", "--status", "pending", "--config", config
        )
        assert listed_cli.returncode == 0, listed_cli.stderr
        assert second.id in listed_cli.stdout and app.id not in listed_cli.stdout
        approved = await asyncio.to_thread(
            govnode,
            "opendata",
            "applications",
            "approve",
            second.id,
            "--item",
            "qh",
            "--config",
            config,
        )
        assert approved.returncode == 0, approved.stderr
        cli_key = approved.stdout.split("key (shown this once; not stored): ", 1)[1].strip()
        assert (await keys.authorize(cli_key, code)).items == ("qh",)
        shown_cli = await asyncio.to_thread(
            govnode, "opendata", "applications", "show", second.id, "--config", config
        )
        assert shown_cli.returncode == 0, shown_cli.stderr
        assert "use report period 1" in shown_cli.stdout and cli_key not in shown_cli.stdout
        rejected = await asyncio.to_thread(
            govnode, "opendata", "applications", "reject", third.id, "--config", config
        )
        assert rejected.returncode != 0  # --comment is required
        rejected = await asyncio.to_thread(
            govnode,
            "opendata",
            "applications",
            "reject",
            third.id,
            "--comment",
            "材料不全",
            "--config",
            config,
        )
        assert rejected.returncode == 0, rejected.stderr
        key_id = cli_key.split("_")[1]
        revoke = ("opendata", "keys", "revoke", key_id, "--config", config, "--reason")
        revoked_cli = await asyncio.to_thread(govnode, *revoke, "协议终止")
        assert revoked_cli.returncode == 0, revoked_cli.stderr
        again = await asyncio.to_thread(govnode, *revoke, "x")
        assert again.returncode == 2 and "already revoked" in again.stderr

        rows = await node.db.fetch_all(
            "SELECT method, outcome, caller FROM audit_record ORDER BY sequence", {}
        )
        methods = [(str(m).rsplit("/", 1)[-1], str(o)) for m, o, _ in rows]
        assert ("ReviewOpenApplication", "PERMISSION_DENIED") in methods
        assert ("ReviewOpenApplication", "INVALID_ARGUMENT") in methods
        assert ("ReviewOpenApplication", "OK") in methods
        assert ("RevokeOpenKey", "OK") in methods
        assert ("ListUseReports", "OK") in methods
        assert ("FileUseReport", "PERMISSION_DENIED") in methods
        assert methods.count(("opendata.review", "OK")) == 2  # the CLI's approval, rejection
        assert ("opendata.revoke_key", "OK") in methods
        assert ("opendata.revoke_key", "FAILED_PRECONDITION") in methods
        authority = f"spiffe://{PROVINCE}.{setup.config.node.trust_domain}/authority"
        assert {str(c) for m, _, c in rows if str(m).startswith("opendata.")} == {authority}
    finally:
        await node.stop(grace=0)
