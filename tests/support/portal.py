"""The public portal as the public meets it: ``govnode portal serve`` as a process of its own,
in front of a node that runs in the test, reached over HTTPS with no client certificate."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from node.app import RunningNode
from node.ports import free_port
from portal.server import self_signed, wait_until_answering, write_config
from tests.support.nodes import GOVNODE, ProvinceSetup

#: How long a portal may take to answer its first health check.
START_TIMEOUT_S = 30.0


def with_budget(setup: ProvinceSetup, **fields: int) -> ProvinceSetup:
    """``setup`` with other ``[opendata]`` budgets per member of the public (the node keeps
    them: node.opendata._budget)."""
    opendata = setup.config.opendata.model_copy(update=fields)
    return dataclasses.replace(setup, config=setup.config.model_copy(update={"opendata": opendata}))


#: Budgets for a test that makes many requests from one address, not about the budgets.
ROOMY = {"public_requests_per_minute": 6000, "public_burst": 3000}


@dataclass(frozen=True)
class RunningPortal:
    url: str
    config: Path
    process: subprocess.Popen[bytes]
    #: What the process wrote to stderr (its log: warnings and errors), once it has stopped.
    stderr: bytearray = dataclasses.field(default_factory=bytearray)


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


def client(local_address: str = "") -> aiohttp.ClientSession:
    """A member of the public's HTTP client: no client certificate, the portal's self-signed
    certificate accepted (a trial portal's); from ``local_address`` on loopback if given."""
    connector = aiohttp.TCPConnector(
        ssl=False, local_addr=(local_address, 0) if local_address else None
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


@contextlib.asynccontextmanager
async def run_portal(config: Path, *, stdout: Path | None = None) -> AsyncIterator[RunningPortal]:
    """``govnode portal serve --config CONFIG`` until the block ends; yields once the portal
    answers /healthz (whatever the node's state). ``stdout``: a file for what it prints there
    (spans, with ``[tracing] exporter = "console"``)."""
    text = await asyncio.to_thread(config.read_text, encoding="utf-8")
    listen = next(line.split('"')[1] for line in text.splitlines() if line.startswith("listen = "))
    url = f"https://{listen}"
    out = None if stdout is None else await asyncio.to_thread(stdout.open, "wb")
    process = await asyncio.to_thread(
        subprocess.Popen,
        [*GOVNODE, "portal", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL if out is None else out,
        stderr=subprocess.PIPE,
        env={**os.environ, "GOVNODE_LOG__FORMAT": "json"},
    )
    try:
        try:
            await wait_until_answering(url, False, process, timeout_s=START_TIMEOUT_S)
        except RuntimeError as exc:
            err = process.stderr.read() if process.stderr and process.poll() is not None else b""
            raise AssertionError(f"govnode portal serve: {exc}: {err!r}") from None
        running = RunningPortal(url, config, process)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 5)
        if process.stderr is not None:
            if process.poll() is not None and "running" in locals():
                running.stderr.extend(await asyncio.to_thread(process.stderr.read))
            process.stderr.close()
        if out is not None:
            out.close()
