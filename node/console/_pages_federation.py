"""The province and its cities (第十九、二十、三十一条): the cities with their state, the
invitations (and minting one, as ``govnode federation invite``: the token is shown once), and
the sub-platform approvals with the conformance reports they rest on (approving one, as
``govnode federation approve``, from the signed report.json the tester handed over).

Inviting and approving cities is role ``system``: X-Road's registration officer admits members
to the federation, and of the console's four roles it is the system administrator who keeps
the platform's own make-up (the ``service`` role is the data management authority's desks).
A city shows its province link and whether the province approved it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from aiohttp import web

from gateway.identity import ConsoleRole
from node.approval import ReportRefused, approve_report_in
from node.config import Mode
from node.console._actions import audited
from node.console._desk_params import bad, form_text, read
from node.console._identity import ConsoleRefusal, operator_of
from node.console._messages import T
from node.console._params import number
from node.console._render import render
from node.console._state import state_of
from node.federation import (
    DEFAULT_MAX_AGE,
    ApprovalFacts,
    Invitation,
    approvals,
    create_invitation,
    invitations,
    known_cities,
    members,
    own_approval,
    reachable_address,
)

SYSTEM = ConsoleRole.SYSTEM
#: The signed report.json a tester hands over (the console's body limit is the real cap).
MAX_REPORT_BYTES = 4 * 1024 * 1024
INVITATIONS_SHOWN = 50


def _region(value: str) -> str:
    if not (len(value) == 6 and value.isascii() and value.isdigit()):
        raise bad(f"区域代码应为 6 位数字，收到 {value[:20]!r}")
    return value


async def federation(request: web.Request, issued: Any = None) -> web.Response:
    state = state_of(request)
    config, db = state.config, state.services.db
    if config.node.mode is Mode.CITY:
        return await render(
            request,
            "federation_city.html",
            province=config.federation.province_endpoint,
            approved=await read(lambda: own_approval(db)),
        )
    offset = number(request.query, "from", default=0, high=10**6)
    joined = await read(lambda: members(db))
    heard = await read(lambda: known_cities(db))
    approved = await read(lambda: approvals(db))
    approved_regions = {a.region for a in approved}
    cities = [{"member": m, "approved": m.region in approved_regions} for m in joined] + [
        {"member": None, "region": r, "approved": r in approved_regions}
        for r in sorted(heard - {m.region for m in joined})
    ]
    invited, more = await read(lambda: invitations(db, offset=offset, limit=INVITATIONS_SHOWN))
    return await render(
        request,
        "federation.html",
        cities=cities,
        invitations=invited,
        more=more,
        next_from=offset + INVITATIONS_SHOWN,
        approvals=approved,
        join_on=config.federation.join_listen is not None,
        issued=issued,
        now=dt.datetime.now(dt.UTC),
    )


def _check_can_admit(request: web.Request, *, invite: bool) -> None:
    """Only a province admits cities, and online only with its join port."""
    config = state_of(request).config
    if config.node.mode is not Mode.PROVINCE:
        raise ConsoleRefusal(409, T["city_only"], "FAILED_PRECONDITION")
    if invite and config.federation.join_listen is None:
        raise ConsoleRefusal(409, T["join_off"], "FAILED_PRECONDITION")


async def invite(request: web.Request) -> web.Response:
    state = state_of(request)
    config = state.config
    form = await request.post()
    region = _region(form_text(form, "region", max_chars=6))
    name = form_text(form, "name", max_chars=64).strip() or None
    hours = number(
        {"hours": form_text(form, "hours", max_chars=4)}, "hours", default=24, low=1, high=168
    )
    who = operator_of(request)

    async def mint() -> Invitation:
        _check_can_admit(request, invite=True)
        return await create_invitation(
            state.services.db,
            province_region=config.node.region,
            region=region,
            name=name,
            ttl=dt.timedelta(hours=hours),
            created_by=f"operator {who.name} ({who.uri}, console)",
        )

    made = await audited(
        request, "/federation/invite", SYSTEM, mint, detail={"region": region, "hours": hours}
    )
    assert config.federation.join_listen is not None  # checked in mint
    endpoint = reachable_address(config.federation.join_listen, config.node.advertise_hosts)
    # The token is shown on this response only: the node keeps its hash.
    return await federation(request, issued={"invitation": made, "endpoint": endpoint})


async def approve(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    config = state.config
    form = await request.post()
    upload = form.get("report")
    if not isinstance(upload, web.FileField):
        raise bad("请选择签名的测试报告文件 report.json")
    # The upload is spooled to a file by aiohttp: read it off the event loop.
    data = await asyncio.to_thread(upload.file.read, MAX_REPORT_BYTES + 1)
    if len(data) > MAX_REPORT_BYTES:
        raise bad(f"测试报告至多 {MAX_REPORT_BYTES} 字节")
    who = operator_of(request)

    async def record() -> tuple[ApprovalFacts, bool]:
        _check_can_admit(request, invite=False)
        try:
            return await approve_report_in(
                state.services.db,
                config,
                data,
                f"operator {who.name} ({who.uri}, console)",
                DEFAULT_MAX_AGE,
            )
        except ReportRefused as exc:
            raise ConsoleRefusal(400, str(exc), "INVALID_ARGUMENT") from None

    facts, _ = await audited(
        request, "/federation/approve", SYSTEM, record, detail={"report_bytes": len(data)}
    )
    raise web.HTTPSeeOther(f"/federation/approvals/{facts.report_sha256}")


def report_cases(text: str) -> list[dict[str, Any]]:
    """The cases of a stored signed report (verified when it was approved)."""
    try:
        results = json.loads(text)["report"]["results"]
    except (ValueError, KeyError, TypeError):
        return []
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


async def approval(request: web.Request) -> web.Response:
    sha = request.match_info.get("sha", "")
    if len(sha) != 64 or not set(sha) <= set("0123456789abcdef"):
        raise bad(f"报告摘要应为 64 位十六进制，收到 {sha[:20]!r}")
    db = state_of(request).services.db
    found = next((a for a in await read(lambda: approvals(db)) if a.report_sha256 == sha), None)
    if found is None:
        raise ConsoleRefusal(404, f"没有依报告 {sha[:16]}… 的批准记录", "NOT_FOUND")
    return await render(
        request,
        "federation_approval.html",
        approval=found,
        cases=report_cases(found.report),
    )


def routes(table: web.RouteTableDef) -> None:
    table.get("/federation")(federation)
    table.post("/federation/invite")(invite)
    table.post("/federation/approve")(approve)
    table.get("/federation/approvals/{sha}")(approval)
