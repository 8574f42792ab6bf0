"""The desks of the data management authority (数据管理机构): 有条件共享 applications and
grants (第二十五条), change requests (第四十一条) and 授权开放 applications (第三十二、三十三条).

Each action is the domain call ``govnode access|changes|opendata applications`` and the
AccessService / OpenDataService review RPCs make, with the same notifications (the domain
sends them in the action's transaction), run through node.console._actions.audited: role
``service`` acts, the audit record names the operator. Pages list newest first, a page at a
time (the domain's page tokens), and work without JavaScript (POST, then 303 to the object).
The error report and rectification desks are in node.console._pages_corrections.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from gateway.identity import ConsoleRole
from node.audit import Operation
from node.catalog import entry_to_json
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
from node.console._params import page_size
from node.console._render import render
from node.governance import ChangeRequest, ChangeStatus, ChangeTarget
from node.opendata import OpenApplicationStatus, OpenReview
from node.sharing import ApplicationStatus, Decision, Review
from node.times import CST

SERVICE = ConsoleRole.SERVICE
_APP_STATES = ("pending", "approved", "rejected", "withdrawn", "all")
_CHANGE_STATES = ("pending", "approved", "rejected", "all")
_OPEN_STATES = ("pending", "approved", "rejected", "all")
#: What a change review is audited as: supervision counts a rejected change of an agency's
#: data from it, as from AccessService/ReviewChangeRequest (第四十二条第六项).
CHANGE_REVIEW = "/desks/changes/review"


# --- 有条件共享 applications and grants -----------------------------------------------------


async def applications(request: web.Request) -> web.Response:
    params = request.query
    state = choice(params, "status", _APP_STATES, "pending")
    d = desks(request)
    found, token = await read(
        lambda: d.applications.list_applications(
            d.authority,
            status=None if state == "all" else ApplicationStatus(state),
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request,
        "desks_applications.html",
        states=_APP_STATES,
        state=state,
        applications=found,
        pages=pager(request, token),
    )


async def application(request: web.Request) -> web.Response:
    app_id = path_id(request)
    d = desks(request)
    found = await read(lambda: d.applications.get_application(d.authority, app_id))
    grant = None
    if found.grant_id:
        grant = await read(lambda: d.applications.get_grant(d.authority, found.grant_id))
    return await render(
        request,
        "desks_application.html",
        application=found,
        grant=grant,
        request_id=new_request_id(),
    )


async def review_application(request: web.Request) -> web.StreamResponse:
    app_id = path_id(request)
    decision = Decision(request.match_info["decision"])
    form = await request.post()
    review = Review(
        decision=decision,
        comment=form_text(form, "comment"),
        request_id=request_id(form),
    )
    d = desks(request)
    await audited(
        request,
        f"/desks/applications/{decision.value}",
        SERVICE,
        lambda: d.applications.review(d.authority, app_id, review),
        detail={"application": app_id, "decision": decision.value},
        operation=Operation.SHARE,
    )
    raise web.HTTPSeeOther(f"/desks/applications/{app_id}")


async def grants(request: web.Request) -> web.Response:
    params = request.query
    every = choice(params, "all", ("0", "1"), "0") == "1"
    d = desks(request)
    found, token = await read(
        lambda: d.applications.list_grants(
            d.authority,
            include_inactive=every,
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request, "desks_grants.html", grants=found, every=every, pages=pager(request, token)
    )


async def grant(request: web.Request) -> web.Response:
    grant_id = path_id(request)
    d = desks(request)
    found = await read(lambda: d.applications.get_grant(d.authority, grant_id))
    return await render(request, "desks_grant.html", grant=found, request_id=new_request_id())


async def revoke_grant(request: web.Request) -> web.StreamResponse:
    grant_id = path_id(request)
    form = await request.post()
    reason = form_text(form, "reason")
    rid = request_id(form)
    d = desks(request)
    await audited(
        request,
        "/desks/grants/revoke",
        SERVICE,
        lambda: d.applications.revoke(d.authority, grant_id, reason, rid),
        detail={"grant": grant_id},
        operation=Operation.SHARE,
    )
    raise web.HTTPSeeOther(f"/desks/grants/{grant_id}")


# --- change requests (第四十一条) ------------------------------------------------------------


async def changes(request: web.Request) -> web.Response:
    params = request.query
    state = choice(params, "status", _CHANGE_STATES, "pending")
    d = desks(request)
    found, token = await read(
        lambda: d.changes.list(
            d.authority,
            status=None if state == "all" else ChangeStatus(state),
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request,
        "desks_changes.html",
        states=_CHANGE_STATES,
        state=state,
        changes=found,
        pages=pager(request, token),
    )


def _fields(values: dict[str, Any]) -> dict[str, str]:
    return {
        k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
        for k, v in values.items()
    }


async def change_rows(request: web.Request, change: ChangeRequest) -> list[dict[str, Any]]:
    """Each field of the change, before → after (a record's items, or an entry's fields
    against the version the change was asked on); unchanged fields are marked so."""
    if change.target is ChangeTarget.RECORD:
        before = dict(change.previous_values)
        after = dict(change.values) if change.values else {}
        deleted = not change.values
    else:
        d = desks(request)
        old = await read(lambda: d.catalog.get(change.resource_code, change.previous_version))
        before = _fields(json.loads(entry_to_json(old)))
        after = _fields(json.loads(entry_to_json(change.entry))) if change.entry else {}
        deleted = change.entry is None
        for volatile in ("version", "updated_at", "created_at"):
            before.pop(volatile, None)
            after.pop(volatile, None)
    rows = []
    for name in sorted(set(before) | set(after)):
        old_value, new_value = before.get(name), None if deleted else after.get(name)
        if not deleted and name not in after:
            new_value = old_value
        rows.append(
            {
                "name": name,
                "before": old_value,
                "after": new_value,
                "changed": deleted or old_value != new_value,
            }
        )
    return rows


async def change(request: web.Request) -> web.Response:
    change_id = path_id(request)
    d = desks(request)
    found = await read(lambda: d.changes.get(d.authority, change_id))
    return await render(
        request,
        "desks_change.html",
        change=found,
        rows=await change_rows(request, found),
        request_id=new_request_id(),
    )


async def review_change(request: web.Request) -> web.StreamResponse:
    change_id = path_id(request)
    decision = Decision(request.match_info["decision"])
    form = await request.post()
    comment = form_text(form, "comment")
    rid = request_id(form)
    d = desks(request)
    # The provider goes into the audit record (the gRPC path's detail), read first.
    asked = await read(lambda: d.changes.get(d.authority, change_id))
    await audited(
        request,
        CHANGE_REVIEW,
        SERVICE,
        lambda: d.changes.review(d.authority, change_id, decision, comment, rid),
        resource_code=asked.resource_code,
        detail={
            "change_request": change_id,
            "decision": decision.value,
            "provider": asked.provider_code,
        },
    )
    raise web.HTTPSeeOther(f"/desks/changes/{change_id}")


# --- 授权开放 applications (第三十二、三十三条) ---------------------------------------------


def _open(request: web.Request) -> Any:
    d = desks(request)
    if d.open_applications is None:
        raise web.HTTPNotFound(text=T["open_off"])
    return d.open_applications


async def open_applications(request: web.Request) -> web.Response:
    params = request.query
    state = choice(params, "status", _OPEN_STATES, "pending")
    apps = _open(request)
    found, token = await read(
        lambda: apps.list_applications(
            status=None if state == "all" else OpenApplicationStatus(state),
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request,
        "desks_open.html",
        states=_OPEN_STATES,
        state=state,
        applications=found,
        pages=pager(request, token),
    )


async def open_application(request: web.Request, key: str = "") -> web.Response:
    app_id = path_id(request)
    apps = _open(request)
    found = await read(lambda: apps.get(app_id))
    return await render(
        request,
        "desks_open_one.html",
        application=found,
        issued_key=key,
        request_id=new_request_id(),
    )


def _until(value: str) -> dt.datetime | None:
    """The end of the day ``value`` (YYYY-MM-DD) in China Standard Time, as the CLI's
    ``--until``."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise bad(f"截止日期应为 YYYY-MM-DD，收到 {value[:20]!r}") from None
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), CST)


async def review_open(request: web.Request) -> web.StreamResponse:
    app_id = path_id(request)
    approve = request.match_info["decision"] == "approve"
    form = await request.post()
    review = OpenReview(
        approve=approve,
        comment=form_text(form, "comment"),
        not_after=_until(form_text(form, "until", max_chars=10)) if approve else None,
        competitive_selection_ref=form_text(form, "selection_ref", max_chars=200),
        request_id=request_id(form),
    )
    apps = _open(request)
    d = desks(request)
    approval = await audited(
        request,
        f"/desks/open/{'approve' if approve else 'reject'}",
        SERVICE,
        lambda: apps.review(d.authority, app_id, review),
        detail={"application_id": app_id},
    )
    if approval.key:
        # The key is shown this once, on this response (not stored; no redirect loses it).
        return await open_application(request, key=approval.key)
    raise web.HTTPSeeOther(f"/desks/open/{app_id}")


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/desks/applications")


def routes(table: web.RouteTableDef) -> None:
    table.get("/desks")(index)
    table.get("/desks/applications")(applications)
    table.get("/desks/applications/{id}")(application)
    table.post("/desks/applications/{id}/{decision:approve|reject}")(review_application)
    table.get("/desks/grants")(grants)
    table.get("/desks/grants/{id}")(grant)
    table.post("/desks/grants/{id}/revoke")(revoke_grant)
    table.get("/desks/changes")(changes)
    table.get("/desks/changes/{id}")(change)
    table.post("/desks/changes/{id}/{decision:approve|reject}")(review_change)
    table.get("/desks/open")(open_applications)
    table.get("/desks/open/{id}")(open_application)
    table.post("/desks/open/{id}/{decision:approve|reject}")(review_open)
