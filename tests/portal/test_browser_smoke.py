"""The browser the portal's pages are tested in: Debian's chromium, over HTTPS with a
self-signed certificate, drawing Chinese with a font that has the glyphs.

This is not a test of the portal (it serves a page of its own): it is the test that fails
first when ``make browser`` stops installing chromium or the font, so that the portal's page
tests never pass on boxes where a reader would see tofu.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from playwright.async_api import Page

from tests.support.browser import cjk_font_families, platform_fonts, self_signed_server_tls, serve

HEADING = "福建省公共数据开放平台"

PAGE = f"""<!doctype html>
<html lang="zh-CN">
<head><meta charset="utf-8"><title>{HEADING}</title></head>
<body>
<h1>{HEADING}</h1>
<p id="unassigned">\ue000\ue001\ue002</p>
</body>
</html>
"""


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8")


async def test_a_chinese_page_over_https_renders_in_a_cjk_font(page: Page, tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_get("/", _index)
    async with serve(app, self_signed_server_tls(tmp_path)) as base_url:
        response = await page.goto(base_url + "/")
        assert response is not None and response.ok
        assert base_url.startswith("https://")

        assert await page.title() == HEADING
        assert await page.locator("h1").inner_text() == HEADING

        # What chromium painted the heading with: every glyph from a font fontconfig lists
        # for zh-cn. Without one, chromium still "draws" the text, as boxes in DejaVu Sans.
        cjk = cjk_font_families()
        heading_fonts = await platform_fonts(page, "h1")
        assert heading_fonts, "chromium reports no font for the heading"
        assert {font.family for font in heading_fonts} <= cjk, heading_fonts
        assert sum(font.glyphs for font in heading_fonts) == len(HEADING)

        # The check can tell: private-use characters no font has come out as boxes in a
        # fallback font, which is not a CJK one.
        tofu_fonts = await platform_fonts(page, "#unassigned")
        assert tofu_fonts and not {font.family for font in tofu_fonts} <= cjk, tofu_fonts
