"""The authority's open catalog over the wire and from the command line (第二十九条): a real
province node over mutual TLS. Only the node's data management authority (or the node itself,
for its operator's commands) publishes; every publication is in the audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from govnode.v1 import opendata_pb2, opendata_pb2_grpc

from node.catalog import OpenType
from tests.opendata.test_publish import ITEMS, person
from tests.support.access import refused, register, submit
from tests.support.cli import govnode
from tests.support.nodes import PROVINCE, PUBLIC_SECURITY, channel, entry_of, make_province, start


async def test_the_authority_publishes_over_the_wire_and_others_are_refused(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        provider = setup.agency(PUBLIC_SECURITY)
        entry = entry_of(PROVINCE, 7, items=ITEMS, open_type=OpenType.AUTHORIZED)
        await register(node, provider, entry)
        await submit(
            node, provider, entry.resource_code, [person(i, 1980 + i % 3) for i in range(60)]
        )
        request = opendata_pb2.PublishOpenResourceRequest(resource_code=entry.resource_code)

        async with channel(node, provider) as ch:
            denied = await refused(
                opendata_pb2_grpc.OpenDataServiceStub(ch).PublishOpenResource(request)
            )
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "only this node's data management authority" in (denied.details() or "")

        async with channel(node, setup.authority()) as ch:
            stub = opendata_pb2_grpc.OpenDataServiceStub(ch)
            reply = await stub.PublishOpenResource(request)
            assert reply.report.outcome == "published" and reply.report.rows_published == 60
            assert reply.report.k_reached == 20 and list(reply.report.quasi_identifiers) == [
                "csrq",
                "qh",
            ]
            assert reply.report.treatments["sfzhm"].startswith("dropped")
            listed = await stub.ListOpenDatasets(opendata_pb2.ListOpenDatasetsRequest())
            [dataset] = listed.datasets
            assert (dataset.resource_code, dataset.published, dataset.not_served) == (
                entry.resource_code,
                True,
                "",
            )
            missing = await refused(
                stub.PublishOpenResource(
                    opendata_pb2.PublishOpenResourceRequest(resource_code="350000-3-999999")
                )
            )
            assert missing.code() is grpc.StatusCode.NOT_FOUND

        # The operator's command works on the database and writes its own audit record.
        result = await asyncio.to_thread(
            govnode, "opendata", "publish", entry.resource_code, "--config", setup.config_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"published {entry.resource_code} version 2" in result.stdout
        assert "k-anonymity over csrq, qh: k = 20" in result.stdout
        rows = await node.db.fetch_all(
            "SELECT method, outcome FROM audit_record WHERE resource_code = :c ORDER BY sequence",
            {"c": entry.resource_code},
        )
        methods = [(str(m).rsplit("/", 1)[-1], str(o)) for m, o in rows]
        assert ("PublishOpenResource", "PERMISSION_DENIED") in methods
        assert ("PublishOpenResource", "OK") in methods
        assert ("opendata.publish", "OK") in methods
    finally:
        await node.stop(grace=0)
