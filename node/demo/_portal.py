"""The demo's public portal: ``govnode portal serve`` as a process of its own in front of the
demo's node, as ``govnode portal init --self-signed`` would set it up, and a member of the
public's HTTPS client that trusts exactly that self-signed certificate (no client
certificate)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from gateway.identity import identity_of
from node.app import RunningNode
from node.config import NodeConfig
from node.pki import issue_portal
from node.ports import free_port
from portal.server import self_signed, wait_until_answering, write_config

if TYPE_CHECKING:
    from node.demo._main import Demo

#: How long the portal may take to answer its first request.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoPortal:
    url: str
    identity: str  # the portal certificate's SPIFFE ID, as the node sees it
    server_cert: Path
    log: Path

    def session(self, **headers: str) -> aiohttp.ClientSession:
        """A member of the public's client: verifies the portal's certificate, presents none."""
        tls = ssl.create_default_context(cafile=str(self.server_cert))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls),
            timeout=aiohttp.ClientTimeout(total=60),
            headers=headers,
        )


@contextlib.asynccontextmanager
async def public_portal(
    demo: Demo, node: RunningNode, config: NodeConfig
) -> AsyncIterator[DemoPortal]:
    """The portal process until the block ends (SIGTERM, then kill)."""
    keypair, _ = issue_portal(config, name="demo", out=demo.base / "portal")
    site = demo.base / "portal-site"
    site.mkdir(parents=True, exist_ok=True)
    cert, _ = self_signed(site, "127.0.0.1")
    listen = f"127.0.0.1:{free_port()}"
    path = write_config(site, node=node.address, credentials=demo.base / "portal", listen=listen)
    portal = DemoPortal(f"https://{listen}", str(identity_of(keypair.cert)), cert, site / "log")
    command = [sys.executable, "-c", "from node.cli import main; main()"]
    with portal.log.open("wb") as log:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [*command, "portal", "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        tls = ssl.create_default_context(cafile=str(portal.server_cert))
        await wait_until_answering(portal.url, tls, process, timeout_s=START_TIMEOUT_S)
        yield portal
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
