"""The console's application and listener.

Every request, before any handler, goes through :func:`_guard`:

1. the query string is at most :data:`MAX_QUERY` characters (414) and a body at most
   :data:`MAX_BODY` bytes (413, aiohttp's ``client_max_size``);
2. the operator: the verified client certificate must be an operator of this node, not
   revoked (node.console._identity), else 401/403 with a Chinese message;
3. an unsafe method must pass the cross-site checks and carry the form token
   (node.console._forms);
4. a :class:`ConsoleRefusal` from a handler becomes an error page with its status.

Every response carries :data:`SECURITY_HEADERS` (a strict Content-Security-Policy: no inline
script or style; the page asks htmx through a meta tag not to inject its indicator style);
pages are ``Cache-Control: no-store``.

The listener is an aiohttp ``TCPSite`` on the node's own event loop (aiohttp takes no signal
handlers and raises a plain OSError on a bind failure), with TLS 1.2+ and CERT_REQUIRED
against the province root: a client without a certificate fails in the handshake.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

import structlog
from aiohttp import web

from node.console import (
    _pages_audit,
    _pages_backups,
    _pages_catalog,
    _pages_certificates,
    _pages_corrections,
    _pages_desks,
    _pages_federation,
    _pages_overview,
    _pages_quality,
    _pages_system,
)
from node.console._actions import http_status
from node.console._forms import check_unsafe
from node.console._identity import OPERATOR, REQUEST_ID, ConsoleRefusal
from node.console._render import render_error
from node.console._state import STATE, ConsoleState
from node.errors import DomainError
from node.servicers.status import status_for

log = structlog.get_logger("govnode.console")

MAX_QUERY = 2048
MAX_BODY = 64 * 1024
SHUTDOWN_TIMEOUT_S = 5.0

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

#: Each page group's routes; part B's modules (desks, catalog, federation, quality) are added
#: here, one line each.
PAGE_GROUPS: list[Callable[[web.RouteTableDef], None]] = [
    _pages_overview.routes,
    _pages_certificates.routes,
    _pages_audit.routes,
    _pages_system.routes,
    _pages_backups.routes,
    _pages_desks.routes,
    _pages_corrections.routes,
    _pages_catalog.routes,
    _pages_quality.routes,
    _pages_federation.routes,
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    request[REQUEST_ID] = str(uuid.uuid4())
    try:
        if len(request.rel_url.raw_query_string) > MAX_QUERY:
            raise ConsoleRefusal(414, f"查询字符串至多 {MAX_QUERY} 个字符", "INVALID_ARGUMENT")
        ssl_object = request.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        request[OPERATOR] = await state.operators.operator(der)
        await check_unsafe(request, state.secret, request[OPERATOR])
        return await handler(request)
    except ConsoleRefusal as exc:
        log.info(
            "console_refused",
            method=request.method,
            path=request.path[:200],
            status=exc.status,
            code=exc.code,
            request_id=request[REQUEST_ID],
        )
        return await render_error(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or exc.reason
        if exc.status == 413:
            text = f"请求体至多 {MAX_BODY} 字节"
        return await render_error(request, exc.status, text)
    except DomainError as exc:
        # A page's read that the domain refused (the database unavailable...): its status,
        # as the gRPC path maps it; actions already turned theirs into ConsoleRefusal.
        code = status_for(exc).name
        log.warning("console_domain_error", path=request.path[:200], code=code)
        return await render_error(request, http_status(code), exc.message)
    except Exception:
        # A bug of the console's: logged with its traceback, never shown to the operator.
        log.exception(
            "console_request_failed",
            method=request.method,
            path=request.path[:200],
            request_id=request.get(REQUEST_ID),
        )
        return await render_error(
            request, 500, f"控制台内部错误（请求 ID {request.get(REQUEST_ID)}），详见节点日志"
        )


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


async def _stop_jobs(app: web.Application) -> None:
    """A backup job still running when the console stops is stopped with it."""
    await app[STATE].backup_jobs.stop()


def static_dir() -> Path:
    return Path(str(resources.files("node.console") / "static"))


def make_app(state: ConsoleState) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_guard])
    app[STATE] = state
    app.on_response_prepare.append(_headers)
    app.on_shutdown.append(_stop_jobs)
    table = web.RouteTableDef()
    for add in PAGE_GROUPS:
        add(table)
    app.add_routes(table)
    app.router.add_static("/static", static_dir(), follow_symlinks=False, append_version=False)
    return app


def tls_context(cert_chain: Path, key: Path, trust: list[Path]) -> ssl.SSLContext:
    """Server TLS: the node's certificate, TLS 1.2 or newer, a client certificate required and
    verified against ``trust`` (the province root and this node's region CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_chain, key)
    context.verify_mode = ssl.CERT_REQUIRED
    for path in trust:
        context.load_verify_locations(cafile=str(path))
    return context


class Console:
    """The running console; :meth:`stop` closes its listener (connections get 5 s)."""

    def __init__(self, runner: web.AppRunner, address: str) -> None:
        self._runner = runner
        #: HOST:PORT it listens on (the port chosen when the config said 0).
        self.address = address

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    async def stop(self) -> None:
        await self._runner.cleanup()


async def serve(state: ConsoleState, listen: str, tls: ssl.SSLContext) -> Console:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    runner = web.AppRunner(
        make_app(state), handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, int(port), ssl_context=tls)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_host, bound_port = runner.addresses[0][:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    log.info("console_serving", address=address)
    return Console(runner, address)
