"""A real browser for the portal's pages: Debian's chromium driven by Playwright's async API.

The browser is the one ``make browser`` (``scripts/install_browser.sh``) installs with apt-get,
never one Playwright downloads (``playwright install`` cannot reach its servers from here). A
missing chromium fails the test that needs it rather than skipping it: CI installs chromium, so
a skip would only hide a broken install step.

The fixtures ``browser`` and ``page`` (tests/conftest.py) are built on :func:`launch_chromium`
and :func:`open_page`. Pages in Chinese are only worth testing with a font that has the glyphs:
:func:`platform_fonts` asks chromium (over CDP) which fonts actually drew a node's text, and
:func:`cjk_font_families` names the fonts that fontconfig says cover Simplified Chinese.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from portal.server import self_signed

#: Where Debian's package puts it, when PATH does not say.
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")

#: The flags that matter on this closed network. Without the background-networking ones
#: chromium keeps opening connections to Google's hosts, which the network refuses; the
#: sandbox needs user namespaces that a root CI run does not have. Playwright adds
#: --headless and a fresh temporary --user-data-dir itself, and removes the latter on close.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Starting chromium takes about half a second here; a hung start should fail fast.
LAUNCH_TIMEOUT_MS = 30_000
#: Default for every action and navigation on a page (clicks, waits, goto): pages served from
#: loopback answer in milliseconds, so a test that waits longer is waiting for nothing.
PAGE_TIMEOUT_MS = 10_000


def chromium_executable() -> Path:
    """The chromium binary on PATH (or Debian's), or fail the test with what to run."""
    found = shutil.which("chromium")
    if found is not None:
        return Path(found)
    if DEBIAN_CHROMIUM.exists():
        return DEBIAN_CHROMIUM
    pytest.fail(
        "chromium is not installed: run `make browser` (scripts/install_browser.sh), which "
        "installs Debian's chromium and a Simplified Chinese font",
        pytrace=False,
    )


@contextlib.asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    """Start Playwright's driver and a headless Debian chromium; stop both on exit."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            timeout=LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass(frozen=True)
class ClientCertificate:
    """A client certificate the browser presents to ``origin`` (https://HOST:PORT): PEM files
    of the certificate (leaf first, with its issuing CA) and its key."""

    origin: str
    cert: Path
    key: Path


@contextlib.asynccontextmanager
async def open_page(
    browser: Browser,
    *,
    ignore_https_errors: bool = False,
    client_certificate: ClientCertificate | None = None,
    viewport: tuple[int, int] | None = None,
) -> AsyncIterator[Page]:
    """A page in a fresh browser context (its own cookies and storage), as a zh-CN reader sees
    it. ``ignore_https_errors`` accepts a self-signed certificate, such as the portal's in
    tests (:func:`self_signed_server_tls`). ``client_certificate``: the context presents it
    (mutual TLS, the operator console); Playwright does this through a proxy of its driver, so
    this tests the server's mutual TLS, not chromium's certificate picker."""
    certificates = []
    if client_certificate is not None:
        certificates.append(
            {
                "origin": client_certificate.origin,
                "certPath": str(client_certificate.cert),
                "keyPath": str(client_certificate.key),
            }
        )
    context = await browser.new_context(
        ignore_https_errors=ignore_https_errors,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        client_certificates=certificates,  # type: ignore[arg-type]
        viewport=({"width": viewport[0], "height": viewport[1]} if viewport is not None else None),
        accept_downloads=True,
    )
    try:
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        context.set_default_navigation_timeout(PAGE_TIMEOUT_MS)
        yield await context.new_page()
    finally:
        await context.close()


# --- fonts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlatformFont:
    """A font chromium used to draw a node's text, and how many glyphs it drew."""

    family: str
    glyphs: int


async def platform_fonts(page: Page, selector: str) -> list[PlatformFont]:
    """The fonts chromium drew the first node matching ``selector`` with (CDP
    ``CSS.getPlatformFontsForNode``): what was painted, not what CSS asked for. A character no
    installed font has is still counted, against the fallback font that drew it as a box."""
    cdp = await page.context.new_cdp_session(page)
    try:
        await cdp.send("DOM.enable")
        await cdp.send("CSS.enable")
        document = await cdp.send("DOM.getDocument")
        found = await cdp.send(
            "DOM.querySelector", {"nodeId": document["root"]["nodeId"], "selector": selector}
        )
        if not found["nodeId"]:
            raise AssertionError(f"no element matches {selector!r}")
        used = await cdp.send("CSS.getPlatformFontsForNode", {"nodeId": found["nodeId"]})
    finally:
        await cdp.detach()
    return [PlatformFont(font["familyName"], int(font["glyphCount"])) for font in used["fonts"]]


def cjk_font_families() -> frozenset[str]:
    """Every family name (localised ones too) of the fonts fontconfig says cover zh-cn."""
    listed = subprocess.run(
        ["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    return frozenset(name.strip() for line in listed.splitlines() for name in line.split(","))


# --- serving pages over HTTPS --------------------------------------------------------------


def self_signed_server_tls(directory: Path) -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1 with a throwaway self-signed certificate (the one
    ``govnode portal init --self-signed`` makes, written to ``directory``), for pages that a
    browser opens with ``ignore_https_errors``."""
    cert_path, key_path = self_signed(directory, "127.0.0.1", days=1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@contextlib.asynccontextmanager
async def serve(app: web.Application, tls: ssl.SSLContext) -> AsyncIterator[str]:
    """Serve ``app`` over HTTPS on a free port of 127.0.0.1; yields its base URL."""
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"https://{host}:{port}"
    finally:
        await runner.cleanup()
