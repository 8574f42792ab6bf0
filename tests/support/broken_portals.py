"""Portals that break one rule each, for the open data cases' negative tests: an HTTPS server on
loopback (aiohttp) in front of a real portal, relaying every request to it and changing one
thing about the answers, or answering some requests itself. It is the system under test, not
a mock of the suite's: everything it does not break, the real portal does.
"""

from __future__ import annotations

import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from node.ports import free_port
from portal.server import self_signed

#: Answers a request itself (a response) or lets it through (None).
Intercept = Callable[[web.Request], Awaitable[web.Response | None]]


@dataclass
class Answer:
    """The real portal's answer, which a breakage may change before it is sent on."""

    status: int
    headers: dict[str, str]
    body: bytes


Mutate = Callable[[web.Request, Answer], Answer]
_HOP = {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}


def server_context(
    directory: Path, *, old_tls: bool = False, ask_cert: bool = False
) -> ssl.SSLContext:
    """A throwaway certificate for 127.0.0.1; ``old_tls`` accepts TLS 1.0 and 1.1 too,
    ``ask_cert`` asks clients for a certificate (and takes none)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.crt", directory / "server.key"
    if not cert.exists():
        self_signed(directory, "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if old_tls:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    if ask_cert:
        ctx.load_verify_locations(cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


@contextlib.asynccontextmanager
async def broken_portal(
    upstream: str,
    directory: Path,
    *,
    mutate: Mutate | None = None,
    intercept: Intercept | None = None,
    old_tls: bool = False,
    ask_cert: bool = False,
) -> AsyncIterator[str]:
    """An HTTPS base URL on loopback that relays to ``upstream`` with one rule broken."""
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=False),
        timeout=aiohttp.ClientTimeout(total=30),
        auto_decompress=False,
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        if intercept is not None:
            answered = await intercept(request)
            if answered is not None:
                return answered
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", *_HOP}}
        async with http.request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as response:
            answer = Answer(
                response.status,
                {k: v for k, v in response.headers.items() if k.lower() not in _HOP},
                await response.read(),
            )
        if mutate is not None:
            answer = mutate(request, answer)
        return web.Response(status=answer.status, headers=answer.headers, body=answer.body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    context = server_context(directory, old_tls=old_tls, ask_cert=ask_cert)
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    try:
        await site.start()
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await http.close()
