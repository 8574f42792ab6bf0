"""Running the portal: HTTPS for the public (TLS 1.2 or newer, no client certificate), mutual
TLS to the node; and ``govnode portal init``'s configuration and self-signed certificate."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.tracing_setup import make_tracer_provider, tracing_of
from portal.app import ReceiptChecker, make_app
from portal.config import DEFAULT_LISTEN, PortalConfig, split_address
from portal.node import NodeClient

#: Seconds a stopping portal lets requests in flight finish.
SHUTDOWN_GRACE_S = 5.0


def server_tls(config: PortalConfig) -> ssl.SSLContext:
    """The public side's TLS: the portal's own certificate, TLS 1.2+, no client certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.server_cert, config.server_key)
    context.verify_mode = ssl.CERT_NONE
    return context


def node_client(config: PortalConfig) -> NodeClient:
    return NodeClient(
        config.section.node,
        config.node_tls,
        server_name=config.section.node_name,
        timeout_s=config.section.node_timeout_seconds,
    )


async def serve(
    config: PortalConfig,
    check_receipt: ReceiptChecker,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); ``ready`` gets the public address.
    Raises gateway.tracing_setup.TracingUnavailable if ``[tracing]`` needs the absent SDK."""
    provider = make_tracer_provider(config.tracing, "govnode-portal", public=True)
    node = node_client(config)
    app = make_app(config, node, check_receipt, tracing_of(provider, config.tracing.sample_ratio))
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    host, port = config.listen
    site = web.TCPSite(
        runner, host, port, ssl_context=server_tls(config), shutdown_timeout=SHUTDOWN_GRACE_S
    )
    stopping = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await site.start()
        if ready is not None:
            ready(config.base_url)
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await node.close()
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)  # flushes the spans still queued


async def wait_until_answering(
    url: str,
    tls: ssl.SSLContext | bool,
    process: subprocess.Popen[bytes],
    *,
    timeout_s: float = 30.0,
) -> None:
    """Wait until a portal process started at ``url`` answers ``/healthz`` (whatever its
    node's state); RuntimeError if it exits first or does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    connector = aiohttp.TCPConnector(ssl=tls)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=5)
    ) as web:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the portal exited with status {process.returncode}")
            try:
                async with web.get(f"{url}/healthz") as response:
                    await response.read()
                    return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the portal at {url} did not answer in {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def self_signed(directory: Path, host: str, *, days: int = 90) -> tuple[Path, Path]:
    """A self-signed server certificate for trials, for ``host`` (a name or an address):
    ``server.key`` (mode 600) and ``server.crt`` in ``directory``. Browsers warn about it;
    production uses a certificate from a public CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "server.key", directory / "server.crt"
    key_path.touch(mode=0o600, exist_ok=False)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def write_config(
    directory: Path,
    *,
    node: str,
    credentials: Path,
    listen: str = DEFAULT_LISTEN,
    base_url: str = "",
    node_name: str = "",
    server_cert: Path = Path("server.crt"),
    server_key: Path = Path("server.key"),
) -> Path:
    """``portal.toml`` in ``directory`` (refused if one exists)."""
    split_address(listen)
    split_address(node)

    def text(value: object) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# The public open data portal (govnode portal serve --config portal.toml).",
        "[portal]",
        f"listen = {text(listen)}",
        f"base_url = {text(base_url)}  # the address the public uses; default: listen",
        f"node = {text(node)}  # the node's gRPC address (mutual TLS)",
        f"node_name = {text(node_name)}  # the node certificate's name, if not the address",
        f"credentials = {text(credentials)}  # from govnode certs issue-portal",
        f"server_cert = {text(server_cert)}",
        f"server_key = {text(server_key)}",
        "# max_concurrent_per_address = 8",
        "# max_concurrent = 512",
        "# download_seconds = 3600",
        "# write_stall_seconds = 30",
        "# node_timeout_seconds = 10",
        "",
    ]
    path = directory / "portal.toml"
    with path.open("x", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path
