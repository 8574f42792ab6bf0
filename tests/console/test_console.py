"""The console over HTTPS with operator certificates: what each role sees and may do, and
every refusal (no certificate, another kind of identity, a revoked operator, cross-site
requests, hostile parameters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.app import RunningNode
from tests.support.console import operator, session, with_console
from tests.support.nodes import ProvinceSetup, make_province, start


@pytest.fixture
async def console(
    tmp_path: Path, sqlite_url: str
) -> AsyncIterator[tuple[ProvinceSetup, RunningNode]]:
    setup = with_console(make_province(tmp_path / "province", sqlite_url))
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


def url(node: RunningNode, path: str = "/") -> str:
    assert node.console is not None
    return node.console.url + path


def root(setup: ProvinceSetup) -> Path:
    return setup.config.path(setup.config.tls.root)


async def test_an_operator_sees_the_overview_in_chinese(console: Any) -> None:
    setup, node = console
    async with (
        session(operator(setup, "observer", "li"), root(setup)) as http,
        http.get(url(node)) as response,
    ):
        assert response.status == 200
        page = await response.text()
    assert "概览" in page and "福建省" in page
    assert "spiffe://350000.fujian.gov.cn/node" in page
    assert "li" in page and "观察员" in page
