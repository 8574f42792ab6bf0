"""The metrics listener: ``/metrics`` (Prometheus text) and ``/healthz`` (JSON) over HTTP.

It runs on the node's own event loop (aiohttp takes no signal handlers and raises a plain
OSError when it cannot bind). On a loopback address it is plain HTTP: whoever can reach it is
on the node's host. Anywhere else (``[metrics] tls = true``) it is HTTPS with the node
certificate and requires a client certificate that chains to the province root (checked by
the handshake, with the CAs' name constraints), names this trust domain, is not revoked, and
belongs to a data management authority (数据管理机构, the operator: ``govnode certs
issue-authority``) or a node; an agency's or a portal's certificate gets 403. What metrics
show (peers, call volumes, certificate dates) maps the platform, so not every party may read
them.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway.identity import IdentityError, Role, identity_of
from gateway.tls import TlsFiles
from node.ops._metrics import NodeMetrics

#: Roles whose certificate may read the metrics over mutual TLS.
MONITOR_ROLES = frozenset({Role.AUTHORITY, Role.NODE})

#: Why a serial is revoked, or None (node.pki.Revocations.reason_for).
RevocationCheck = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class HealthFacts:
    """What /healthz says besides the node's health: its mode and region."""

    mode: str
    region: str
    serving: Callable[[], bool]


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """HTTPS with the node certificate, requiring a client certificate chained to the root."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.chain, files.key)
    context.load_verify_locations(cafile=str(files.root))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _monitor_check(
    trust_domain: str, is_revoked: RevocationCheck
) -> Callable[[web.Request], Awaitable[str | None]]:
    async def problem(request: web.Request) -> str | None:
        ssl_object = request.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return "a client certificate is required"
        cert = x509.load_der_x509_certificate(der)
        try:
            identity = identity_of(cert)
        except IdentityError as exc:
            return str(exc)
        if identity.trust_domain != trust_domain:
            return f"{identity} is not of trust domain {trust_domain}"
        if identity.role not in MONITOR_ROLES:
            return f"{identity} may not read metrics: a data management authority or a node may"
        reason = await is_revoked(format(cert.serial_number, "x"))
        if reason is not None:
            return f"the certificate of {identity} is revoked ({reason})"
        return None

    return problem


def metrics_app(
    metrics: NodeMetrics,
    facts: HealthFacts,
    *,
    monitor: Callable[[web.Request], Awaitable[str | None]] | None = None,
) -> web.Application:
    @web.middleware
    async def only_monitors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if monitor is not None and (problem := await monitor(request)) is not None:
            return web.Response(status=403, text=f"forbidden: {problem}\n")
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        serving = facts.serving()
        body = {"serving": serving, "mode": facts.mode, "region": facts.region}
        return web.Response(
            status=200 if serving else 503,
            text=json.dumps(body),
            content_type="application/json",
        )

    # No request body is read: the smallest limit aiohttp allows.
    app = web.Application(middlewares=[only_monitors], client_max_size=1024)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/healthz", healthz)
    return app


class MetricsListener:
    """The running listener; :meth:`stop` closes it."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_listener(
    address: str,
    metrics: NodeMetrics,
    facts: HealthFacts,
    *,
    tls: TlsFiles | None = None,
    trust_domain: str = "",
    is_revoked: RevocationCheck | None = None,
) -> MetricsListener:
    """Listen on ``address`` (HOST:PORT; port 0 picks a free one). Raises OSError when the
    address cannot be bound. With ``tls``: mutual TLS for monitors only (see the module)."""
    monitor = None
    context = None
    if tls is not None:
        assert is_revoked is not None
        context = server_context(tls)
        monitor = _monitor_check(trust_domain, is_revoked)
    runner = web.AppRunner(
        metrics_app(metrics, facts, monitor=monitor), access_log=None, shutdown_timeout=2.0
    )
    await runner.setup()
    host, _, port = address.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return MetricsListener(runner, int(runner.addresses[0][1]))
