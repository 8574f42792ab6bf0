"""``govnode supervision report|recount``: compliance reports of this node's agencies
(监督检查, 第八、四十二条), on the node's database (the node may be serving), as this region's
data management authority.

``certify`` issues a project acceptance certificate (第九、二十二条), signed by the node key,
or refuses naming every condition that fails; ``check-certificate`` verifies one offline with
the province root certificate alone.

``report`` counts an agency's figures over a period now, stores the report (with the audit
head it was computed at) and prints it; it is audited (分析). ``recount`` verifies the audit
chain over a stored report's range and counts its figures again from the log: exit 0 when
every figure matches, 1 naming those that differ (or the break in the chain).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from cryptography import x509

from gateway.identity import Role, make_identity
from node.audit import read_log_signer
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_storage
from node.config import Mode, NodeConfig
from node.errors import DomainError
from node.pki import PkiError, load_certs, load_chain_pem, load_private_key
from node.sharing import Notifications
from node.supervision import (
    MAX_CERTIFICATE_BYTES,
    UNMEASURED,
    Certificate,
    CertificateError,
    Certifier,
    CertifySettings,
    CityTable,
    ComplianceReport,
    Figure,
    Kind,
    NodeSigner,
    Notice,
    NoticeStatus,
    Rectifications,
    Supervision,
    check_certificate,
    parse_period,
)
from node.terminal import safe_text
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Supervision of this node's agencies (第八、四十二条): compliance reports counted from "
        "the audit log, and their recount; rectification notices (责令限期改正 → 通报批评); "
        "project acceptance certificates (第九、二十二条) and their offline check."
    ),
    no_args_is_help=True,
)


def _run(cfg: NodeConfig, work: Callable[[Supervision, str], Awaitable[T]]) -> T:
    async def main() -> T:
        from node.app import supervision_of

        async with node_storage(cfg) as (db, audit):
            authority = make_identity(cfg.node.region, cfg.node.trust_domain, Role.AUTHORITY)
            return await work(supervision_of(cfg, db, audit), authority.uri)

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise UserError(exc.message) from None


def _when(moment: Any) -> str:
    return str(moment.astimezone(CST).strftime("%Y-%m-%d %H:%M CST"))


def _range(figure: Figure) -> str:
    return f"#{figure.first}-#{figure.last}" if figure.first else "—"


def _ratio(figure: Figure) -> str:
    return f"{figure.numerator}/{figure.denominator}"


def _lines(report: ComplianceReport) -> list[str]:
    lines = [
        f"合规报告 {report.id}  单位 {report.agency_code}",
        f"  期间 {_when(report.period_start)} 至 {_when(report.period_end)}（不含）；"
        f"生成于 {_when(report.generated_at)}；审计日志 #{report.window_first}-"
        f"#{report.window_last}，链头 #{report.head_size} {report.head_hash[:16]}",
        f"  {'指标':<16}{'违规/总数':>10}  审计序号范围",
    ]
    for f in report.figures:
        extra = (
            "  未计量 (本节点未接入纠错)"
            if f.value == UNMEASURED
            else f"  等级 {f.value or '—'}"
            if f.kind is Kind.QUALITY
            else ""
        )
        noted = f"  另有临时采集 {f.noted}" if f.noted else ""
        lines.append(f"  {f.kind.term:<16}{_ratio(f):>10}  {_range(f)}{extra}{noted}")
    if report.findings:
        lines.append("  发现")
        for x in report.findings:
            where = f"#{x.sequence}" if x.sequence else "—"
            lines.append(
                f"    {x.kind.term}  {where}  {_when(x.at)}  {x.resource_code or '—'}  "
                f"{x.description}"
            )
    return lines


def _json(report: ComplianceReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "agency_code": report.agency_code,
        "period_start": report.period_start.isoformat(),
        "period_end": report.period_end.isoformat(),
        "generated_at": report.generated_at.isoformat(),
        "audit_head": {"size": report.head_size, "hash": report.head_hash},
        "window": [report.window_first, report.window_last],
        "figures": [
            {
                "kind": f.kind.value,
                "term": f.kind.term,
                "numerator": f.numerator,
                "denominator": f.denominator,
                "sequences": [f.first, f.last],
                "noted": f.noted,
                "grade": "" if f.value == UNMEASURED else f.value,
                "measured": f.value != UNMEASURED,
            }
            for f in report.figures
        ],
        "findings": [
            {
                "kind": x.kind.value,
                "sequence": x.sequence,
                "at": x.at.isoformat(),
                "resource_code": x.resource_code,
                "description": x.description,
                "request_id": x.request_id,
            }
            for x in report.findings
        ],
    }


@app.command("report")
def report(
    agency: str = typer.Option(..., "--agency", help="The agency's 统一社会信用代码."),
    period: str = typer.Option(
        ...,
        "--period",
        help="A month (2026-11) or days, end exclusive (2026-11-01..2026-12-01), China time.",
    ),
    json_out: bool = typer.Option(False, "--json", help="The report as one JSON object."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Count an agency's compliance figures over a period now, store the report and print it:
    each figure of 第四十二条 as violations/total with the audit sequences it was counted from,
    then the findings."""
    cfg = load(config)

    async def work(supervision: Supervision, by: str) -> ComplianceReport:
        start, end = parse_period(period)
        return await supervision.generate(agency, start, end, by, audit_it=True)

    made = _run(cfg, work)
    if json_out:
        echo(json.dumps(_json(made), ensure_ascii=False, sort_keys=True))
        return
    for line in _lines(made):
        echo(line)


@app.command("recount")
def recount(
    report_id: str = typer.Option(..., "--report", help="The report's id (<region>-R-<hex>)."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Verify the audit chain over a stored report's range, then count its figures again from
    the audit log. Exit 0 when every figure matches; 1 naming each that differs."""
    cfg = load(config)

    def progress(checked: int) -> None:
        print(f"verified {checked} audit records", file=sys.stderr, flush=True)

    result = _run(cfg, lambda supervision, _: supervision.recount(report_id, progress))
    if not result.chain.ok:
        echo(
            f"{report_id}: the audit chain over #{result.first}-#{result.last} does not verify "
            f"at record #{result.chain.first_bad_sequence}: {result.chain.reason}"
        )
        raise typer.Exit(1)
    span = f"#{result.first}-#{result.last}" if result.first else "no audit records"
    if result.matches:
        echo(
            f"{report_id}: every figure matches ({len(result.report.figures)} figures; audit "
            f"chain verified over {span})"
        )
        return
    for stored, again in result.differences:
        echo(
            f"{report_id}: {stored.kind.value} ({stored.kind.term}) differs: stored "
            f"{_ratio(stored)} {_range(stored)}{' ' + stored.value if stored.value else ''}, "
            f"recounted {_ratio(again)} {_range(again)}{' ' + again.value if again.value else ''}"
        )
    raise typer.Exit(1)


notices_app = typer.Typer(
    help="Rectification notices (责令限期改正) and their outcome (已改正, or 通报批评).",
    no_args_is_help=True,
)
app.add_typer(notices_app, name="notices")


def _deadline(text: str) -> dt.datetime:
    """A day (YYYY-MM-DD: the end of that day, China Standard Time) or an ISO 8601 time with
    its offset."""
    try:
        if len(text) == len("2026-12-31"):
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), CST)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--deadline: {text[:40]!r} is neither a day (2026-12-31) nor a time with its offset "
            "(2026-12-31T18:00:00+08:00)"
        ) from None
    if moment.tzinfo is None:
        raise UserError("--deadline: a time needs its offset, e.g. +08:00")
    return moment


def _kind(text: str) -> Kind:
    try:
        return Kind(text)
    except ValueError:
        names = ", ".join(k.value for k in Kind)
        raise UserError(f"--finding: {text[:40]!r} is not one of {names}") from None


def _notice_line(n: Notice) -> str:
    closed = f"  {_when(n.closed_at)} {n.outcome}" if n.closed_at is not None else ""
    return (
        f"{n.id}  {n.agency_code}  {n.kind.value} ({n.kind.term})  {n.status.value}  "
        f"限期 {_when(n.deadline)}  下达 {_when(n.issued_at)}{closed}  {n.note}"
    )


@app.command("notice")
def notice(
    agency: str = typer.Option(..., "--agency", help="The agency's 统一社会信用代码."),
    finding: str = typer.Option(
        ..., "--finding", help="The figure to rectify: " + ", ".join(k.value for k in Kind) + "."
    ),
    deadline: str = typer.Option(
        ..., "--deadline", help="A day (the end of it, China time) or an ISO time with offset."
    ),
    note: str = typer.Option(..., "--note", help="What the agency must rectify."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Order an agency to rectify one figure by a deadline (责令限期改正, 第四十二条), as this
    region's data management authority; the agency is notified. The node closes the notice when
    the figure recovers, or publishes it as 通报批评 at the deadline."""
    cfg = load(config)
    kind, until = _kind(finding), _deadline(deadline)

    async def work(supervision: Supervision, by: str) -> Notice:
        authority = make_identity(cfg.node.region, cfg.node.trust_domain, Role.AUTHORITY)
        rectifications = Rectifications(supervision, Notifications(supervision.db))
        return await rectifications.issue(authority, agency, kind, until, note, audit_it=True)

    echo(_notice_line(_run(cfg, work)))


@notices_app.command("list")
def list_notices(
    agency: str = typer.Option("", "--agency", help="Only this agency's notices."),
    criticised: bool = typer.Option(
        False, "--criticised", help="Only the published criticisms (通报批评)."
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """Every rectification notice, newest first (at most 200): open, rectified (closed by the
    node when the figure recovered) or criticised (past the deadline, published)."""
    cfg = load(config)

    async def work(supervision: Supervision, by: str) -> list[Notice]:
        rectifications = Rectifications(supervision, None)
        status = NoticeStatus.CRITICISED if criticised else None
        found, _ = await rectifications.notices(
            None, agency_code=agency, status=status, page_size=200
        )
        return found

    found = _run(cfg, work)
    if not found:
        echo("no rectification notice")
    for n in found:
        echo(_notice_line(n))


def _certificate_lines(c: Certificate) -> list[str]:
    lines = [
        f"certificate {c.serial}",
        f"  agency {c.agency_code}  project {c.project or '-'}  region {c.region}",
    ]
    for r in c.resources:
        lines.append(f"  resource {r.code}  grade {r.grade}  checked {_when(r.checked_at)}")
    lines += [
        "  registered ok; aggregated on time ok; "
        f"quality ok (grade {c.min_grade} or better, checked within {c.max_check_age_days} days); "
        f"rectification ok (no open notice, no 通报批评 in {c.criticism_days} days); "
        "corrections ok (no overdue 纠错)",
        f"  issued {_when(c.issued_at)} by {c.node}; valid until {_when(c.valid_until)}",
        f"  audit log {c.audit_size} records, root {c.audit_root}",
    ]
    return lines


@app.command("certify")
def certify(
    agency: str = typer.Option(..., "--agency", help="The agency's 统一社会信用代码."),
    project: str = typer.Option("", "--project", help="The project's name (with --resources)."),
    resources: str = typer.Option(
        "", "--resources", help="The project's resource codes, comma-separated (the agency's)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the certificate (JSON); default: standard output."
    ),
    config: Path = CONFIG_OPTION,
) -> None:
    """Issue a project acceptance certificate (第九、二十二条), signed by this node's key: the
    agency (or the project's resources) registered in the catalog, aggregated on time, graded
    at least [supervision] certify_min_grade by a recent quality check, with no open
    rectification notice, no recent 通报批评 and no overdue 纠错. Refuses naming every
    condition that fails. `govnode supervision check-certificate` verifies it offline."""
    cfg = load(config)
    codes = [c.strip() for c in resources.split(",") if c.strip()] if resources else []
    if out is not None and out.exists():
        raise UserError(f"--out {out}: exists; not overwritten")
    section = cfg.supervision
    settings = CertifySettings(
        min_grade=section.certify_min_grade,
        max_check_age_days=section.certify_max_check_age_days,
        criticism_days=section.certify_criticism_days,
        certificate_days=section.certificate_days,
    )
    try:
        root = load_certs(cfg.path(cfg.tls.root))[0]
        chain_pem = load_chain_pem(cfg.path(cfg.tls.cert), root)
        node, _ = read_log_signer(chain_pem, root, cfg.node.trust_domain)
        signer = NodeSigner(node.uri, load_private_key(cfg.path(cfg.tls.key)), chain_pem)
    except (OSError, PkiError, ValueError) as exc:
        raise UserError(f"the node's key and chain: {exc}") from None

    async def work(supervision: Supervision, by: str) -> tuple[Certificate, bytes]:
        return await Certifier(supervision, signer, settings).certify(agency, project, codes, by)

    made, document = _run(cfg, work)
    if out is None:
        sys.stdout.write(document.decode())
        return
    out.write_bytes(document)
    for line in _certificate_lines(made):
        echo(line)
    echo(f"written to {out}")


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--at: {text[:40]!r} is not an ISO 8601 time (2027-01-31T12:00:00+08:00)"
        ) from None
    if moment.tzinfo is None:
        raise UserError("--at: a time needs its offset, e.g. +08:00")
    return moment


@app.command("check-certificate")
def check_certificate_command(
    file: Path = typer.Argument(..., help="A project acceptance certificate (JSON)."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (PEM)."),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="The platform's SPIFFE trust domain."
    ),
    at: str = typer.Option(
        "", "--at", help="Check validity at this time (ISO 8601 with offset); default: now."
    ),
) -> None:
    """Verify a project acceptance certificate offline, with the province root certificate
    only: the node's chain leads to the root, the node signed it, every field is well formed,
    the signer is the node it names, and it has not expired. Prints what it certifies; exit 1
    naming the check that failed. Needs no node and no network."""
    moment = _moment(at) if at else dt.datetime.now(dt.UTC)
    try:
        anchor = x509.load_pem_x509_certificate(root.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"--root {root}: not a PEM certificate ({exc})") from None
    try:
        with file.open("rb") as f:
            data = f.read(MAX_CERTIFICATE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"{exc.filename}: {exc.strerror}") from None
    try:
        certified = check_certificate(data, anchor, trust_domain, moment)
    except CertificateError as exc:
        echo(f"certificate INVALID ({exc.check} check): {safe_text(str(exc))}")
        raise typer.Exit(1) from None
    for line in _certificate_lines(certified):
        echo(safe_text(line))
    echo("certificate verified")


# --- the province roll-up (issue 15 item 6) -------------------------------------------------


def _table_lines(tables: list[CityTable]) -> list[str]:
    lines = [f"全省监督汇总：{len(tables)} 个地区"]
    for t in tables:
        s = t.summary
        mark = "  【已过期】" if t.stale else ""
        grades = "，".join(f"{g or '未评'} {n}" for g, n in sorted(t.grades().items())) or "—"
        lines += [
            f"地区 {s.region}{mark}  签名节点 {t.signed_by}",
            f"  期间 {_when(s.period_start)} 至 {_when(s.period_end)}；生成于 "
            f"{_when(s.generated_at)}；接收于 {_when(t.received_at)}；审计日志链头 "
            f"#{s.head_size} {s.head_hash[:16]}",
            f"  资源 {s.resources_total} 个（质量等级：{grades}），未处理纠错 "
            f"{sum(r.open_errors for r in s.resources)} 条；单位 {s.agencies_total} 个"
            + (
                f"（汇总只列出前 {len(s.agencies)} 个）"
                if s.agencies_total > len(s.agencies)
                else ""
            ),
            "  合计  " + "  ".join(f"{f.kind.term} {_ratio(f)}" for f in t.totals()),
        ]
        for a in s.agencies:
            cells = "  ".join(
                f"{f.kind.term} {f.value or '—'}"
                if f.kind is Kind.QUALITY
                else f"{f.kind.term} 未计量"
                if f.value == UNMEASURED
                else f"{f.kind.term} {_ratio(f)}"
                for f in a.figures
            )
            lines.append(f"  单位 {a.agency_code}  审计 #{a.first}-#{a.last}  {cells}")
    return lines


def _table_json(tables: list[CityTable]) -> list[dict[str, Any]]:
    return [
        {
            "region": t.summary.region,
            "signed_by": t.signed_by,
            "stale": t.stale,
            "received_at": t.received_at.isoformat(),
            "generated_at": t.summary.generated_at.isoformat(),
            "period_start": t.summary.period_start.isoformat(),
            "period_end": t.summary.period_end.isoformat(),
            "audit_head": {"size": t.summary.head_size, "hash": t.summary.head_hash},
            "resources_total": t.summary.resources_total,
            "grades": t.grades(),
            "agencies_total": t.summary.agencies_total,
            "totals": {f.kind.value: [f.numerator, f.denominator] for f in t.totals()},
            "agencies": [
                {
                    "agency_code": a.agency_code,
                    "sequences": [a.first, a.last],
                    "figures": [
                        {
                            "kind": f.kind.value,
                            "term": f.kind.term,
                            "numerator": f.numerator,
                            "denominator": f.denominator,
                            "grade": "" if f.value == UNMEASURED else f.value,
                            "measured": f.value != UNMEASURED,
                        }
                        for f in a.figures
                    ],
                }
                for a in t.summary.agencies
            ],
        }
        for t in tables
    ]


@app.command("province")
def province(
    region: str = typer.Option("", "--region", help="Only this region's summary."),
    json_out: bool = typer.Option(False, "--json", help="The table as one JSON array."),
    config: Path = CONFIG_OPTION,
) -> None:
    """The province-wide table (province node only): the newest signed summary of each city
    and the province's own, per agency and per city; a summary older than twice [supervision]
    summary_seconds is marked 已过期 (stale)."""
    cfg = load(config)
    if cfg.node.mode is not Mode.PROVINCE:
        raise UserError(
            f"this is a city node ({cfg.node.region}): the province-wide table is at the "
            "province's node"
        )
    root = load_certs(cfg.path(cfg.tls.root))[0]

    async def work(supervision: Supervision, by: str) -> list[CityTable]:
        from node.app import rollup_of

        return await rollup_of(cfg, supervision.db, supervision, root).table(region)

    tables = _run(cfg, work)
    if json_out:
        echo(json.dumps(_table_json(tables), ensure_ascii=False, sort_keys=True))
        return
    for line in _table_lines(tables):
        echo(line)
