"""The province roll-up (issue 15 item 6) over a real province and two cities with mutual TLS
on loopback, on SQLite and PostgreSQL: 福州's signed summary reaches the province and its
table shows the figures 福州's own compliance report gives; a summary with an altered byte, a
summary for another city's region, and the RPC called by an agency or an authority are refused;
the province's authority reads the province-wide table, and asks the province for a 福州
agency's full report, which the province routes to 福州."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import (
    federation_pb2,
    federation_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files, supervision_of
from node.pki import load_certs, load_chain_pem, load_private_key
from node.supervision import check_summary, compute_summary, sign_summary
from tests.support.access import ACME, ITEMS, refused, submit, ts
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.nodes import FUZHOU, PROVINCE, XIAMEN, Member, channel, entry_of, federation

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

V = supervision_pb2
TD = "fujian.gov.cn"
FUZHOU_AGENCY = agency_code(1, FUZHOU)
#: Bounded polls of 0.2 s while the city's audit records of the calls settle.
POLLS = 100


async def supervise(node: RunningNode, files: TlsFiles, method: str, request: Any) -> Any:
    async with channel(node, files, timeout=30) as ch:
        return await getattr(supervision_pb2_grpc.SupervisionServiceStub(ch), method)(request)


async def publish(node: RunningNode, files: TlsFiles, document: bytes) -> Any:
    async with channel(node, files) as ch:
        return await federation_pb2_grpc.FederationServiceStub(ch).PublishSupervisionSummary(
            federation_pb2.PublishSupervisionSummaryRequest(summary=document)
        )


def figures(msg: Any) -> list[tuple[int, int, int, str]]:
    return [(f.kind, f.numerator, f.denominator, f.grade) for f in msg]


async def signed_summary(city: Member, **changes: Any) -> bytes:
    """A summary of ``city`` computed and signed as its node does, with ``changes``."""
    config = city.setup.config
    node = city.running
    summary = await compute_summary(
        supervision_of(config, node.db, node.audit), node.identity.uri, max_agencies=500
    )
    root = load_certs(config.path(config.tls.root))[0]
    return sign_summary(
        dataclasses.replace(summary, **changes),
        load_private_key(config.path(config.tls.key)),
        load_chain_pem(config.path(config.tls.cert), root),
    )


async def test_a_city_summary_reaches_the_province_table_and_a_full_report_is_routed(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        city, province = fed.fuzhou, fed.province
        entry = entry_of(FUZHOU, 7, items=ITEMS)
        await city.register(entry)
        await submit(city.running, city.agency(), entry.resource_code, [ACME])
        chief = province.setup.authority()

        # The table shows what 福州's own report says for the same period. The summary is
        # sent again until the records of the calls above are in the city's audit log.
        row: Any = None
        own: Any = None
        for _ in range(POLLS):
            assert city.running.summary is not None
            await city.running.summary.run_once()
            table = await supervise(
                province.running, chief, "GetProvinceSummary", V.GetProvinceSummaryRequest()
            )
            regions = {r.region: r for r in table.regions}
            row = regions[FUZHOU]
            agencies = {a.agency_code: a for a in row.agencies}
            if FUZHOU_AGENCY in agencies:
                own = await supervise(
                    city.running,
                    city.setup.authority(),
                    "GetComplianceReport",
                    V.GetComplianceReportRequest(
                        agency_code=FUZHOU_AGENCY,
                        period_start=row.period_start,
                        period_end=row.period_end,
                    ),
                )
                counted = figures(agencies[FUZHOU_AGENCY].figures)
                submits = counted[0][2]  # 擅自扩大数据采集范围's occasions: Submit batches
                if submits >= 1 and counted == figures(own.report.figures):
                    break
            await asyncio.sleep(0.2)
        else:
            pytest.fail(f"the province's table never matched 福州's report: {row} {own}")
        shown = {a.agency_code: a for a in row.agencies}[FUZHOU_AGENCY]
        assert row.signed_by == city.running.identity.uri
        assert row.resources_total == 1 and not row.stale
        assert (shown.first_sequence, shown.last_sequence) == (
            own.report.window_first_sequence,
            own.report.window_last_sequence,
        )
        totals = {f.kind: (f.numerator, f.denominator) for f in row.totals}
        for f in shown.figures:
            if f.measured:
                assert totals[f.kind] == (f.numerator, f.denominator)

        # The province's own region is summarised the same way, locally.
        assert province.running.summary is not None
        await province.running.summary.run_once()
        table = await supervise(
            province.running, chief, "GetProvinceSummary", V.GetProvinceSummaryRequest()
        )
        assert {r.region for r in table.regions} >= {PROVINCE, FUZHOU}
        assert table.stale_after_seconds == 7200.0

        # The operator's view at the province: the same figures, labelled in Chinese.
        code, out, errors = await cli(
            "supervision", "province", "--config", province.setup.config_path, "--json"
        )
        assert code == 0, errors
        printed = {t["region"]: t for t in json.loads(out)}
        [agency] = [a for a in printed[FUZHOU]["agencies"] if a["agency_code"] == FUZHOU_AGENCY]
        assert [(x["numerator"], x["denominator"]) for x in agency["figures"] if x["measured"]] == [
            (f.numerator, f.denominator) for f in shown.figures if f.measured
        ]
        code, out, errors = await cli(
            "supervision", "province", "--config", province.setup.config_path
        )
        assert code == 0, errors
        assert out.startswith("全省监督汇总：")
        assert f"地区 {FUZHOU}  签名节点 {city.running.identity.uri}" in out
        assert f"  单位 {FUZHOU_AGENCY}  审计 #" in out and "擅自扩大数据采集范围 " in out
        result = govnode("supervision", "province", "--config", city.setup.config_path)
        assert_one_line_error(result, "the province-wide table is at the province's node")

        # Only the province's authority reads the table.
        for files in (province.agency(), city.setup.authority(), fed.xiamen.setup.authority()):
            err = await refused(
                supervise(
                    province.running, files, "GetProvinceSummary", V.GetProvinceSummaryRequest()
                )
            )
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "read by the province's data management authority only" in (err.details() or "")

        # The full report of a 福州 agency, asked of the province, comes from 福州.
        start = ts(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        ask = V.GetComplianceReportRequest(
            agency_code=FUZHOU_AGENCY, period_start=start, region=FUZHOU
        )
        routed = await supervise(province.running, chief, "GetComplianceReport", ask)
        assert routed.report.agency_code == FUZHOU_AGENCY
        assert routed.report.report_id.startswith(f"{FUZHOU}-R-")
        assert routed.report.figures[0].denominator >= 1
        page = await supervise(
            province.running,
            chief,
            "GetComplianceReport",
            V.GetComplianceReportRequest(report_id=routed.report.report_id, region=FUZHOU),
        )
        assert page.report.report_id == routed.report.report_id

        err = await refused(
            supervise(province.running, fed.xiamen.setup.authority(), "GetComplianceReport", ask)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only the province's data management authority" in (err.details() or "")
        err = await refused(
            supervise(
                city.running,
                chief,
                "GetComplianceReport",
                V.GetComplianceReportRequest(
                    agency_code=agency_code(1, XIAMEN), period_start=start, region=XIAMEN
                ),
            )
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ask the province's node" in (err.details() or "")
        err = await refused(
            supervise(
                province.running,
                chief,
                "GetComplianceReport",
                V.GetComplianceReportRequest(
                    agency_code=FUZHOU_AGENCY, period_start=start, region="110100"
                ),
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not a city of province 350000" in (err.details() or "")


async def test_altered_foreign_and_non_node_summaries_are_refused(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        city, province = fed.fuzhou, fed.province
        city_node = node_tls_files(city.setup.config)
        good = await signed_summary(city)
        config = province.setup.config
        summary, signer = check_summary(
            good, load_certs(config.path(config.tls.root))[0], config.node.trust_domain
        )
        assert (summary.region, signer.uri) == (FUZHOU, city.running.identity.uri)

        # One byte of the body changed after signing.
        document = json.loads(good)
        body = document["body"]
        at = body.index('"resources_total":') + len('"resources_total":')
        document["body"] = body[:at] + str((int(body[at]) + 1) % 10) + body[at + 1 :]
        err = await refused(publish(province.running, city_node, json.dumps(document).encode()))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the body is not the one the node signed" in (err.details() or "")

        # 福州 signing a summary of 厦门's region.
        foreign = await signed_summary(city, region=XIAMEN)
        err = await refused(publish(province.running, city_node, foreign))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (
            f"may send only its own region's summary ({FUZHOU}), not one for region {XIAMEN}"
            in (err.details() or "")
        )

        # 厦门's node sending 福州's summary.
        err = await refused(
            publish(province.running, node_tls_files(fed.xiamen.setup.config), good)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"not one for region {FUZHOU}" in (err.details() or "")

        # Agencies and authorities cannot publish one at all.
        for files in (city.agency(), city.setup.authority(), province.setup.authority()):
            err = await refused(publish(province.running, files, good))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "only govnode nodes may call PublishSupervisionSummary" in (err.details() or "")

        # A city does not take summaries; the province does, once.
        err = await refused(publish(fed.xiamen.running, city_node, good))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "supervision summaries go to the province's node" in (err.details() or "")
        await publish(province.running, city_node, good)  # kept unless a newer one is held
        again = await publish(province.running, city_node, good)
        assert not again.stored
