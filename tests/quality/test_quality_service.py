"""QualityService.GetQualityReport and `govnode quality` over a real province node with mutual
TLS on loopback, on SQLite and PostgreSQL: the operator checks with the CLI while the node
serves; the provider and the authority read the report, another agency is refused; every read
and every check is in the audit log."""

from __future__ import annotations

import json

import grpc
import pytest
from govnode.v1 import quality_pb2, quality_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditLog, Operation
from tests.support.access import ACME, OPEN, Province, query, refused, register, sharing, submit
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.nodes import CIVIL_AFFAIRS, PUBLIC_SECURITY, channel

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

GET = "/govnode.v1.QualityService/GetQualityReport"


async def get_report(node: RunningNode, files: TlsFiles, code: str) -> quality_pb2.QualityReport:
    async with channel(node, files) as ch:
        reply = await quality_pb2_grpc.QualityServiceStub(ch).GetQualityReport(
            quality_pb2.GetQualityReportRequest(resource_code=code), timeout=5
        )
    return reply.report


def indicators(report: quality_pb2.QualityReport) -> dict[str, tuple[int, int]]:
    return {i.code: (i.numerator, i.denominator) for d in report.dimensions for i in d.indicators}


async def test_the_provider_and_its_authority_read_the_report_others_are_refused(
    province: Province,
) -> None:
    setup, node = province
    config = setup.config_path
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME])
    await submit(node, provider, OPEN.resource_code, [ACME])  # the same batch b1, resent
    civil = setup.agency(CIVIL_AFFAIRS)
    await sharing(node, civil, "Query", query(OPEN.resource_code))
    await refused(sharing(node, civil, "Query", query(OPEN.resource_code, items=("nope",))))

    # Never checked yet: NOT_FOUND, saying how to check.
    err = await refused(get_report(node, provider, OPEN.resource_code))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == (
        f"resource '{OPEN.resource_code}' has no quality check yet: checks run daily at "
        "[quality] check_time, or now with `govnode quality check --resource CODE`"
    )

    # The operator checks every resource with the CLI while the node serves.
    code, out, errors = await cli("quality", "check", "--config", config)
    assert code == 0, errors
    assert f"checked 1/1 {OPEN.resource_code}" in errors
    assert out.startswith(f"{OPEN.resource_code}  grade ")

    report = await get_report(node, provider, OPEN.resource_code)
    assert report.resource_code == OPEN.resource_code and report.records == 1
    found = indicators(report)
    assert found["010400"] == (1, 1)  # ACME accepted
    assert found["030300"] == (1, 2)  # one batch applied, sent twice
    assert found["060100"] == (1, 1)  # one Query served; the refused one not held against it
    assert report.caller_refusals == 1
    assert [d.term for d in report.dimensions] == [
        "规范性",
        "完整性",
        "唯一性",
        "一致性",
        "时效性",
        "可访问性",
    ]
    assert report.grade in {"A", "B", "C", "D", "E"}
    assert (report.warn_below, report.critical_below) == (80.0, 60.0)
    assert report.metadata.code == "010300" and report.metadata.measured
    assert [i.item for i in report.items] == ["tyshxydm", "qymc", "fddbr"]
    assert report.items[0].passed == 1 and report.items[0].missing == 0

    # The region's (here the province's) authority reads it too.
    authority = setup.authority()
    assert await get_report(node, authority, OPEN.resource_code) == report

    # Another agency may not: it is told who may.
    err = await refused(get_report(node, civil, OPEN.resource_code))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (
        f"the quality report of resource {OPEN.resource_code} is read by its provider (agency "
        f"{PUBLIC_SECURITY} of region 350000), the data management authority of region 350000 "
        f"and the province's authority (第十五条); spiffe://350000.fujian.gov.cn/agency/"
        f"{CIVIL_AFFAIRS} is none of them"
    )
    err = await refused(get_report(node, provider, "3" * 10_000))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    message = err.details() or ""
    assert message.endswith("is not in the catalog of this node")
    assert len(message) < 200  # the code quoted, cut short
    err = await refused(get_report(node, provider, ""))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "resource_code is required",
    )

    # Every read (served or refused) and the check are in the audit log (分析).
    records = await AuditLog(node.db).query(operation=Operation.ANALYZE, limit=50)
    reads = [(r.caller, r.outcome) for r in records if r.method == GET]
    assert reads == [
        (f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}", "NOT_FOUND"),
        (f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}", "OK"),
        ("spiffe://350000.fujian.gov.cn/authority", "OK"),
        (f"spiffe://350000.fujian.gov.cn/agency/{CIVIL_AFFAIRS}", "PERMISSION_DENIED"),
        (f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}", "NOT_FOUND"),
        (f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}", "INVALID_ARGUMENT"),
    ]
    [check] = [r for r in records if r.method == "quality.check"]
    assert (check.caller, check.resource_code) == (
        "spiffe://350000.fujian.gov.cn/authority",
        OPEN.resource_code,
    )

    # `govnode quality report` prints it, as text and as JSON.
    code, out, errors = await cli("quality", "report", "--config", config)
    assert code == 0, errors
    assert "规范性 conformity" in out and "030300  数据重复率  1/2" in out
    code, out, errors = await cli(
        "quality", "report", "--config", config, "--resource", OPEN.resource_code, "--json"
    )
    assert code == 0, errors
    data = json.loads(out)
    assert data["resource_code"] == OPEN.resource_code and data["records"] == 1


async def test_cli_refusals_are_one_line(province: Province) -> None:
    setup, _ = province
    config = setup.config_path
    result = govnode("quality", "check", "--config", config, "--resource", "350000-3-999999")
    assert_one_line_error(result, "resource '350000-3-999999' is not in the catalog of this node")
    result = govnode("quality", "report", "--config", config, "--resource", "350000-3-999999")
    assert_one_line_error(result, "is not in the catalog of this node")
    code, out, errors = await cli("quality", "check", "--config", config)
    assert code == 0 and "this node owns no resource to check" in out, errors
