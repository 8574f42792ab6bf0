"""``govnode quality check|report``: data quality of the resources this node owns (质量管控,
第十五、十六条), on the node's database (the node may be serving); ``govnode quality errors``
is node.cli.quality_errors.

``check`` measures now what the node otherwise measures daily at ``[quality] check_time``,
keeps it in the history and writes one audit record per resource (分析, 第三十九条), as this
region's data management authority; its 一致性 samples against a source at another node are
routed there with the node's certificate, as the node does. ``report`` prints the newest check,
changing nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from gateway.forward import Forwarder
from gateway.identity import Role, make_identity
from node.audit import AuditLog
from node.catalog import Catalog
from node.cli import quality_errors
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.config import NodeConfig
from node.errors import DomainError
from node.federation import Router
from node.quality import Quality, QualityReport, report_to_dict
from node.storage import Database
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Data quality of this node's resources (GB/T 36344: 规范性, 完整性, 唯一性, 一致性 "
        "against the authoritative source, 时效性, 可访问性; 第十五、十六条): check now, or print "
        "the newest report."
    ),
    no_args_is_help=True,
)

app.add_typer(quality_errors.app, name="errors")

RESOURCE_OPTION = typer.Option(
    None, "--resource", "-r", help="One resource code; all of this node's resources if left out."
)


def _run(cfg: NodeConfig, work: Callable[[Quality, str], Awaitable[T]]) -> T:
    async def main() -> T:
        from node.app import node_tls_files, quality_of

        db = await Database.open(cfg.database_url)
        audit = AuditLog(db)
        forwarder = Forwarder(node_tls_files(cfg))
        try:
            await db.migrate()
            await audit.start()
            catalog = Catalog(db, node_region=cfg.node.region)
            authority = make_identity(cfg.node.region, cfg.node.trust_domain, Role.AUTHORITY)
            router = Router(cfg, db, forwarder)
            # Built as the node builds its daily check.
            return await work(quality_of(cfg, db, catalog, audit, router), authority.uri)
        finally:
            await forwarder.close()
            await audit.close()
            await db.close()

    return asyncio.run(main())


def _score(score: float | None) -> str:
    return "—" if score is None else f"{score:6.2f}"


def _lines(report: QualityReport) -> list[str]:
    when = report.checked_at.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")
    since = report.window_start.astimezone(CST).strftime("%Y-%m-%d")
    grade = report.grade.value if report.grade else "—"
    t = report.thresholds
    lines = [
        f"{report.resource_code}  grade {grade}  overall {_score(report.overall).strip()}  "
        f"{report.level.value}  (checked {when}; window from {since}; warn below "
        f"{t.warn_below:g}, critical below {t.critical_below:g})",
        f"  records {report.records}; newest data "
        + (
            "never aggregated"
            if report.newest_data_age_seconds is None
            else f"{report.newest_data_age_seconds / 3600:.1f} h old"
        ),
    ]
    for d in report.dimensions:
        lines.append(
            f"  {d.dimension.term} {d.dimension.value:<13} {_score(d.score)}  {d.level.value}"
        )
        for i in d.indicators:
            lines.append(
                f"      {i.code:<7} {i.name}  {i.numerator}/{i.denominator}  "
                f"{_score(i.score).strip()}  {i.counted}"
            )
    for c in report.consistency:
        head = f"      一致性 {c.item} ({c.element}) against {c.source_resource} {c.source_item}: "
        if c.unmeasured:
            lines.append(head + f"unmeasured: {c.unmeasured}")
            continue
        lines.append(
            head + f"compared {c.compared}, matched {c.matched}, mismatched {c.mismatched}, "
            f"not found at the source {c.not_found}"
        )
        if c.mismatch_keys:
            lines.append(f"        mismatching key digests: {', '.join(c.mismatch_keys)}")
    m = report.metadata
    lines.append(f"  目录元数据 {m.code} {m.numerator}/{m.denominator}  {_score(m.score).strip()}")
    lines.extend(
        f"  DROP {d.dimension}: {d.score:.2f}, mean of the last {d.checks} checks {d.baseline:.2f}"
        for d in report.drops
    )
    return lines


def _progress(n: int, total: int, code: str) -> None:
    print(f"checked {n}/{total} {code}", file=sys.stderr, flush=True)


@app.command("check")
def check(resource: str | None = RESOURCE_OPTION, config: Path = CONFIG_OPTION) -> None:
    """Measure quality now (one resource, or every resource this node owns, with progress on
    stderr), keep it in the history and print a line per resource."""
    cfg = load(config)

    async def work(quality: Quality, by: str) -> list[QualityReport]:
        if resource is not None:
            return [await quality.check(resource, by)]
        return await quality.check_all(by, _progress)

    try:
        reports = _run(cfg, work)
    except DomainError as exc:
        raise UserError(exc.message) from None
    if not reports:
        echo("this node owns no resource to check")
    for report in reports:
        grade = report.grade.value if report.grade else "—"
        drops = f"  {len(report.drops)} drop(s)" if report.drops else ""
        echo(f"{report.resource_code}  grade {grade}  overall {_score(report.overall)}{drops}")


@app.command("report")
def report(
    resource: str | None = RESOURCE_OPTION,
    json_out: bool = typer.Option(False, "--json", help="One JSON object per resource and line."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Print the newest check of one resource, or of every resource this node owns: each
    dimension and indicator as numerator/denominator with its score, the grade (A ≥ 90, B ≥ 80,
    C ≥ 70, D ≥ 60, E below), thresholds and drops."""
    cfg = load(config)

    async def work(quality: Quality, by: str) -> list[QualityReport]:
        if resource is not None:
            await quality.entry(resource)  # unknown or another node's: refused as such
        codes = [resource] if resource is not None else await quality.resources()
        found = []
        for code in codes:
            try:
                found.append(await quality.latest(code))
            except DomainError:
                if resource is not None:
                    raise
        return found

    try:
        reports = _run(cfg, work)
    except DomainError as exc:
        raise UserError(exc.message) from None
    if not reports and not json_out:
        echo("no quality check yet: run `govnode quality check`")
    for r in reports:
        if json_out:
            echo(json.dumps(report_to_dict(r), ensure_ascii=False, sort_keys=True))
        else:
            for line in _lines(r):
                echo(line)
