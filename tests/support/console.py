"""The operator console in tests: a node with ``[console] listen`` on a free loopback port,
operator certificates of each role, and an HTTPS client presenting one of them."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import aiohttp

from gateway.identity import ConsoleRole
from gateway.tls import TlsFiles
from node.config import load_config
from node.demo._main import free_port
from node.pki import issue_operator
from tests.support.nodes import ProvinceSetup

_TOKEN = re.compile(r'<meta name="console-form-token" content="([0-9a-f]{64})">')


def with_console(setup: ProvinceSetup) -> ProvinceSetup:
    """The same node with its console on a free loopback port."""
    text = setup.config_path.read_text(encoding="utf-8")
    commented = '# listen = "127.0.0.1:7444"'
    assert commented in text, "the config `govnode init` wrote has the console's listen"
    text = text.replace(commented, f'listen = "127.0.0.1:{free_port()}"', 1)
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(
        setup.base, setup.config_path, load_config(setup.config_path), setup.bundles
    )


def operator(setup: ProvinceSetup, role: ConsoleRole | str, name: str = "") -> TlsFiles:
    """Issue (once) and return a console operator's bundle, with its operator.p12."""
    role = ConsoleRole(role)
    name = name or f"op-{role.value}"
    label = f"operator:{role.value}.{name}"
    if label not in setup.bundles:
        _, paths = issue_operator(
            setup.config,
            role=role,
            name=name,
            out=setup.base / "operators" / label,
            p12_password="",
        )
        setup.bundles[label] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
    return setup.bundles[label]


def client_tls(files: TlsFiles | None, root: Path) -> ssl.SSLContext:
    """A client TLS context trusting the province root, presenting ``files`` (None: no
    certificate)."""
    context = ssl.create_default_context(cafile=str(root))
    context.check_hostname = False  # the node certificate names 127.0.0.1 as an IP SAN
    if files is not None:
        context.load_cert_chain(files.chain, files.key)
    return context


def session(files: TlsFiles | None, root: Path) -> aiohttp.ClientSession:
    """An HTTPS session to the console as the holder of ``files``; redirects not followed."""
    connector = aiohttp.TCPConnector(ssl=client_tls(files, root), force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))


def form_token(page: str) -> str:
    """The form token every console page carries (its forms, and htmx requests, send it)."""
    found = _TOKEN.search(page)
    assert found is not None, "the page has a form with a token"
    return found.group(1)
