"""The console in a real browser (Debian's chromium through Playwright, a Simplified Chinese
font): logging in is presenting an operator certificate; without one the handshake fails. An
operator sees the overview in Chinese, switches maintenance mode, issues and revokes a
certificate, searches the audit log and opens a record with its inclusion proof, all by
clicking, without typing URLs. The overview's screenshot for the README is taken here
(``make console-screenshot`` writes it to docs/console-overview.png)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from playwright.async_api import Browser, Error, Page, expect

from gateway.tls import TlsFiles
from node.app import RunningNode
from tests.support.browser import ClientCertificate, cjk_font_families, open_page, platform_fonts
from tests.support.console import operator, with_console
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, make_province, start

#: Where ``make console-screenshot`` asks for the README's picture.
SCREENSHOT_ENV = "GOVNODE_CONSOLE_SCREENSHOT"

Console = tuple[ProvinceSetup, RunningNode]


@pytest.fixture
async def console(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Console]:
    setup = with_console(make_province(tmp_path / "province", sqlite_url))
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


def base(node: RunningNode) -> str:
    assert node.console is not None
    return node.console.url


def as_operator(
    browser: Browser, node: RunningNode, files: TlsFiles
) -> contextlib.AbstractAsyncContextManager[Page]:
    """A page whose browser context presents ``files`` to the console."""
    return open_page(
        browser,
        ignore_https_errors=True,  # the node's certificate chains to the province root
        client_certificate=ClientCertificate(base(node), files.chain, files.key),
        viewport=(1100, 760),
    )


async def health(node: RunningNode, setup: ProvinceSetup) -> int:
    async with channel(node, setup.agency(PUBLIC_SECURITY, "福建省公安厅")) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def test_without_a_certificate_the_browser_gets_no_page(
    browser: Browser, console: Console
) -> None:
    _, node = console
    async with open_page(browser, ignore_https_errors=True) as page:
        with pytest.raises(Error) as refused:
            await page.goto(base(node) + "/")
    assert "net::ERR_" in str(refused.value)


async def test_the_overview_in_chinese_and_the_maintenance_switch(
    browser: Browser, console: Console
) -> None:
    setup, node = console
    async with as_operator(browser, node, operator(setup, "system", "zhang")) as page:
        response = await page.goto(base(node) + "/")
        assert response is not None and response.ok
        assert await page.locator("h1").inner_text() == "概览"
        assert await page.locator("#serving").inner_text() == "服务中（SERVING）"
        fonts = await platform_fonts(page, "h1")
        assert fonts and {f.family for f in fonts} <= cjk_font_families(), fonts

        shot = os.environ.get(SCREENSHOT_ENV)
        if shot:
            await page.screenshot(path=shot, full_page=True)

        await page.locator("#maintenance-toggle").click()
        await page.wait_for_url(base(node) + "/")
        assert "已开启" in await page.locator("#maintenance-state").inner_text()
        assert await page.locator("#serving").inner_text() == "暂停服务（NOT_SERVING）"
        assert await health(node, setup) == health_pb2.HealthCheckResponse.NOT_SERVING

        await page.locator("#maintenance-toggle").click()
        await page.wait_for_url(base(node) + "/")
        assert await page.locator("#maintenance-state").inner_text() == "未开启"
        assert await health(node, setup) == health_pb2.HealthCheckResponse.SERVING


async def test_htmx_refreshes_the_live_part_under_the_strict_csp(
    browser: Browser, console: Console
) -> None:
    """The vendored htmx loads and polls under the Content-Security-Policy (no violation is
    reported), and the overview shows a change made elsewhere without a reload."""
    setup, node = console
    async with as_operator(browser, node, operator(setup, "observer")) as page:
        violations: list[str] = []
        page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text or message.type == "error"
                else None
            ),
        )
        await page.goto(base(node) + "/")
        state = page.locator("#maintenance-state")
        assert await state.inner_text() == "未开启"
        await node.health.set_maintenance(True)  # as another operator's switch would
        # htmx polls /overview/live every 5 s: the same page, not reloaded, says so.
        await expect(state).to_contain_text("已开启", timeout=15_000)
        assert page.url == base(node) + "/"
        assert violations == []


async def test_an_observer_has_no_buttons(browser: Browser, console: Console) -> None:
    setup, node = console
    async with as_operator(browser, node, operator(setup, "observer")) as page:
        await page.goto(base(node) + "/")
        assert await page.locator("#maintenance-toggle").count() == 0
        await page.get_by_role("link", name="证书与部门").click()
        assert await page.locator("#issue-agency").count() == 0
        assert await page.get_by_role("button", name="吊销").count() == 0


async def test_issue_and_revoke_a_certificate(browser: Browser, console: Console) -> None:
    setup, node = console
    async with as_operator(browser, node, operator(setup, "security", "chen")) as page:
        await page.goto(base(node) + "/")
        await page.get_by_role("link", name="证书与部门").click()
        form = page.locator("#issue-agency")
        await form.get_by_label("统一社会信用代码").fill(PUBLIC_SECURITY)
        await form.get_by_label("部门名称").fill("福建省公安厅")
        async with page.expect_download() as download_info:
            await form.get_by_role("button", name="签发").click()
        download = await download_info.value
        assert download.suggested_filename.startswith(f"agency-{PUBLIC_SECURITY}-")
        data = await asyncio.to_thread(Path(await download.path()).read_bytes)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            assert "client.key" in archive.namelist()

        await page.reload()
        row = page.locator("#certificates tbody tr", has_text=f"agency/{PUBLIC_SECURITY}")
        await row.get_by_label("原因").select_option("key_compromise")
        await row.get_by_role("button", name="吊销").click()
        await page.wait_for_url(base(node) + "/certificates")
        row = page.locator("#certificates tbody tr", has_text=f"agency/{PUBLIC_SECURITY}")
        assert "已吊销" in await row.inner_text()


async def test_search_the_audit_log_and_open_a_record_with_its_proof(
    browser: Browser, console: Console
) -> None:
    setup, node = console
    async with as_operator(browser, node, operator(setup, "system", "zhou")) as page:
        await page.goto(base(node) + "/")
        await page.locator("#maintenance-toggle").click()
        await page.wait_for_url(base(node) + "/")
        await page.locator("#maintenance-toggle").click()
        await page.wait_for_url(base(node) + "/")
        assert node.publisher is not None
        await node.publisher.publish()

        await page.get_by_role("link", name="审计日志").click()
        search = page.locator("#audit-search")
        await search.get_by_label("方法").fill("console:*")
        await search.get_by_role("button", name="查询").click()
        rows = page.locator("#audit-records tbody tr")
        assert await rows.count() == 2
        assert "console:/maintenance" in await rows.first.inner_text()

        await rows.last.get_by_role("link").click()
        assert "console-mtls" in await page.locator("#record").inner_text()
        assert "包含证明验证通过" in await page.locator("#inclusion-status").inner_text()

        await page.get_by_role("link", name="审计日志").first.click()
        await page.get_by_role("link", name="验证哈希链").click()
        await page.locator("#verify-form").get_by_role("button", name="验证哈希链").click()
        assert "哈希链完整" in await page.locator("#verify-result").inner_text()
