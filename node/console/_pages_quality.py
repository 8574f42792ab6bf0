"""Quality (数据质量, 第十五条) per resource and compliance (第四十二条) per agency, with their
history as charts (server-side SVG, node.console._charts). Read-only, from node.quality (the
stored daily checks) and node.supervision (the stored compliance reports); any operator reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway.quote import quote
from node.codes import credit_code_problem
from node.console._charts import Point, line_chart
from node.console._desk_params import bad, desks, read
from node.console._messages import T
from node.console._params import number, page_size
from node.console._render import render
from node.errors import NotFound
from node.quality import Quality, QualityReport
from node.supervision import ComplianceReport, Kind, Supervision
from node.times import CST

#: Checks drawn in a resource's chart (three months of daily checks) and compliance reports
#: in an agency's.
HISTORY_CHECKS = 90
HISTORY_REPORTS = 30
_CODE_CHARS = frozenset("0123456789-")


def _quality(request: web.Request) -> Quality:
    found = desks(request).quality
    if found is None:
        raise web.HTTPNotFound(text=T["no_check"])
    return found


def _supervision(request: web.Request) -> Supervision:
    found = desks(request).supervision
    if found is None:
        raise web.HTTPNotFound(text=T["no_reports"])
    return found


def _offset_pages(request: web.Request, offset: int, size: int, more: bool) -> dict[str, str]:
    kept = {k: v for k, v in request.query.items() if k != "from"}
    return {
        "first": "?" + urlencode(kept) if offset else "",
        "next": "?" + urlencode({**kept, "from": str(offset + size)}) if more else "",
    }


async def _latest(quality: Quality, code: str) -> QualityReport | None:
    try:
        return await quality.latest(code)
    except NotFound:
        return None


async def resources(request: web.Request) -> web.Response:
    """This node's resources, a page at a time, each with its newest check."""
    params = request.query
    size, offset = page_size(params), number(params, "from", default=0, high=10**6)
    quality = _quality(request)
    codes = await read(quality.resources)
    shown = codes[offset : offset + size]
    rows = [(code, await _latest(quality, code)) for code in shown]
    return await render(
        request,
        "quality.html",
        rows=rows,
        pages=_offset_pages(request, offset, size, len(codes) > offset + size),
    )


def _code(value: str) -> str:
    if len(value) > 32 or not set(value) <= _CODE_CHARS:
        raise bad(f"资源代码：{quote(value)} 不是 RRRRRR-C-NNNNNN 形式")
    return value


async def resource(request: web.Request) -> web.Response:
    code = _code(request.match_info.get("code", ""))
    quality = _quality(request)
    entry = await read(lambda: quality.entry(code))
    report = await read(lambda: _latest(quality, code))
    history = await read(lambda: quality.history(code, HISTORY_CHECKS))
    chart = line_chart(
        [Point(p.day, p.overall) for p in history], title=f"{code} {T['quality_history']}"
    )
    return await render(request, "quality_resource.html", entry=entry, report=report, chart=chart)


async def agencies(request: web.Request) -> web.Response:
    params = request.query
    size, offset = page_size(params), number(params, "from", default=0, high=10**6)
    supervision = _supervision(request)
    codes, more = await read(lambda: supervision.agencies(offset=offset, limit=size))
    rows = []
    for code in codes:
        latest = await supervision.latest(code, 1)
        rows.append((code, latest[0] if latest else None))
    return await render(
        request,
        "quality_agencies.html",
        rows=rows,
        kinds=list(Kind),
        pages=_offset_pages(request, offset, size, more),
    )


def finding_rate(report: ComplianceReport) -> float | None:
    """Findings per 100 occasions over the report's counted figures (None: no occasion)."""
    counted = [f for f in report.figures if f.kind is not Kind.QUALITY and f.denominator > 0]
    occasions = sum(f.denominator for f in counted)
    if not occasions:
        return None
    return 100.0 * sum(f.numerator for f in counted) / occasions


async def agency(request: web.Request) -> web.Response:
    code = request.match_info.get("code", "")
    if credit_code_problem(code) is not None:
        raise bad(f"部门代码：{quote(code)} 不是有效的统一社会信用代码")
    supervision = _supervision(request)
    reports = await read(lambda: supervision.latest(code, HISTORY_REPORTS))
    points = [
        Point(r.generated_at.astimezone(CST).strftime("%m-%d %H:%M"), finding_rate(r))
        for r in reversed(reports)
    ]
    chart = line_chart(points, title=f"{code} {T['compliance_history']}")
    figures: list[dict[str, Any]] = []
    if reports:
        for f in reports[0].figures:
            figures.append({"kind": f.kind, "figure": f})
    return await render(
        request,
        "quality_agency.html",
        code=code,
        reports=reports,
        figures=figures,
        chart=chart,
        now=dt.datetime.now(dt.UTC),
    )


def routes(table: web.RouteTableDef) -> None:
    table.get("/quality")(resources)
    table.get("/quality/resources/{code}")(resource)
    table.get("/quality/agencies")(agencies)
    table.get("/quality/agencies/{code}")(agency)
