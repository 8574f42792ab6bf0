"""What one member of the public can make the portal do (第三十条 with the node's limits):

- requests are budgeted per client address by the node, so two portal processes in front of
  one node share one budget: over it, 429 with Retry-After from either, while another address
  is still served;
- downloads in flight are limited per address, and a client that stops reading is dropped
  after ``write_stall_seconds``: a slow reader costs the portal a connection for a while, never
  memory, and never blocks others."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

from tests.opendata.test_download_api import UNIVERSAL, publish
from tests.support.nodes import make_province, start
from tests.support.portal import client, portal_config, run_portal, with_budget

#: Bounds of the waits below (each loop stops by itself).
WAIT_S = 30.0


async def test_budgets_per_address_hold_across_portal_processes(
    tmp_path: Path, db_url: str
) -> None:
    setup = with_budget(
        make_province(tmp_path / "province", db_url),
        public_requests_per_minute=6,
        public_burst=3,
        download_cost=2,
    )
    node = await start(setup)
    try:
        await publish(node, setup, UNIVERSAL, 20)
        one = portal_config(setup, node, tmp_path / "portal-1", name="opendata-1")
        two = portal_config(setup, node, tmp_path / "portal-2", name="opendata-2")
        async with run_portal(one) as first, run_portal(two) as second, client() as web:
            for _ in range(3):
                async with web.get(f"{first.url}/api/v1/datasets") as response:
                    assert response.status == 200
            async with web.get(f"{first.url}/api/v1/datasets") as response:
                body = await response.json()
                assert response.status == 429, body
                assert int(response.headers["Retry-After"]) >= 1
                assert body["error"]["code"] == "RESOURCE_EXHAUSTED"
                assert "ip:127.0.0.1" in body["error"]["message"]
            # the other portal process: the same address, the same (spent) budget
            async with web.get(f"{second.url}/api/v1/datasets") as response:
                assert response.status == 429 and "Retry-After" in response.headers
            # a page says so in Chinese, with the same status
            async with web.get(f"{second.url}/") as response:
                assert response.status == 429
                assert "请求过于频繁" in await response.text()
            # another address has a budget of its own
            async with client("127.0.0.2") as other:
                async with other.get(f"{second.url}/api/v1/datasets") as response:
                    assert response.status == 200
                async with other.get(
                    f"{second.url}/api/v1/datasets/{UNIVERSAL.resource_code}/data.csv"
                ) as response:
                    assert response.status == 200 and await response.read()
    finally:
        await node.stop(grace=0)


def _stalled_download(host: str, port: int, path: str) -> ssl.SSLSocket:
    """A client that asks for a file and never reads it, with a small receive buffer."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(WAIT_S)
    raw.connect((host, port))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tls = context.wrap_socket(raw, server_hostname=host)
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return tls


async def test_a_slow_reader_is_dropped_and_cannot_pile_up_downloads(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    node = await start(setup)
    try:
        await publish(node, setup, UNIVERSAL, 3000)  # a file of about a megabyte
        config = portal_config(setup, node, tmp_path / "portal")
        text = config.read_text(encoding="utf-8")
        text = text.replace("# max_concurrent_per_address = 8", "max_concurrent_per_address = 1")
        text = text.replace("# write_stall_seconds = 30", "write_stall_seconds = 1")
        config.write_text(text, encoding="utf-8")
        path = f"/api/v1/datasets/{UNIVERSAL.resource_code}/data.csv"
        async with run_portal(config) as portal, client() as web:
            host, port = portal.url.removeprefix("https://").rsplit(":", 1)
            stalled = await asyncio.to_thread(_stalled_download, host, int(port), path)
            try:
                # while it holds its download, the same address gets no second request ...
                deadline = time.monotonic() + WAIT_S
                while True:
                    async with web.get(f"{portal.url}/api/v1/datasets") as response:
                        if response.status == 429:
                            assert "同一地址同时进行的请求至多 1 个" in (await response.text())
                            break
                    assert time.monotonic() < deadline, "the stalled download never counted"
                    await asyncio.sleep(0.05)
                # ... until the portal drops the reader that stopped reading
                while True:
                    async with web.get(f"{portal.url}/api/v1/datasets") as response:
                        if response.status == 200:
                            break
                    assert time.monotonic() < deadline, "the stalled reader was never dropped"
                    await asyncio.sleep(0.2)
                async with web.get(f"{portal.url}/healthz") as response:
                    assert response.status == 200
                async with web.get(f"{portal.url}{path}") as response:
                    assert response.status == 200 and len(await response.read()) > 500_000
            finally:
                stalled.close()
    finally:
        await node.stop(grace=0)
