"""Compliance reports (第八、四十二条) over a real province node with mutual TLS on loopback, on
SQLite and PostgreSQL: agencies break the Measures through real gRPC calls (an undeclared item,
a change without approval, a 一数一源 claim, a Verify without a grant, a level-4 item outside a
grant, a deletion of another's record), and the report counts each with the audit record behind
it; the agency and the authority read it, another agency is refused; `govnode supervision
report` prints it and `recount` re-derives it from the audit log, or names the break in the
chain after a record was altered."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from govnode.v1 import (
    access_pb2,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.audit import AuditLog, AuditRecord
from node.catalog import Catalog, ShareType
from node.errors import ResourceExhausted
from node.storage import Database
from node.supervision import ReportAdmission, Supervision
from node.times import CST
from tests.support.access import (
    ACME,
    ITEMS,
    M,
    Province,
    access,
    apply_request,
    approve,
    query,
    refused,
    register,
    sharing,
    ts,
    verify,
)
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.entries import (
    NODE_REGION,
    TRUST_DOMAIN,
    agency,
    agency_code,
    item,
    make_entry,
)
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PROVINCE,
    PUBLIC_SECURITY,
    channel,
    entry_of,
    make_province,
)
from tests.support.oracle import retry_after_ms

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

V = supervision_pb2
TD = "fujian.gov.cn"
CIVIL_URI = f"spiffe://{PROVINCE}.{TD}/agency/{CIVIL_AFFAIRS}"
PROVIDER_URI = f"spiffe://{PROVINCE}.{TD}/agency/{PUBLIC_SECURITY}"

OPEN = entry_of(PROVINCE, 2, items=ITEMS, share_type=ShareType.UNCONDITIONAL)
#: A conditional resource with a level-4 item (个人隐私): asking for it outside a grant is
#: misuse of protected data.
SECRET = entry_of(
    PROVINCE,
    3,
    items=(
        item("tyshxydm", key=True, required=True),
        item("qymc"),
        item("sfzh", sensitivity_level=4),
    ),
)
SOURCE = entry_of(
    PROVINCE, 5, items=(item("dm", key=True, standard_element="DE1", authoritative_source=True),)
)
#: Claims DE1 again: refused under 一数一源 (第十三条).
SECOND = entry_of(
    PROVINCE, 6, items=(item("dm", key=True, standard_element="DE1", authoritative_source=True),)
)
OTHER = {"tyshxydm": "91350100MA00000029", "qymc": "厦门某某有限公司", "fddbr": "赵六"}


async def submit(node: RunningNode, files: TlsFiles, batch_id: str, rows: list[dict[str, str]]):  # type: ignore[no-untyped-def]
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=OPEN.resource_code,
            batch_id=batch_id,
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with channel(node, files) as ch:
        return [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]


async def report_of(
    node: RunningNode, files: TlsFiles, code: str, **fields: object
) -> V.GetComplianceReportResponse:
    request = V.GetComplianceReportRequest(
        agency_code=code,
        period_start=ts(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)),
        **fields,  # type: ignore[arg-type]
    )
    async with channel(node, files) as ch:
        reply: V.GetComplianceReportResponse = await supervision_pb2_grpc.SupervisionServiceStub(
            ch
        ).GetComplianceReport(request, timeout=10)
    return reply


def figures(report: V.ComplianceReport) -> dict[int, tuple[int, int]]:
    return {f.kind: (f.numerator, f.denominator) for f in report.figures}


async def records_of(node: RunningNode, caller: str) -> list[AuditRecord]:
    return await AuditLog(node.db).query(caller=caller, limit=500)


def one(records: list[AuditRecord], method: str, outcome: str) -> AuditRecord:
    [found] = [r for r in records if r.method.endswith(method) and r.outcome == outcome]
    return found


async def test_violations_made_over_grpc_are_counted_with_their_audit_records(
    province: Province,
) -> None:
    setup, node = province
    provider, civil, boss = (
        setup.agency(PUBLIC_SECURITY),
        setup.agency(CIVIL_AFFAIRS),
        setup.authority(),
    )
    for entry in (OPEN, SECRET, SOURCE):
        await register(node, provider, entry)
    duplicate = await refused(register(node, provider, SECOND))
    assert duplicate.code() == grpc.StatusCode.FAILED_PRECONDITION

    # The provider: a batch, one with an item outside the catalog, one changing a stored record.
    [ack] = await submit(node, provider, "b1", [ACME])
    assert ack.accepted == 1
    [ack] = await submit(node, provider, "b2", [OTHER | {"zzz": "目录外"}])
    assert ack.rejected == 1
    [ack] = await submit(node, provider, "b3", [ACME | {"qymc": "福州新名称有限公司"}])
    assert len(ack.held_records) == 1  # held for approval (第四十一条)
    # ... and the authority rejects that change.
    held = ack.held_records[0].change_request_id
    await access(
        node,
        boss,
        "ReviewChangeRequest",
        access_pb2.ReviewChangeRequestRequest(
            id=held, decision=common_pb2.REVIEW_DECISION_REJECT, comment="不予更改"
        ),
    )

    # The consumer: a Verify without a grant, a level-4 item outside its grant, and the deletion
    # of a record it does not provide.
    await refused(sharing(node, civil, "Verify", verify(SECRET.resource_code, qymc="x")))
    applied = (
        await access(
            node,
            civil,
            "Apply",
            apply_request(
                SECRET.resource_code, items=("tyshxydm", "qymc"), methods=(M.SHARE_METHOD_QUERY,)
            ),
        )
    ).application
    await access(node, boss, "ReviewApplication", approve(applied.id))
    protected = await refused(
        sharing(node, civil, "Query", query(SECRET.resource_code, items=("sfzh",)))
    )
    assert protected.code() == grpc.StatusCode.PERMISSION_DENIED
    deletion = await refused(
        access(
            node,
            civil,
            "RequestRecordChange",
            access_pb2.RequestRecordChangeRequest(
                target=access_pb2.CHANGE_TARGET_RECORD,
                action=access_pb2.CHANGE_ACTION_DELETE,
                resource_code=OPEN.resource_code,
                key={"tyshxydm": ACME["tyshxydm"]},
                reason="删除",
            ),
        )
    )
    assert deletion.code() == grpc.StatusCode.PERMISSION_DENIED
    await sharing(node, civil, "Query", query(OPEN.resource_code))  # a use within the rules

    # The authority reads the consumer's report.
    reply = await report_of(node, boss, CIVIL_AFFAIRS)
    report = reply.report
    assert report.report_id.startswith(f"{PROVINCE}-R-") and report.agency_code == CIVIL_AFFAIRS
    assert [f.term for f in report.figures] == [
        "擅自扩大数据采集范围",
        "重复采集数据",
        "未在规定期限内汇聚数据",
        "未按照规定使用共享数据",
        "违规使用商业秘密、个人隐私数据",
        "擅自更改或者删除政务数据",
        "纠错逾期未改",
        "数据质量等级",
    ]
    counts = figures(report)
    # Share calls: the Verify, the protected Query, the lawful Query.
    assert counts[V.VIOLATION_KIND_MISUSE_OF_SHARED_DATA] == (1, 3)
    assert counts[V.VIOLATION_KIND_MISUSE_OF_PROTECTED_DATA] == (1, 3)
    assert counts[V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION] == (1, 1)
    assert counts[V.VIOLATION_KIND_OUT_OF_CATALOG_COLLECTION] == (0, 0)
    assert counts[V.VIOLATION_KIND_LATE_AGGREGATION] == (0, 0)  # provides nothing
    # No error report (纠错) fell due on its resources: counted, none.
    assert counts[V.VIOLATION_KIND_OVERDUE_CORRECTIONS] == (0, 0)
    mine = await records_of(node, CIVIL_URI)
    verify_rec = one(mine, "/Verify", "PERMISSION_DENIED")
    protected_rec = one(mine, "/Query", "PERMISSION_DENIED")
    delete_rec = one(mine, "/RequestRecordChange", "PERMISSION_DENIED")
    lawful = one(mine, "/Query", "OK")
    assert protected_rec.detail.get("protected_items") == 1
    found = {(f.kind, f.audit_sequence) for f in report.findings}
    assert found == {
        (V.VIOLATION_KIND_MISUSE_OF_SHARED_DATA, verify_rec.sequence),
        (V.VIOLATION_KIND_MISUSE_OF_PROTECTED_DATA, protected_rec.sequence),
        (V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION, delete_rec.sequence),
    }
    shared = next(f for f in report.figures if f.kind == V.VIOLATION_KIND_MISUSE_OF_SHARED_DATA)
    assert (shared.first_sequence, shared.last_sequence) == (verify_rec.sequence, lawful.sequence)
    finding = next(f for f in report.findings if f.audit_sequence == protected_rec.sequence)
    assert finding.description.startswith("涉及个人隐私或商业秘密的数据请求被拒绝: Query items: ")
    assert finding.resource_code == SECRET.resource_code

    # The agency reads its own report; pages of one finding continue on the stored report.
    own = await report_of(node, civil, CIVIL_AFFAIRS, page_size=1)
    assert len(own.report.findings) == 1 and own.next_page_token
    second = await report_of(
        node,
        civil,
        "",
        report_id=own.report.report_id,
        page_size=1,
        page_token=own.next_page_token,
    )
    assert second.report.report_id == own.report.report_id
    assert second.report.findings[0] != own.report.findings[0]
    only = await report_of(
        node, civil, CIVIL_AFFAIRS, kind=V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION
    )
    assert [f.audit_sequence for f in only.report.findings] == [delete_rec.sequence]

    # Another agency may not read it, nor read the stored report by id.
    for call in (
        report_of(node, provider, CIVIL_AFFAIRS),
        report_of(node, provider, "", report_id=own.report.report_id),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == (
            f"the compliance report of agency {CIVIL_AFFAIRS} is read by the agency itself, the "
            f"data management authority of region {PROVINCE} and the province's authority "
            f"(第八条); {PROVIDER_URI} is none of them"
        )

    # The provider's own report: the undeclared item, the held change and its rejection, the
    # 一数一源 claim, and its resources late (published in 2025 with a daily cycle, first
    # aggregated today).
    provided = (await report_of(node, provider, PUBLIC_SECURITY)).report
    counts = figures(provided)
    assert counts[V.VIOLATION_KIND_OUT_OF_CATALOG_COLLECTION] == (1, 3)
    assert counts[V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION] == (2, 4)
    assert counts[V.VIOLATION_KIND_DUPLICATE_COLLECTION] == (1, 4)
    assert counts[V.VIOLATION_KIND_LATE_AGGREGATION] == (3, 3)
    theirs = await records_of(node, PROVIDER_URI)
    batches = {
        r.detail["batch_id"]: r.sequence
        for r in theirs
        if r.method.endswith("/Submit") and "batch_id" in r.detail
    }
    claim = one(theirs, "/RegisterResource", "FAILED_PRECONDITION")
    [review] = [
        r
        for r in await AuditLog(node.db).query(limit=500)
        if r.method.endswith("/ReviewChangeRequest")
    ]
    assert review.detail["provider"] == PUBLIC_SECURITY
    found = {(f.kind, f.audit_sequence) for f in provided.findings}
    assert (V.VIOLATION_KIND_OUT_OF_CATALOG_COLLECTION, batches["b2"]) in found
    assert (V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION, batches["b3"]) in found
    assert (V.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION, review.sequence) in found
    assert (V.VIOLATION_KIND_DUPLICATE_COLLECTION, claim.sequence) in found
    assert (V.VIOLATION_KIND_LATE_AGGREGATION, batches["b1"]) in found  # came late
    assert (V.VIOLATION_KIND_LATE_AGGREGATION, 0) in found  # never came

    # Refusals of bad requests name the field.
    for fields, message in (
        ({"agency_code": "nope"}, "agency_code: 'nope' must be 18 characters, got 4 (GB 32100)"),
        ({"agency_code": ""}, "agency_code is required (the agency's 统一社会信用代码)"),
        (
            {"report_id": "350000-R-" + "0" * 16, "agency_code": ""},
            f"compliance report '350000-R-{'0' * 16}' does not exist on this node",
        ),
        (
            {"page_token": "abc"},
            "page_token: pages continue a stored report; send it with report_id",
        ),
        (
            {"period_end": ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=800))},
            "period: the end must be after the start",
        ),
    ):
        code = fields.pop("agency_code", CIVIL_AFFAIRS)
        err = await refused(report_of(node, boss, str(code), **fields))
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert err.details() == message


async def test_cli_report_and_recount_from_the_audit_log(province: Province) -> None:
    setup, node = province
    config = setup.config_path
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, OPEN)
    await submit(node, provider, "b1", [ACME])
    await submit(node, provider, "b2", [OTHER | {"zzz": "目录外"}])
    today = dt.datetime.now(CST).date()
    period = f"{today}..{today + dt.timedelta(days=1)}"

    code, out, errors = await cli(
        "supervision", "report", "--config", config, "--agency", PUBLIC_SECURITY, "--period", period
    )
    assert code == 0, errors
    assert out.startswith("合规报告 350000-R-")
    theirs = await records_of(node, PROVIDER_URI)
    b2 = next(r.sequence for r in theirs if r.detail.get("batch_id") == "b2")
    b1 = next(r.sequence for r in theirs if r.detail.get("batch_id") == "b1")
    [line] = [x for x in out.splitlines() if x.startswith("  擅自扩大数据采集范围 ")]
    assert line.split() == ["擅自扩大数据采集范围", "1/2", f"#{b1}-#{b2}"]
    assert f"擅自扩大数据采集范围  #{b2}" in out  # the finding, with its record

    code, out, errors = await cli(
        "supervision",
        "report",
        "--config",
        config,
        "--agency",
        PUBLIC_SECURITY,
        "--period",
        period,
        "--json",
    )
    assert code == 0, errors
    data = json.loads(out)
    figure = next(f for f in data["figures"] if f["kind"] == "out_of_catalog")
    assert (figure["numerator"], figure["denominator"], figure["sequences"]) == (1, 2, [b1, b2])
    report_id = data["id"]

    # Activity after the report does not change its recount: it stops at the report's head.
    await submit(node, provider, "b3", [OTHER | {"yyy": "目录外"}])
    code, out, errors = await cli(
        "supervision", "recount", "--config", config, "--report", report_id
    )
    assert code == 0, (out, errors)
    assert out.startswith(f"{report_id}: every figure matches (8 figures; audit chain verified")

    # Whoever rewrites an audit record the report rests on is caught by the chain.
    async with node.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE audit_record SET message = 'nothing' WHERE sequence = :s"), {"s": b2}
        )
    code, out, errors = await cli(
        "supervision", "recount", "--config", config, "--report", report_id
    )
    assert code == 1
    assert f"does not verify at record #{b2}" in out

    result = govnode("supervision", "recount", "--config", config, "--report", "nope")
    assert_one_line_error(result, "compliance report 'nope' does not exist on this node")
    result = govnode(
        "supervision", "report", "--config", config, "--agency", PUBLIC_SECURITY, "--period", "x"
    )
    assert_one_line_error(result, "period: 'x' is neither a month")
    result = govnode(
        "supervision",
        "report",
        "--config",
        config,
        "--agency",
        PUBLIC_SECURITY,
        "--period",
        "2026-01-01..2028-01-01",
    )
    assert_one_line_error(result, "period: at most 366 days in one report")


async def test_the_agencies_reported_on_are_the_providers_of_the_region(
    database: Database,
) -> None:
    catalog = Catalog(database, node_region=NODE_REGION)
    providers = [agency_code(1), agency_code(1), agency_code(2)]
    for n, provider in enumerate(providers, start=1):
        await catalog.register(agency(provider), make_entry(n, provider))
    supervision = Supervision(
        database,
        AuditLog(database),
        node_region=NODE_REGION,
        trust_domain=TRUST_DOMAIN,
        overdue_corrections=None,
    )
    codes = sorted(set(providers))
    assert await supervision.agencies() == (codes, False)
    assert await supervision.agencies(limit=1) == (codes[:1], True)
    assert await supervision.agencies(offset=1, limit=1) == (codes[1:], False)


async def test_new_reports_are_limited_per_caller_and_reading_stored_ones_is_not(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    limits = setup.config.supervision.model_copy(update={"reports_per_caller_per_hour": 2})
    node = await start_node(setup.config.model_copy(update={"supervision": limits}))
    try:
        civil, boss = setup.agency(CIVIL_AFFAIRS), setup.authority()
        first = await report_of(node, civil, CIVIL_AFFAIRS)
        await report_of(node, civil, CIVIL_AFFAIRS)
        err = await refused(report_of(node, civil, CIVIL_AFFAIRS))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = err.details() or ""
        assert details.startswith(
            "compliance reports: at most 2 new reports an hour per caller (each counts the "
            "audit log over its period); read a stored one with report_id, or retry in "
        )
        assert 25 * 60_000 <= int(retry_after_ms(err) or 0) <= 30 * 60_000 + 1_000
        # A stored report is still read, and the authority has a budget of its own.
        again = await report_of(node, civil, "", report_id=first.report.report_id)
        assert again.report.report_id == first.report.report_id
        assert (await report_of(node, boss, CIVIL_AFFAIRS)).report.report_id
        refusals = [
            r
            for r in await records_of(node, CIVIL_URI)
            if r.method.endswith("/GetComplianceReport") and r.outcome == "RESOURCE_EXHAUSTED"
        ]
        assert len(refusals) == 1
    finally:
        await node.stop(grace=0)


def test_the_node_counts_at_most_so_many_reports_at_once() -> None:
    admission = ReportAdmission(per_caller_per_hour=0, at_once=1)
    with admission.admitted("spiffe://350000.fujian.gov.cn/agency/a"):
        with (
            pytest.raises(ResourceExhausted) as busy,
            admission.admitted("spiffe://350000.fujian.gov.cn/agency/b"),
        ):
            pass  # pragma: no cover - refused before
        assert busy.value.message == (
            "compliance reports: 1 are being counted on this node now (at most 1 at once); "
            "retry in 2 s"
        )
        assert busy.value.retry_after_s == 2.0
    with admission.admitted("spiffe://350000.fujian.gov.cn/agency/b"):
        assert admission.counting == 1
    assert admission.counting == 0
