"""The portal's HTTP application: the routes, and what every request goes through.

Every request, before any handler:

- its query string is at most :data:`MAX_QUERY` characters (414 otherwise) and a body at most
  :data:`MAX_BODY` bytes (413, aiohttp's ``client_max_size``); headers are bounded by aiohttp's
  parser (8 KiB a line);
- it counts against the requests in flight from its address and from everyone (429 and 503,
  both with ``Retry-After``): a download counts until its last byte, so slow readers cannot pile
  up;
- a refusal of the node (:class:`portal.node.NodeRefusal`) becomes its HTTP status with the
  node's message: JSON under ``/api/`` and for the catalog documents, a Chinese page elsewhere;
  RESOURCE_EXHAUSTED is 429 with ``Retry-After``, from the node's budget for that member of the
  public (``[opendata] public_requests_per_minute``), which every portal process in front of
  the node shares.

Every response carries the security headers of :data:`SECURITY_HEADERS`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web

from gateway.tracing import Tracing
from portal.config import PortalConfig
from portal.node import Caller, NodeClient, NodeRefusal

log = structlog.get_logger("govnode.portal")

MAX_QUERY = 4096
MAX_BODY = 64 * 1024
MAX_KEY_CHARS = 200
#: Query parameters a key must never travel in (it would end up in logs and histories).
KEY_PARAMS = frozenset({"key", "apikey", "api_key", "token"})

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


class ReceiptRefused(Exception):
    """A receipt did not verify: ``check`` names the check that failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


class ReceiptChecker(Protocol):
    """Checks a download receipt offline against the province root (the command that starts
    the portal passes the node's own check in: the portal never imports ``node``). Returns
    what the receipt states; raises :class:`ReceiptRefused`."""

    def __call__(
        self, receipt: bytes, *, sha256: str | None, size: int | None
    ) -> Mapping[str, Any]: ...


class HttpRefusal(Exception):
    """A request the portal itself refuses, before asking the node."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class InFlight:
    """Requests in flight, per address and in all."""

    per_address: int
    total: int
    by_address: dict[str, int] = field(default_factory=dict)
    all: int = 0

    def enter(self, address: str) -> None:
        if self.all >= self.total:
            raise HttpRefusal(503, "门户繁忙：同时处理的请求已达上限，请稍后再试", retry_after=1)
        if self.by_address.get(address, 0) >= self.per_address:
            raise HttpRefusal(
                429,
                f"同一地址同时进行的请求至多 {self.per_address} 个（下载直到最后一个字节）",
                retry_after=1,
            )
        self.by_address[address] = self.by_address.get(address, 0) + 1
        self.all += 1

    def leave(self, address: str) -> None:
        self.all -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]


@dataclass(frozen=True)
class Portal:
    """What the handlers share, kept on the application."""

    config: PortalConfig
    node: NodeClient
    check_receipt: ReceiptChecker
    in_flight: InFlight
    #: A span per request (gateway.tracing), continuing the browser's traceparent if any.
    tracing: Tracing = field(default_factory=Tracing)

    @property
    def base_url(self) -> str:
        return self.config.base_url


PORTAL: web.AppKey[Portal] = web.AppKey("portal", Portal)


def portal_of(request: web.Request) -> Portal:
    return request.app[PORTAL]


def address_of(request: web.Request) -> str:
    """The client's address, as the node's budget and the receipt know it."""
    return request.remote or "unknown"


def api_key(request: web.Request) -> str:
    """The 授权开放 key the client sends (``X-API-Key`` or ``Authorization: Bearer``), "" for
    none; never from the URL."""
    for name in request.query:
        if name.lower() in KEY_PARAMS:
            raise HttpRefusal(
                400,
                f"{name}: a key never travels in the address (it ends up in logs); send it in "
                "the X-API-Key header",
            )
    given = request.headers.get("X-API-Key", "")
    bearer = request.headers.get("Authorization", "")
    if bearer:
        scheme, _, value = bearer.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise HttpRefusal(400, "Authorization: only 'Bearer <key>' is understood")
        if given and given != value.strip():
            raise HttpRefusal(400, "X-API-Key and Authorization name different keys")
        given = value.strip()
    if len(given) > MAX_KEY_CHARS:
        raise HttpRefusal(400, f"the key has {len(given)} characters; at most {MAX_KEY_CHARS}")
    return given


def caller_of(request: web.Request, *, with_key: bool = True) -> Caller:
    return Caller(address_of(request), api_key(request) if with_key else "")


def wants_json(request: web.Request) -> bool:
    path = request.path
    return path.startswith("/api/") or path.startswith("/catalog.") or path == "/openapi.json"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorPage = Callable[[web.Request, int, str], web.Response]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def error_response(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    retry_after: int | None,
    page: ErrorPage,
) -> web.Response:
    if wants_json(request):
        response = web.json_response(
            {"error": {"status": status, "code": code, "message": message}},
            status=status,
            dumps=_dumps,
        )
    else:
        response = page(request, status, message)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def guard(page: ErrorPage) -> Any:
    """The middleware every request goes through (see the module's docstring), in the
    request's trace span."""
    guarded = _guard(page)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tracing = portal_of(request).tracing
        span = tracing.http_span(request.method, _route(request), request.headers)
        status = 500
        try:
            response = await guarded(request, handler)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            tracing.end_http(span, status)

    return middleware


def _route(request: web.Request) -> str:
    """The route's pattern ("/api/v1/datasets/{code}"): a span name of few values."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _guard(page: ErrorPage) -> Middleware:
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        portal = portal_of(request)
        address = address_of(request)
        try:
            if len(request.rel_url.raw_query_string) > MAX_QUERY:
                raise HttpRefusal(414, f"查询字符串至多 {MAX_QUERY} 个字符")
            portal.in_flight.enter(address)
        except HttpRefusal as exc:
            return error_response(
                request, exc.status, _code(exc.status), exc.message, exc.retry_after, page
            )
        started = time.monotonic()
        try:
            response = await handler(request)
            _logged(request, response.status, started)
            return response
        except NodeRefusal as exc:
            _logged(request, exc.http_status, started, refusal=exc.code)
            return error_response(
                request, exc.http_status, exc.code, exc.message, exc.retry_after, page
            )
        except HttpRefusal as exc:
            return error_response(
                request, exc.status, _code(exc.status), exc.message, exc.retry_after, page
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = exc.text or exc.reason
            if exc.status == 413:
                text = f"请求体至多 {MAX_BODY} 字节"
            return error_response(request, exc.status, _code(exc.status), text, None, page)
        except Exception:
            # A bug of the portal's: logged with its traceback, never shown to the public.
            log.exception("portal_request_failed", method=request.method, path=request.path[:200])
            return error_response(
                request, 500, "INTERNAL", "门户内部错误，请稍后再试", None, _plain_page
            )
        finally:
            portal.in_flight.leave(address)

    return middleware


def _logged(request: web.Request, status: int, started: float, refusal: str = "") -> None:
    """One event per request (debug: the node audits every call that reads data, with the
    recipient; the portal's own log is for operators)."""
    log.debug(
        "portal_request",
        method=request.method,
        path=request.path[:200],
        status=status,
        refusal=refusal or None,
        ms=round((time.monotonic() - started) * 1000, 1),
    )


def _plain_page(request: web.Request, status: int, message: str) -> web.Response:
    return web.Response(text=message, status=status, content_type="text/plain", charset="utf-8")


def _code(status: int) -> str:
    return {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "PAYLOAD_TOO_LARGE",
        414: "URI_TOO_LONG",
        415: "UNSUPPORTED_MEDIA_TYPE",
        416: "OUT_OF_RANGE",
        429: "RESOURCE_EXHAUSTED",
        503: "UNAVAILABLE",
    }.get(status, "ERROR")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def make_app(
    config: PortalConfig,
    node: NodeClient,
    check_receipt: ReceiptChecker,
    tracing: Tracing | None = None,
) -> web.Application:
    """The application, its routes and middleware; the caller runs it (portal.server).
    ``tracing``: the portal's spans (None: off; a browser's trace context is passed on)."""
    from portal import api, files, pages

    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[guard(pages.error_page)], handler_args=None
    )
    app[PORTAL] = Portal(
        config=config,
        node=node,
        check_receipt=check_receipt,
        in_flight=InFlight(
            per_address=config.section.max_concurrent_per_address,
            total=config.section.max_concurrent,
        ),
        tracing=tracing if tracing is not None else Tracing(),
    )
    app.on_response_prepare.append(_security_headers)
    api.add_routes(app)
    files.add_routes(app)
    pages.add_routes(app)
    return app
