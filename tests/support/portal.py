"""The public portal as the public meets it: ``govnode portal serve`` as a process of its own,
in front of a node that runs in the test, reached over HTTPS with no client certificate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.app import RunningNode
from node.ports import free_port
from portal.server import self_signed, write_config
from tests.support.nodes import GOVNODE, ProvinceSetup

#: How long a portal may take to answer its first health check.
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RunningPortal:
    url: str
    config: Path
    process: subprocess.Popen[bytes]


def portal_config(
    setup: ProvinceSetup, node: RunningNode, directory: Path, *, name: str = "opendata-1"
) -> Path:
    """portal.toml for a portal of ``setup``'s node, listening on a free loopback port with a
    self-signed certificate (what ``govnode portal init --self-signed`` writes)."""
    bundle = setup.portal(name)
    directory.mkdir(parents=True, exist_ok=True)
    self_signed(directory, "127.0.0.1")
    return write_config(
        directory,
        node=node.address,
        credentials=bundle.key.parent,
        listen=f"127.0.0.1:{free_port()}",
    )


def client(**kwargs: Any) -> aiohttp.ClientSession:
    """A member of the public's HTTP client: no client certificate, the portal's self-signed
    certificate accepted (a trial portal's)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=False), timeout=aiohttp.ClientTimeout(total=30), **kwargs
    )


@contextlib.asynccontextmanager
async def run_portal(config: Path) -> AsyncIterator[RunningPortal]:
    """``govnode portal serve --config CONFIG`` until the block ends; yields once the portal
    answers /healthz (whatever the node's state)."""
    text = await asyncio.to_thread(config.read_text, encoding="utf-8")
    listen = next(line.split('"')[1] for line in text.splitlines() if line.startswith("listen = "))
    url = f"https://{listen}"
    process = await asyncio.to_thread(
        subprocess.Popen,
        [*GOVNODE, "portal", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "GOVNODE_LOG__FORMAT": "json"},
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with client() as session:
            while True:
                if process.poll() is not None:
                    err = process.stderr.read() if process.stderr else b""
                    raise AssertionError(f"govnode portal serve exited: {err!r}")
                try:
                    async with session.get(f"{url}/healthz") as response:
                        await response.read()
                        break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"the portal did not answer in {START_TIMEOUT_S} s")
                await asyncio.sleep(0.1)
        yield RunningPortal(url, config, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if process.stderr is not None:
            process.stderr.close()
