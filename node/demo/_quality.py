"""Steps [20] to [23] of the demo: data quality, error correction and supervision (第八、十五、
十六、四十一、四十二条), with 福州 and 厦门 still serving.

[20] the province checks 人口基础信息 now, as ``govnode quality check`` does, and its provider
reads the report (GetQualityReport): each GB/T 36344 dimension, the grade, an indicator as A/B.
[21] 厦门市民政局, which received a 福州 record in step [12], reports it wrong at 厦门 (纠错); the
report is made at 福州 and the record is marked disputed for every consumer on every node.
[22] 福州's provider asks for the correction, 福州's authority approves it (第四十一条), and the
correction notice reaches 厦门市民政局 at its own node. [23] the province's authority reads 福建省
民政厅's compliance report and orders it to rectify (责令限期改正). [24] the province's node
certifies 福建省公安厅's project on 人口基础信息 for its approval and finance departments
(第九、二十二条), and the certificate is checked offline with the root alone, then refused once
one byte of it is altered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    common_pb2,
    quality_pb2,
    quality_pb2_grpc,
    sharing_pb2,
    sharing_pb2_grpc,
    supervision_pb2,
    supervision_pb2_grpc,
)

from gateway.channel import secure_channel
from gateway.identity import Role, make_identity
from gateway.tls import TlsFiles
from node.app import RunningNode, quality_of, supervision_of
from node.catalog import Catalog, ResourceEntry
from node.codes import make_credit_code
from node.config import NodeConfig
from node.federation import Router
from node.pki import load_certs, load_chain_pem, load_private_key
from node.quality import GRADE_BANDS, grade_of
from node.supervision import (
    CertificateError,
    Certifier,
    CertifySettings,
    NodeSigner,
    check_certificate,
)
from node.times import CST

if TYPE_CHECKING:
    from node.demo._federation import City
    from node.demo._main import Demo

#: The 福州 resource and record of steps [11] and [12], which 厦门市民政局 received.
FUZHOU_CODE = "350100-1-000001"
ACME = make_credit_code("91350100000000001")
OLD_NAME = "福州某某信息技术有限公司"
NEW_NAME = "福州某某数字科技有限公司"
#: A third consumer, at the province: 福建省市场监督管理局 verifies the 福州 record.
THIRD = "113500000035910027"
#: The agency with real findings: 福建省民政厅's refused calls of steps [4] and [8].
CIVIL = "11350000003591003A"
#: How long the correction notice may take to travel 福州 → province → 厦门.
DELIVERED_WITHIN_S = 20.0
KIND = access_pb2.NotificationKind


async def show_quality_and_supervision(
    demo: Demo,
    province: RunningNode,
    province_config: NodeConfig,
    people: ResourceEntry,
    fuzhou: City,
    xiamen: City,
) -> None:
    """Steps [20] to [23]; ``people`` is the province's 人口基础信息, whose records step [7]
    submitted with two refusals."""
    await _quality_report(demo, province, province_config, people)
    demo.say("")
    report_id = await _report_error(demo, province, xiamen)
    demo.say("")
    await _correction(demo, province, fuzhou, xiamen, report_id)
    demo.say("")
    await _compliance(demo, province)
    demo.say("")
    await _certificate(demo, province, province_config, people)


async def _call(address: str, files: TlsFiles, stub: Any, method: str, request: Any) -> Any:
    async with secure_channel(address, files, timeout=10) as channel:
        return await getattr(stub(channel), method)(request)


def _graded(grade: str) -> str:
    """A grade with its term, e.g. ``B (良)``."""
    return f"{grade} ({next(term for _, g, term in GRADE_BANDS if g.value == grade)})"


async def _quality_report(
    demo: Demo, province: RunningNode, config: NodeConfig, people: ResourceEntry
) -> None:
    """[20]: measured now, as the CLI measures (the node itself checks daily), then read."""
    say = demo.say
    code, provider = people.resource_code, people.provider_code
    say(
        f"[20] Data quality (第十五、十六条): {people.name} is checked now (as govnode quality "
        f"check does); its provider {demo.names[provider]} reads the report (GetQualityReport)"
    )
    router = Router(config, province.db, province.forwarder) if province.forwarder else None
    quality = quality_of(
        config,
        province.db,
        Catalog(province.db, node_region=config.node.region),
        province.audit,
        router,
    )
    authority = make_identity(config.node.region, config.node.trust_domain, Role.AUTHORITY)
    await quality.check(code, authority.uri)
    reply = await _call(
        province.address,
        demo.agency_files(provider),
        quality_pb2_grpc.QualityServiceStub,
        "GetQualityReport",
        quality_pb2.GetQualityReportRequest(resource_code=code),
    )
    r = reply.report
    level = quality_pb2.QualityLevel.Name(r.level).removeprefix("QUALITY_LEVEL_").lower()
    when = r.generated_at.ToDatetime(tzinfo=dt.UTC).astimezone(CST)
    say(
        f"  ✓ {people.name} ({code}): grade {_graded(r.grade)}, overall "
        f"{r.overall_score:.2f}, {level} (warn below {r.warn_below:g}, critical below "
        f"{r.critical_below:g}); {r.records} records, checked {when:%Y-%m-%d %H:%M} CST"
    )
    dims = [
        f"{d.term} {d.score:.2f} {grade_of(d.score).value}" if d.measured else f"{d.term} —"
        for d in r.dimensions
    ]
    say("      " + " · ".join(dims[:3]))
    say("      " + " · ".join(dims[3:]))
    for dimension in r.dimensions:
        for i in dimension.indicators:
            if i.code == "010400":
                say(
                    f"      {i.code} {dimension.term} · {i.name}: {i.numerator}/{i.denominator}"
                    f" = {i.score:.2f}: {i.counted}"
                )


async def _report_error(demo: Demo, province: RunningNode, xiamen: City) -> str:
    """[21]: a report made at 厦门, routed to 福州; the mark seen at the province and 厦门."""
    say = demo.say
    say(
        f"[21] 纠错 (第十六条): {xiamen.agency_name}, which received a 福州 record in step [12], "
        "reports it wrong at 厦门; the record is marked disputed on every node"
    )
    made = await _call(
        xiamen.node.address,
        xiamen.agency,
        quality_pb2_grpc.QualityServiceStub,
        "ReportDataError",
        quality_pb2.ReportDataErrorRequest(
            resource_code=FUZHOU_CODE,
            key={"tyshxydm": ACME},
            item="dwmc",
            description="单位名称已于上月变更，记录仍为旧名称",
            suggested_value=NEW_NAME,
            evidence="营业执照（变更后）所载名称",
            request_id="demo-error-1",
        ),
    )
    report = made.report
    due = report.due_at.ToDatetime(tzinfo=dt.UTC).astimezone(CST)
    say(
        f"  ✓ ReportDataError at 厦门, made at 福州: report {report.id} "
        f"({quality_pb2.DataErrorStatus.Name(report.status).removeprefix('DATA_ERROR_STATUS_')}, "
        f"due {due:%Y-%m-%d}): dwmc of {ACME} should read {NEW_NAME}"
    )
    verify = await _call(
        province.address,
        demo.agency_files(THIRD),
        sharing_pb2_grpc.SharingServiceStub,
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=FUZHOU_CODE, key={"tyshxydm": ACME}, claimed={"dwmc": OLD_NAME}
        ),
    )
    mark = verify.dispute
    since = mark.since.ToDatetime(tzinfo=dt.UTC).astimezone(CST)
    say(
        f"  ✓ {demo.names[THIRD]} verifies it through the province: all_match="
        f"{verify.all_match}, DataDispute: report {', '.join(mark.report_ids)}, items "
        f"{', '.join(mark.items)}, since {since:%H:%M:%S}, {mark.open_reports} open"
    )
    page = await _call(
        xiamen.node.address,
        xiamen.agency,
        sharing_pb2_grpc.SharingServiceStub,
        "Query",
        sharing_pb2.QueryRequest(resource_code=FUZHOU_CODE, key={"tyshxydm": ACME}),
    )
    row = page.rows[0]
    say(
        f"  ✓ {xiamen.agency_name}'s Query at 厦门 carries the same mark: "
        f"{row.record.values['dwmc']} disputed by {', '.join(row.dispute.report_ids)} "
        f"(items {', '.join(row.dispute.items)})"
    )
    return str(report.id)


async def _correction(
    demo: Demo, province: RunningNode, fuzhou: City, xiamen: City, report_id: str
) -> None:
    """[22]: corrected through an approved change request; the notices reach 厦门."""
    say = demo.say
    assert fuzhou.authority is not None, "issued in step [14]"
    say(
        "[22] Correction (第十六、四十一条): 福州's provider asks for it, 福州's authority "
        "approves it, and whoever received the disputed record is told"
    )
    asked = await _call(
        fuzhou.node.address,
        fuzhou.agency,
        quality_pb2_grpc.QualityServiceStub,
        "ResolveDataError",
        quality_pb2.ResolveDataErrorRequest(
            id=report_id,
            resolution=quality_pb2.DATA_ERROR_STATUS_CORRECTED,
            corrected_values={"dwmc": NEW_NAME},
            note="依变更登记通知书更正",
            request_id="demo-correct-1",
        ),
    )
    change = asked.report.change_request_id
    say(
        f"  ✓ {fuzhou.agency_name} resolves {report_id} CORRECTED (dwmc → {NEW_NAME}): change "
        f"request {change}; the record stays disputed until it is approved"
    )
    reviewed = await _call(
        fuzhou.node.address,
        fuzhou.authority,
        access_pb2_grpc.AccessServiceStub,
        "ReviewChangeRequest",
        access_pb2.ReviewChangeRequestRequest(
            id=change, decision=common_pb2.REVIEW_DECISION_APPROVE, comment="同意，已核变更登记"
        ),
    )
    approved_at = time.monotonic()
    got = await _call(
        fuzhou.node.address,
        fuzhou.agency,
        quality_pb2_grpc.QualityServiceStub,
        "GetDataError",
        quality_pb2.GetDataErrorRequest(id=report_id),
    )
    status = quality_pb2.DataErrorStatus.Name(got.report.status).removeprefix("DATA_ERROR_STATUS_")
    say(
        f"  ✓ 福州's authority approved it (ReviewChangeRequest): the record is now version "
        f"{reviewed.change_request.applied_version}; the report is {status} "
        f"(version {got.report.corrected_version})"
    )
    notices = await _delivered(xiamen, report_id)
    took = time.monotonic() - approved_at
    say(
        f"  ✓ at 厦门, {xiamen.agency_name}'s ListNotifications, delivered from 福州 through the "
        f"province {took:.1f} s after the approval:"
    )
    for n in notices:
        kind = KIND.Name(n.kind).removeprefix("NOTIFICATION_KIND_")
        say(f"      {kind} (from {n.origin_region}, report {n.data_error_id}): {n.message}")
    after = await _call(
        province.address,
        demo.agency_files(THIRD),
        sharing_pb2_grpc.SharingServiceStub,
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=FUZHOU_CODE, key={"tyshxydm": ACME}, claimed={"dwmc": NEW_NAME}
        ),
    )
    say(
        f"  ✓ {demo.names[THIRD]}'s next Verify of the new name: all_match={after.all_match}, "
        f"disputed={after.HasField('dispute')}"
    )


async def _delivered(city: City, report_id: str) -> list[Any]:
    """The reporter's DATA_CORRECTED and DATA_ERROR_RESOLVED notices at its own node, waiting
    (bounded) for them to travel 福州 → province → 厦门."""
    wanted = {KIND.NOTIFICATION_KIND_DATA_CORRECTED, KIND.NOTIFICATION_KIND_DATA_ERROR_RESOLVED}
    request = access_pb2.ListNotificationsRequest(kinds=sorted(wanted), page_size=100)
    deadline = time.monotonic() + DELIVERED_WITHIN_S
    async with secure_channel(city.node.address, city.agency, timeout=10) as channel:
        stub = access_pb2_grpc.AccessServiceStub(channel)
        while True:
            listed = await stub.ListNotifications(request)
            found = [n for n in listed.notifications if n.data_error_id == report_id]
            if {n.kind for n in found} == wanted:
                return sorted(found, key=lambda n: -n.kind)  # DATA_CORRECTED first
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the notices of {report_id} did not reach {city.name} within "
                    f"{DELIVERED_WITHIN_S:g} s: {found}"
                )
            await asyncio.sleep(0.1)


async def _compliance(demo: Demo, province: RunningNode) -> None:
    """[23]: a compliance report with real findings, and a rectification notice on one."""
    say = demo.say
    name = demo.names[CIVIL]
    say(
        f"[23] Supervision (第八、四十二条): the 福建省 authority's compliance report on {name} "
        "for the last 24 hours, and a rectification notice (责令限期改正)"
    )
    end = dt.datetime.now(dt.UTC)
    request = supervision_pb2.GetComplianceReportRequest(agency_code=CIVIL)
    request.period_start.FromDatetime(end - dt.timedelta(days=1))
    request.period_end.FromDatetime(end)
    reply = await _call(
        province.address,
        demo.authority,
        supervision_pb2_grpc.SupervisionServiceStub,
        "GetComplianceReport",
        request,
    )
    report = reply.report
    say(
        f"  ✓ report {report.report_id}: audit records #{report.window_first_sequence}-"
        f"#{report.window_last_sequence} (head #{report.audit_head_size} "
        f"{report.audit_head_hash[:12]}…); findings / occasions, audit sequences:"
    )
    for f in report.figures:
        where = f"#{f.first_sequence}-#{f.last_sequence}" if f.first_sequence else "—"
        extra = ", unmeasured" if not f.measured else f", grade {f.grade}" if f.grade else ""
        say(f"      {f.term} {f.numerator}/{f.denominator} {where}{extra}")
    misuse = supervision_pb2.VIOLATION_KIND_MISUSE_OF_SHARED_DATA
    for x in (x for x in report.findings if x.kind == misuse):
        say(f"      finding #{x.audit_sequence} {x.resource_code}: {x.description[:90]}")
    deadline = end + dt.timedelta(days=30)
    issue = supervision_pb2.IssueRectificationNoticeRequest(
        agency_code=CIVIL,
        kind=misuse,
        note="停止未经批准调用有条件共享、暂不共享资源，30日内报送整改情况",
    )
    issue.deadline.FromDatetime(deadline)
    notice = (
        await _call(
            province.address,
            demo.authority,
            supervision_pb2_grpc.SupervisionServiceStub,
            "IssueRectificationNotice",
            issue,
        )
    ).notice
    status = supervision_pb2.RectificationStatus.Name(notice.status).removeprefix(
        "RECTIFICATION_STATUS_"
    )
    say(
        f"  ✓ IssueRectificationNotice: {notice.id} on 未按照规定使用共享数据, deadline "
        f"{deadline.astimezone(CST):%Y-%m-%d %H:%M} CST, {status}"
    )
    listed = await _call(
        province.address,
        demo.agency_files(CIVIL),
        access_pb2_grpc.AccessServiceStub,
        "ListNotifications",
        access_pb2.ListNotificationsRequest(kinds=[KIND.NOTIFICATION_KIND_RECTIFICATION_NOTICE]),
    )
    for n in listed.notifications:
        say(f"  ✓ {name}'s ListNotifications: RECTIFICATION_NOTICE: {n.message}")


async def _certificate(
    demo: Demo, province: RunningNode, config: NodeConfig, people: ResourceEntry
) -> None:
    """[24]: a project acceptance certificate, issued as ``govnode supervision certify`` issues
    it, then checked as ``govnode supervision check-certificate`` checks it: offline."""
    say = demo.say
    agency, code = people.provider_code, people.resource_code
    project = "人口信息共享应用项目"
    say(
        f"[24] Project acceptance evidence (第九、二十二条): the province's node certifies "
        f"{demo.names[agency]}'s {project} ({people.name}) for the approval and finance "
        "departments, who check it offline"
    )
    root = load_certs(config.path(config.tls.root))[0]
    chain_pem = load_chain_pem(config.path(config.tls.cert), root)
    td = config.node.trust_domain
    node = make_identity(config.node.region, td, Role.NODE)
    section = config.supervision
    certifier = Certifier(
        supervision_of(config, province.db, province.audit),
        NodeSigner(node.uri, load_private_key(config.path(config.tls.key)), chain_pem),
        CertifySettings(
            min_grade=section.certify_min_grade,
            max_check_age_days=section.certify_max_check_age_days,
            criticism_days=section.certify_criticism_days,
            certificate_days=section.certificate_days,
        ),
    )
    authority = make_identity(config.node.region, td, Role.AUTHORITY)
    made, document = await certifier.certify(agency, project, [code], authority.uri)
    path = demo.base / "certificate.json"
    path.write_bytes(document)
    say(
        f"  ✓ govnode supervision certify: {made.serial}, valid until "
        f"{made.valid_until.astimezone(CST):%Y-%m-%d} → {path}"
    )
    now = dt.datetime.now(dt.UTC)
    checked = check_certificate(path.read_bytes(), root, td, now)
    graded = ", ".join(f"{r.code} grade {r.grade}" for r in checked.resources)
    say(
        f"  ✓ checked offline with the root certificate only: signed by {checked.node}; "
        f"{graded}; registered, aggregated on time, quality, no open rectification, no overdue "
        f"纠错: all ok; audit log at {checked.audit_size} records"
    )
    # The project's name in the signed text, one character changed (一期 → 二期 of a project).
    altered = document.decode().replace(f"project {project}", f"project {project[:-1]}期", 1)
    if altered.encode() == document:
        raise AssertionError("the certificate does not name the project")
    try:
        check_certificate(altered.encode(), root, td, now)
    except CertificateError as exc:
        say(
            f"  ✓ the same file with one character of the project's name altered: refused "
            f"({exc.check} check: {str(exc)[:60]})"
        )
    else:
        raise AssertionError("an altered certificate was accepted")
