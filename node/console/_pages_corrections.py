"""The desks for error reports (纠错, 第十六条) and rectification notices (责令限期改正,
第四十二条), as ``govnode quality errors`` and ``govnode supervision notice|notices`` and
QualityService.ResolveDataError / SupervisionService.IssueRectificationNotice: the same domain
calls, through node.console._actions.audited (role ``service`` acts, the operator is audited).

Resolving a report either confirms the stored value (the report is closed as REJECTED, the
reporter told) or asks for the correction by a change request that the change desk then
approves (the approval closes the report and sends the correction notices), as the servicer
does.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from gateway.identity import ConsoleRole
from node.audit import Operation
from node.console._actions import audited
from node.console._desk_params import (
    bad,
    choice,
    desks,
    form_text,
    new_request_id,
    page_token,
    pager,
    path_id,
    read,
    request_id,
)
from node.console._messages import T
from node.console._params import page_size, text
from node.console._render import render
from node.quality import DataErrors, DataErrorStatus, ErrorFilter
from node.supervision import Kind, Rectifications
from node.times import CST

SERVICE = ConsoleRole.SERVICE
_ERROR_STATES = ("all", *(s.value for s in DataErrorStatus))
#: Items a correction names at most (QualityService's MAX_CORRECTED_ITEMS is the same order).
MAX_CORRECTED_ITEMS = 100


def _errors(request: web.Request) -> DataErrors:
    found = desks(request).data_errors
    if found is None:
        raise web.HTTPNotFound(text=T["errors_off"])
    return found


def _notices(request: web.Request) -> Rectifications:
    found = desks(request).rectifications
    if found is None:
        raise web.HTTPNotFound(text=T["notices_off"])
    return found


# --- error reports (纠错) --------------------------------------------------------------------


async def errors(request: web.Request) -> web.Response:
    params = request.query
    state = choice(params, "status", _ERROR_STATES, "all")
    overdue = choice(params, "overdue", ("0", "1"), "0") == "1"
    d, reports = desks(request), _errors(request)
    filters = ErrorFilter(
        status=None if state == "all" else DataErrorStatus(state), overdue_only=overdue
    )
    found, token = await read(
        lambda: reports.list(
            d.authority, filters, page_size=page_size(params), page_token=page_token(params)
        )
    )
    return await render(
        request,
        "desks_errors.html",
        states=_ERROR_STATES,
        state=state,
        overdue=overdue,
        reports=found,
        now=dt.datetime.now(dt.UTC),
        pages=pager(request, token),
    )


async def error(request: web.Request) -> web.Response:
    report_id = path_id(request)
    d, reports = desks(request), _errors(request)
    found = await read(lambda: reports.get(d.authority, report_id))
    return await render(
        request,
        "desks_error.html",
        report=found,
        now=dt.datetime.now(dt.UTC),
        request_id=new_request_id(),
    )


def corrections(value: str) -> dict[str, str]:
    """``ITEM=VALUE`` lines (the CLI's ``--correct``), one item per line."""
    values: dict[str, str] = {}
    for line in value.splitlines():
        if not line.strip():
            continue
        item, sep, new = line.partition("=")
        if not sep or not item.strip():
            raise bad(f"更正值应为“数据项=新值”，每行一项；收到 {line[:40]!r}")
        values[item.strip()] = new.strip()
        if len(values) > MAX_CORRECTED_ITEMS:
            raise bad(f"更正值至多 {MAX_CORRECTED_ITEMS} 项")
    return values


async def resolve_error(request: web.Request) -> web.StreamResponse:
    report_id = path_id(request)
    form = await request.post()
    how = choice(form_strings(form), "resolution", ("confirm", "correct"), "")
    note = form_text(form, "note")
    rid = request_id(form)
    d, reports = desks(request), _errors(request)
    if how == "confirm":
        await audited(
            request,
            "/desks/errors/confirm",
            SERVICE,
            lambda: reports.reject(d.authority, report_id, note, request_id=rid),
            detail={"data_error": report_id},
        )
    else:
        values = corrections(form_text(form, "values"))
        done = await audited(
            request,
            "/desks/errors/correct",
            SERVICE,
            lambda: reports.correct(
                d.authority,
                report_id,
                values,
                note,
                changes=d.changes,
                catalog=d.catalog,
                request_id=rid,
            ),
            detail={"data_error": report_id, "items": ",".join(sorted(values))},
        )
        if done.change_request_id:
            raise web.HTTPSeeOther(f"/desks/changes/{done.change_request_id}")
    raise web.HTTPSeeOther(f"/desks/errors/{report_id}")


def form_strings(form: object) -> dict[str, str]:
    """The text fields of a submitted form (files left out), for the parameter helpers."""
    items = getattr(form, "items", None)
    if items is None:
        return {}
    return {k: v for k, v in items() if isinstance(v, str)}


# --- rectification notices (责令限期改正) ----------------------------------------------------


async def notices(request: web.Request) -> web.Response:
    params = request.query
    agency = text(params, "agency", max_chars=18)
    d, notes = desks(request), _notices(request)
    found, token = await read(
        lambda: notes.notices(
            d.authority,
            agency_code=agency,
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request,
        "desks_notices.html",
        agency=agency,
        notices=found,
        kinds=list(Kind),
        pages=pager(request, token),
        request_id=new_request_id(),
    )


async def notice(request: web.Request) -> web.Response:
    notice_id = path_id(request)
    notes = _notices(request)
    found = await read(lambda: notes.get(notice_id))
    return await render(request, "desks_notice.html", notice=found)


def deadline(value: str) -> dt.datetime:
    """A day: the end of it in China Standard Time (the CLI's ``--deadline YYYY-MM-DD``)."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise bad(f"期限应为日期 YYYY-MM-DD，收到 {value[:20]!r}") from None
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), CST)


async def issue_notice(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = form_strings(form)
    kind = Kind(choice(fields, "kind", [k.value for k in Kind], ""))
    agency = form_text(form, "agency_code", max_chars=18)
    until = deadline(form_text(form, "deadline", max_chars=10))
    note = form_text(form, "note")
    d, notes = desks(request), _notices(request)
    made = await audited(
        request,
        "/desks/notices/issue",
        SERVICE,
        lambda: notes.issue(d.authority, agency, kind, until, note),
        detail={"agency": agency, "kind": kind.value},
        operation=Operation.ANALYZE,
    )
    raise web.HTTPSeeOther(f"/desks/notices/{made.id}")


def routes(table: web.RouteTableDef) -> None:
    table.get("/desks/errors")(errors)
    table.get("/desks/errors/{id}")(error)
    table.post("/desks/errors/{id}/resolve")(resolve_error)
    table.get("/desks/notices")(notices)
    table.post("/desks/notices")(issue_notice)
    table.get("/desks/notices/{id}")(notice)
