"""A province and a 福州 city node on loopback for the conformance tests, a tester bundle from
the province, and the deliberately broken targets no mandatory case may pass against.

Each breakage removes one safety from a real city node (by patching the one function that
holds it, or by putting a relay in front of the node's port); everything else about the
node stays real: PKI, TLS, database, federation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from typer.testing import CliRunner

from conformance.session import Options
from node.app import RunningNode
from node.cli import app as cli_app
from node.config import NodeConfig
from node.demo._main import free_port
from node.pki import Revocations, normalise_serial
from node.storage import Database
from tests.support.nodes import ProvinceSetup, link_peers, make_city, make_province, start

FUZHOU = "350100"
Patch = Callable[[pytest.MonkeyPatch, "Platform"], None]


@dataclass
class Platform:
    province: ProvinceSetup
    city: ProvinceSetup
    tester: Path
    nodes: dict[str, RunningNode] = field(default_factory=dict)
    #: Where the suite should find the target (a relay in front of the city, when broken so).
    target: str = ""
    plaintext_port: int = 0  # the city's extra plaintext port, when a breakage opened one

    @property
    def root(self) -> Path:
        return self.province.config.path(self.province.config.tls.root)

    def options(self, **overrides: Any) -> Options:
        values: dict[str, Any] = {
            "province": self.province.config.node.listen,
            "target": self.target or self.city.config.node.listen,
            "root": self.root,
            "tester": self.tester,
            "sync_timeout_s": 15.0,
            "revocation_timeout_s": 3.0,  # the platform's nodes heartbeat every 0.5 s
            "latency_calls": 60,
            "latency_budget_s": 10.0,
        }
        return Options(**(values | overrides))


async def issue_tester(province: ProvinceSetup, out: Path, name: str = "lab-1") -> Path:
    """The province issues a tester bundle with the real CLI command (in a thread: the
    command runs its own event loop)."""
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli_app,
        [
            "certs",
            "issue-tester",
            "--config",
            str(province.config_path),
            "--name",
            name,
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def _fast(setup: ProvinceSetup, sections: dict[str, dict[str, Any]] | None = None) -> ProvinceSetup:
    """The node with a 0.5 s heartbeat and ``sections`` (config section -> values) changed."""
    cfg: NodeConfig = setup.config
    fed = cfg.federation.model_copy(update={"heartbeat_seconds": 0.5})
    update: dict[str, Any] = {"federation": fed}
    for name, values in (sections or {}).items():
        update[name] = getattr(cfg, name).model_copy(update=values)
    return dataclasses.replace(setup, config=cfg.model_copy(update=update))


async def wait_until_revoked(platform: Platform, within_s: float = 15.0) -> None:
    """Poll the city's database (bounded) until it holds the bundle's revoked certificate:
    revocations made at the province reach a city on its next heartbeat."""
    manifest = json.loads((platform.tester / "tester.json").read_text(encoding="utf-8"))
    serial = manifest["negative"]["revoked"]["serial"]
    db = await Database.open(platform.city.config.database_url)
    try:
        revocations = Revocations(db)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if await revocations.reason_for(normalise_serial(serial)) is not None:
                return
            await asyncio.sleep(0.2)
    finally:
        await db.close()
    pytest.fail(f"the city did not learn the tester's revoked certificate within {within_s} s")


@contextlib.asynccontextmanager
async def platform(
    base: Path,
    province_db: str,
    city_db: str,
    *,
    breakage: Patch | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
    city_sections: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Platform]:
    """Province + 福州 on loopback with a tester bundle; ``breakage`` is applied (with
    ``monkeypatch``) after the province started and before the city starts."""
    province = make_province(base / "province", province_db)
    city = make_city(base / "fuzhou", city_db, province, FUZHOU, "福州市")
    province = link_peers(province, {FUZHOU: city.config.node.listen})
    tester = await issue_tester(province, base / "tester")
    plat = Platform(_fast(province), _fast(city, city_sections), tester)
    try:
        plat.nodes["province"] = await start(plat.province)
        if breakage is not None:
            assert monkeypatch is not None
            breakage(monkeypatch, plat)
        plat.nodes["city"] = await start(plat.city)
        await wait_until_revoked(plat)
        yield plat
    finally:
        for node in reversed(list(plat.nodes.values())):
            await node.stop(grace=0)


# --- relays: a front port with different rules, piping into the real node ---------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, port: int) -> None:
    try:
        node_r, node_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, node_w), _pipe(node_r, client_w))


@contextlib.asynccontextmanager
async def front(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any],
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[str]:
    port = free_port()
    server = await asyncio.start_server(handler, "127.0.0.1", port, ssl=ssl_context)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def sniffing_relay(tls_port: int, plain_port: int) -> Callable[..., Any]:
    """TLS (first byte 0x16) goes to the node's TLS port, anything else to its plaintext one."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(1)
        if not first:
            writer.close()
            return
        port = tls_port if first == b"\x16" else plain_port
        try:
            node_r, node_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        node_w.write(first)
        await asyncio.gather(_pipe(reader, node_w), _pipe(node_r, writer))

    return handle


def old_tls_context(city: ProvinceSetup) -> ssl.SSLContext:
    """A server context that accepts TLS 1.0 to 1.2 with the city node's own certificate."""
    cfg = city.config
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(cfg.path(cfg.tls.cert), cfg.path(cfg.tls.key))
    ctx.load_verify_locations(cfg.path(cfg.tls.root))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    return ctx


def open_plaintext_port(monkeypatch: pytest.MonkeyPatch, plat: Platform) -> None:
    """The city also listens WITHOUT TLS on an extra loopback port (node.app.build_server)."""
    import node.app

    original: Callable[..., grpc.aio.Server] = getattr(node.app, "build_server")  # noqa: B009
    plat.plaintext_port = free_port()

    def build(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        server = original(*args, **kwargs)
        server.add_insecure_port(f"127.0.0.1:{plat.plaintext_port}")
        return server

    monkeypatch.setattr(node.app, "build_server", build)
