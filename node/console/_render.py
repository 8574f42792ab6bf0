"""Pages from jinja2 templates: autoescaped, rendered asynchronously (a template that awaits
never blocks the loop), with what every page shows (the operator, the nav, the form token,
the message catalog ``t``) filled in by :func:`render`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jinja2
from aiohttp import web

from node.console._forms import TOKEN_FIELD, TOKEN_HEADER, form_token
from node.console._identity import OPERATOR, ROLE_NAMES, operator_of
from node.console._messages import T
from node.console._state import state_of

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("node.console", "templates"),
    autoescape=True,
    enable_async=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
CST = dt.timezone(dt.timedelta(hours=8), "CST")

#: (path, message key) of the nav; part B adds its pages here.
NAV: list[tuple[str, str]] = [
    ("/", "nav_overview"),
    ("/certificates", "nav_certificates"),
    ("/audit", "nav_audit"),
    ("/system", "nav_system"),
    ("/backups", "nav_backups"),
    ("/desks", "nav_desks"),
    ("/catalog", "nav_catalog"),
    ("/federation", "nav_federation"),
    ("/quality", "nav_quality"),
]


def cst(moment: dt.datetime | None) -> str:
    """A time as operators in 福建 read it, e.g. 2026-12-05 10:04:05."""
    if moment is None:
        return T["none"]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")


_ENV.filters["cst"] = cst


async def render_text(request: web.Request, name: str, **values: Any) -> str:
    state = state_of(request)
    operator = operator_of(request)
    return await _ENV.get_template(name).render_async(
        t=T,
        nav=NAV,
        path=request.path,
        node_name=state.config.node.name,
        operator=operator,
        role_name=ROLE_NAMES[operator.role],
        may=operator.may,
        token=form_token(state.secret, operator),
        token_field=TOKEN_FIELD,
        token_header=TOKEN_HEADER,
        **values,
    )


async def render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    """The page ``name`` for this request's operator."""
    text = await render_text(request, name, **values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def render_error(request: web.Request, status: int, message: str) -> web.Response:
    """A refusal as a page: with the layout when the operator is known, plain text otherwise
    (an unknown certificate sees no nav)."""
    if request.get(OPERATOR) is None:
        return web.Response(text=message, status=status, content_type="text/plain", charset="utf-8")
    return await render(request, "error.html", status=status, status_code=status, message=message)
