"""The overview: the node, its health and maintenance switch, peers, certificates about to
expire and the desks' pending counts. ``/overview/live`` is the same live part as a fragment,
which htmx polls every 5 s; without JavaScript the page shows the values of its load."""

from __future__ import annotations

import datetime as dt
from importlib import metadata
from typing import Any

from aiohttp import web

from gateway.identity import ConsoleRole
from node.console._actions import audited
from node.console._identity import ConsoleRefusal
from node.console._render import render
from node.console._state import ConsoleState, state_of


def version() -> str:
    try:
        return metadata.version("govnode")
    except metadata.PackageNotFoundError:
        return "unknown"


async def live_values(state: ConsoleState) -> dict[str, Any]:
    """What the live part of the overview shows (every value one bounded query or less)."""
    db = state.services.db
    return {
        "serving": state.health.serving,
        "maintenance": state.health.maintenance,
        "storage_ok": db.health.available,
        "now": dt.datetime.now(dt.UTC),
    }


async def overview(request: web.Request) -> web.Response:
    state = state_of(request)
    config = state.config
    return await render(
        request,
        "overview.html",
        node={
            "name": config.node.name,
            "identity": state.services.identity.uri,
            "mode": config.node.mode.value,
            "region": config.node.region,
            "version": version(),
            "storage": config.database_url.split("+", 1)[0],
            "started_at": state.started_at,
        },
        live=await live_values(state),
    )


async def overview_live(request: web.Request) -> web.Response:
    return await render(request, "overview_live.html", live=await live_values(state_of(request)))


async def maintenance(request: web.Request) -> web.Response:
    """Switch maintenance mode (system role): health NOT_SERVING for peers and load balancers
    while on (gateway.server.HealthReporter), whatever the storage monitor reports."""
    form = await request.post()
    wanted = form.get("on")
    if wanted not in ("1", "0"):
        raise ConsoleRefusal(400, "参数 on 应为 1（开启）或 0（关闭）", "INVALID_ARGUMENT")
    on = wanted == "1"
    state = state_of(request)
    await audited(
        request,
        "/maintenance",
        ConsoleRole.SYSTEM,
        lambda: state.health.set_maintenance(on),
        detail={"maintenance": "on" if on else "off"},
    )
    raise web.HTTPSeeOther("/")


def routes(table: web.RouteTableDef) -> None:
    table.get("/")(overview)
    table.get("/overview/live")(overview_live)
    table.post("/maintenance")(maintenance)
