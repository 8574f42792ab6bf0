"""Hostile requests to the public portal: each gets a clear 4xx naming the problem (never a 5xx,
never a hang), quotes at most a short prefix of what was sent, and the portal and its node stay
healthy and keep serving the next member of the public."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from tests.opendata.test_download_api import UNIVERSAL, publish
from tests.support.nodes import make_province, start
from tests.support.portal import ROOMY, client, portal_config, run_portal, with_budget

#: (method, path and query, extra headers, body): all refused with a 4xx.
HOSTILE: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/api/v1/datasets?page_size=999999999999", {}, None),
    ("GET", "/api/v1/datasets?page_size=-1", {}, None),
    ("GET", "/api/v1/datasets?open_type=secret", {}, None),
    ("GET", "/api/v1/datasets?q=%ff%fe%00", {}, None),
    ("GET", "/api/v1/datasets?page_token=%00%00not-a-token", {}, None),
    ("GET", "/api/v1/datasets/" + "9" * 300, {}, None),
    ("GET", "/api/v1/datasets/%2e%2e%2f%2e%2e%2fetc%2fpasswd", {}, None),
    ("GET", "/api/v1/datasets/{u}/rows?x__exact=1", {}, None),
    (
        "GET",
        "/api/v1/datasets/{u}/rows?" + "&".join(f"csrq__exact={i}" for i in range(40)),
        {},
        None,
    ),
    ("GET", "/api/v1/datasets/{u}/rows?csrq__in=" + ",".join(["1"] * 200), {}, None),
    ("GET", "/api/v1/datasets/{u}/rows?items=" + ",".join(["bh"] * 50), {}, None),
    ("GET", "/api/v1/datasets/{u}/rows?page_token=forged", {}, None),
    ("GET", "/api/v1/datasets/{u}/data.csv", {"Range": f"bytes={2**63}-"}, None),
    ("GET", "/api/v1/datasets/{u}/data.csv?bom=maybe", {}, None),
    ("GET", "/api/v1/datasets/{u}/data.jsonl?bom=1", {}, None),
    ("GET", "/api/v1/datasets/{u}/data.csv", {"X-API-Key": "k" * 500}, None),
    ("GET", "/api/v1/datasets/{u}/data.csv", {"X-API-Key": "not a key!"}, None),
    ("GET", "/api/v1/datasets/{u}/data.csv", {"Authorization": "Basic dXNlcjpwYXNz"}, None),
    ("GET", "/catalog.jsonld?page=0x10", {}, None),
    ("GET", "/catalog.xml", {}, None),
    ("POST", "/api/v1/applications", {"Content-Type": "application/json"}, b"{" * 5000),
    ("POST", "/api/v1/applications", {"Content-Type": "application/json"}, b'{"use": 1}'),
    ("POST", "/api/v1/applications", {"Content-Type": "text/plain"}, b"hello"),
    ("POST", "/api/v1/use-reports", {"X-API-Key": "gok_a_b"}, b'{"text": "x"}'),
    ("POST", "/api/v1/receipts/check", {}, b"\xff\xfe not base64 \x00"),
    ("POST", "/api/v1/receipts/check?sha256=abc&size=1", {}, b"{}"),
    ("POST", "/apply", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=" + b"x" * 70000),
    ("POST", "/receipts", {"Content-Type": "application/x-www-form-urlencoded"}, b"receipt=%ff"),
    ("DELETE", "/api/v1/datasets", {}, None),
    ("GET", "/dataset/%00", {}, None),
    ("GET", "/applications/" + "a" * 500, {}, None),
]


async def test_hostile_requests_are_refused_and_the_portal_stays_healthy(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = with_budget(make_province(tmp_path / "province", sqlite_url), **ROOMY)
    node = await start(setup)
    try:
        await publish(node, setup, UNIVERSAL, 3000)  # a file of about a megabyte
        u = UNIVERSAL.resource_code
        config = portal_config(setup, node, tmp_path / "portal")
        async with run_portal(config) as portal, client() as web:
            wrong = []
            for method, target, headers, body in HOSTILE:
                url = portal.url + target.replace("{u}", u)
                async with web.request(method, url, headers=headers, data=body) as response:
                    text = await response.text(errors="replace")
                    if not 400 <= response.status < 500:
                        wrong.append((target[:80], response.status, text[:300]))
                    assert len(text) < 20_000, target[:80]
                    assert "x" * 100 not in text and "9" * 100 not in text  # short quotes
            assert not wrong, wrong
            # a client that sends half a request and goes away leaves nothing behind
            host, port = portal.url.removeprefix("https://").rsplit(":", 1)
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            for _ in range(20):
                _, writer = await asyncio.open_connection(host, int(port), ssl=context)
                writer.write(b"GET /api/v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Len")
                await writer.drain()
                writer.close()
            # ... and one that goes away in the middle of a download
            for _ in range(5):
                reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
                path = f"/api/v1/datasets/{u}/data.csv"
                writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await writer.drain()
                await reader.read(100)
                writer.transport.abort()
            async with web.get(f"{portal.url}/healthz") as response:
                assert response.status == 200
            async with web.get(f"{portal.url}/api/v1/datasets/{u}/data.csv") as response:
                assert response.status == 200 and (await response.read()).startswith(b"bh,")
        # none of it was a bug of the portal's (its log names every one)
        assert b"portal_request_failed" not in portal.stderr, portal.stderr.decode()[-2000:]
    finally:
        await node.stop(grace=0)
