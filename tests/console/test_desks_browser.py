"""Each desk action clicked through in Debian's chromium (Playwright, with the operator's client
certificate), against one real province node whose work was made over gRPC: approve an
application and reject another, approve a held change, approve a 授权开放 application (its key
shown once), confirm an error report's stored value, issue a rectification notice, and mint a
city's invitation on the federation page, make a backup and verify it on the backups page;
the catalog and quality pages load, in Chinese.
Approving a sub-platform needs a conformance run against a city (tests/conformance); here the
approval form is shown and its refusal of a file that is no signed report is clicked."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from govnode.v1 import access_pb2
from playwright.async_api import Browser, Page, expect

from gateway.tls import TlsFiles
from node.app import RunningNode
from tests.support.access import COND, access
from tests.support.browser import PAGE_TIMEOUT_MS
from tests.support.console import operator, with_console
from tests.support.desks import RENAMED, make_work
from tests.support.nodes import MARKET_REGULATION, enable_join, make_province, start

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

#: A backup job (a child process) ends in about 2 s; the page polls every 5 s.
JOB_TIMEOUT_MS = 60_000


@contextlib.asynccontextmanager
async def as_operator(browser: Browser, node: RunningNode, files: TlsFiles) -> AsyncIterator[Page]:
    """A zh-CN page presenting the operator's certificate to the console."""
    assert node.console is not None
    context = await browser.new_context(
        ignore_https_errors=True,  # the node's certificate chains to the province root
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        client_certificates=[
            {"origin": node.console.url, "certPath": str(files.chain), "keyPath": str(files.key)}
        ],
    )
    try:
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        yield await context.new_page()
    finally:
        await context.close()


async def test_each_desk_action_is_clicked_through_in_a_browser(
    tmp_path: Path, sqlite_url: str, browser: Browser
) -> None:
    setup = with_console(enable_join(make_province(tmp_path / "province", sqlite_url)))
    node = await start(setup)
    try:
        work = await make_work(setup, node)
        assert node.console is not None
        base = node.console.url
        async with as_operator(browser, node, operator(setup, "service")) as page:
            # 有条件共享: from the list to the application, approved.
            await page.goto(base + "/desks")
            await page.click(f"text={work.approve_application}")
            await page.click("#approve")
            await page.wait_for_url(f"**/desks/applications/{work.approve_application}")
            assert await page.text_content("#status") == "已同意"
            # The other, rejected with a reason.
            await page.goto(base + f"/desks/applications/{work.reject_application}")
            await page.fill("form[action$='/reject'] input[name=comment]", "用途与依据不符")
            await page.click("#reject")
            await page.wait_for_url(f"**/desks/applications/{work.reject_application}")
            assert await page.text_content("#status") == "未同意"

            # The held change, before → after, approved.
            await page.goto(base + "/desks/changes")
            await page.click(f"text={work.change}")
            assert RENAMED in await page.inner_text("#diff")
            await page.click("#approve")
            await page.wait_for_url(f"**/desks/changes/{work.change}")
            assert await page.text_content("#status") == "已同意"

            # 授权开放: the key shown on the answer page, once.
            await page.goto(base + f"/desks/open/{work.open_application}")
            await page.click("#approve")
            key = await page.text_content("#issued-key")
            assert key is not None and key.startswith("gok_")
            assert await page.text_content("#status") == "已同意"

            # 纠错: the stored value confirmed.
            await page.goto(base + "/desks/errors")
            await page.click(f"text={work.data_error}")
            await page.fill("form:has(#confirm) input[name=note]", "名称以登记为准")
            await page.click("#confirm")
            await page.wait_for_url(f"**/desks/errors/{work.data_error}")
            assert await page.text_content("#status") == "已确认原值"

            # 整改通知: issued from the list page's form.
            await page.goto(base + "/desks/notices")
            await page.fill("input[name=agency_code]", MARKET_REGULATION)
            await page.select_option("select[name=kind]", "late_aggregation")
            deadline = dt.date.today() + dt.timedelta(days=30)
            await page.fill("input[name=deadline]", deadline.isoformat())
            await page.fill("form:has(#issue) input[name=note]", "按更新周期汇聚数据")
            await page.click("#issue")
            await page.wait_for_url("**/desks/notices/*")
            assert await page.text_content("#status") == "待处理"

            # The catalog and quality pages, in Chinese.
            await page.goto(base + f"/catalog/{COND.resource_code}")
            assert "历史版本" in await page.inner_text("main")
            await page.goto(base + f"/quality/resources/{COND.resource_code}")
            assert await page.locator("#chart svg").count() == 1
            await page.goto(base + "/quality/agencies")
            assert "部门合规" in await page.inner_text("h1")

        async with as_operator(browser, node, operator(setup, "system")) as page:
            await page.goto(base + "/federation")
            await page.fill("input[name=region]", "350100")
            await page.click("#invite")
            token = await page.text_content("#invitation-token")
            assert token is not None and token.startswith("gvi1_")
            assert "福州市" in await page.inner_text("#invitations")
            report = tmp_path / "report.json"
            report.write_text(json.dumps({"format": "not a report"}), encoding="utf-8")
            await page.set_input_files("input[name=report]", str(report))
            await page.click("#approve-city")
            assert "the report does not verify" in await page.inner_text(".error")

            # 备份: one made (without keys), then verified; htmx shows each job end in place.
            await page.goto(base + "/")
            await page.get_by_role("link", name="备份").click()
            await page.click("#backup-create")
            await page.wait_for_url(base + "/backups")
            state = page.locator("#backup-job-state")
            await expect(state).to_have_text("已完成", timeout=JOB_TIMEOUT_MS)
            row = page.locator("#backups tbody tr").first
            assert "尚未验证" in await row.inner_text()
            await row.get_by_role("button", name="验证").click()
            await page.wait_for_url(base + "/backups")
            await expect(row.locator(".verification")).to_contain_text(
                "验证通过", timeout=JOB_TIMEOUT_MS
            )
            await row.get_by_role("link").click()
            assert await page.locator("#checks tbody tr").count() >= 9

        # What the clicks did is what the agencies see over gRPC.
        civil_app = await access(
            node,
            setup.agency(MARKET_REGULATION),
            "GetApplication",
            access_pb2.GetApplicationRequest(id=work.reject_application),
        )
        assert civil_app.application.status == access_pb2.APPLICATION_STATUS_REJECTED
    finally:
        await node.stop(grace=0)
