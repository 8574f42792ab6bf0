"""The portal's pages in a real browser (Debian's chromium through Playwright): a member of the
public finds a dataset in the Chinese catalog, reads its provenance on its page, downloads it
and checks the receipt; an applicant files a 授权开放 application with the form, is refused
with the article when ineligible, and sees its status (第三十至三十五条)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
from pathlib import Path

from playwright.async_api import Page, expect

from node.codes import make_credit_code
from tests.opendata.test_download_api import AUTHORIZED, UNIVERSAL, publish
from tests.support.browser import cjk_font_families, platform_fonts
from tests.support.nodes import make_province, start
from tests.support.portal import ROOMY, client, portal_config, run_portal, with_budget

UNIVERSITY = make_credit_code("12350000488001234")


async def test_the_public_finds_reads_downloads_and_applies_in_the_browser(
    page: Page, tmp_path: Path, db_url: str
) -> None:
    setup = with_budget(make_province(tmp_path / "province", db_url), **ROOMY)
    node = await start(setup)
    try:
        await publish(node, setup, UNIVERSAL, 60)
        await publish(node, setup, AUTHORIZED, 30)
        u, a = UNIVERSAL.resource_code, AUTHORIZED.resource_code
        config = portal_config(setup, node, tmp_path / "portal")
        async with run_portal(config) as portal:
            # --- the catalog, in Chinese glyphs, searched with the form ---------------------
            await page.goto(portal.url + "/")
            await expect(page.locator("h1")).to_have_text("政务数据开放目录")
            fonts = await platform_fonts(page, "h1")
            assert fonts and {f.family for f in fonts} <= cjk_font_families(), fonts
            await expect(page.locator("li.dataset")).to_have_count(2)
            await page.fill("#q", "授权")
            await page.click("form.search button")
            await expect(page.locator("li.dataset")).to_have_count(1)
            await expect(page.locator("li.dataset .name")).to_have_text("授权样本")
            await expect(page.locator("li.dataset .badge")).to_have_text("授权开放")
            await page.fill("#q", "没有这样的数据")
            await page.click("form.search button")
            await expect(page.locator(".empty")).to_contain_text("没有找到")

            # --- a 普遍开放 dataset's page: metadata, provenance, preview, download -------
            await page.goto(portal.url + "/?q=birth")
            await page.click("li.dataset .name")
            await expect(page).to_have_url(f"{portal.url}/dataset/{u}")
            await expect(page.locator("h1")).to_have_text(UNIVERSAL.name)
            await expect(page.locator("#source")).to_contain_text("福建省公安厅")
            await expect(page.locator("#cite")).to_contain_text("获取日期")
            await expect(page.locator("#preview tbody tr")).to_have_count(10)
            async with page.expect_download() as waiting:
                await page.click("#download-csv")
            downloaded = await waiting.value
            saved = tmp_path / "download.csv"
            await downloaded.save_as(saved)
            data = saved.read_bytes()
            table = list(csv.reader(io.StringIO(data.decode(), newline="")))
            assert table[0] == ["bh", "csrq", "qh", "bz"] and len(table) == 61
            assert downloaded.suggested_filename == f"{u}-v1.csv"

            # --- its receipt checked on the receipt page ---------------------------------
            async with client() as web, web.get(f"{portal.url}/api/v1/datasets/{u}/data.csv") as r:
                same = await r.read()
                receipt = r.headers["Govnode-Receipt"]
            assert same == data
            await page.goto(portal.url + "/receipts")
            await page.fill("textarea[name=receipt]", receipt)
            await page.fill("input[name=sha256]", hashlib.sha256(data).hexdigest())
            await page.fill("input[name=size]", str(len(data)))
            await page.click("#receipt-form button")
            await expect(page.locator("#verdict")).to_contain_text("回执有效")
            await expect(page.locator("#verdict")).to_contain_text("ip:127.0.0.1")
            # the same receipt for a file of another size is refused, saying why
            await page.goto(portal.url + "/receipts")
            padded = base64.urlsafe_b64encode(b"not a receipt").decode()
            await page.fill("textarea[name=receipt]", padded)
            await page.click("#receipt-form button")
            await expect(page.locator("#verdict")).to_contain_text("回执无效")

            # --- 授权开放: no download link, the application form instead -----------------
            await page.goto(f"{portal.url}/dataset/{a}")
            await expect(page.locator("#needs-key")).to_contain_text("第三十二条")
            await expect(page.locator("#download-csv")).to_have_count(0)
            await page.click("#apply")
            await expect(page.locator("input[name=resource_code]")).to_have_value(a)
            # an entity whose code is not a valid 统一社会信用代码 is refused, naming why
            await page.select_option("select[name=entity_type]", "university")
            await page.fill("input[name=entity_code]", "123500004880012345")
            await page.fill("input[name=entity_name]", "福建某大学")
            await page.select_option("select[name=use]", "research")
            await page.fill("textarea[name=purpose]", "人口结构研究")
            await page.fill("input[name=contact]", "数据中心 0591-12345678")
            await page.click("#apply-form button")
            await expect(page.locator("#error")).to_contain_text("申请未受理：第三十二条")
            # the form keeps what was typed; with a valid code the application is filed
            await expect(page.locator("input[name=entity_name]")).to_have_value("福建某大学")
            await page.fill("input[name=entity_code]", UNIVERSITY)
            await page.click("#apply-form button")
            await expect(page.locator("#created")).to_contain_text("申请已提交")
            await expect(page.locator("#status")).to_have_text("待审核")
            application_id = (await page.locator("#application-id").inner_text()).strip()
            await page.goto(f"{portal.url}/applications/{application_id}")
            await expect(page.locator("#status")).to_have_text("待审核")
        assert b"portal_request_failed" not in portal.stderr, portal.stderr.decode()[-2000:]
    finally:
        await node.stop(grace=0)
