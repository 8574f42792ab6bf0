"""``govnode supervision report|recount``: compliance reports of this node's agencies
(监督检查, 第八、四十二条), on the node's database (the node may be serving), as this region's
data management authority.

``report`` counts an agency's figures over a period now, stores the report (with the audit
head it was computed at) and prints it; it is audited (分析). ``recount`` verifies the audit
chain over a stored report's range and counts its figures again from the log: exit 0 when
every figure matches, 1 naming those that differ (or the break in the chain).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from gateway.identity import Role, make_identity
from node.app import supervision_of
from node.audit import AuditLog
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.config import NodeConfig
from node.errors import DomainError
from node.storage import Database
from node.supervision import ComplianceReport, Figure, Supervision, parse_period
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Supervision of this node's agencies (第八、四十二条): compliance reports counted from "
        "the audit log, and their recount."
    ),
    no_args_is_help=True,
)


def _run(cfg: NodeConfig, work: Callable[[Supervision, str], Awaitable[T]]) -> T:
    async def main() -> T:
        db = await Database.open(cfg.database_url)
        audit = AuditLog(db)
        try:
            await db.migrate()
            await audit.start()
            authority = make_identity(cfg.node.region, cfg.node.trust_domain, Role.AUTHORITY)
            return await work(supervision_of(cfg, db, audit), authority.uri)
        finally:
            await audit.close()
            await db.close()

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
        extra = f"  等级 {f.value or '—'}" if f.value or f.kind.value == "quality" else ""
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
                "grade": f.value,
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
