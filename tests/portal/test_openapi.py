"""The OpenAPI document describes exactly the public API the portal serves: every route under
/api/ and the catalog documents is in it, and every path in it is a route."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.web_urldispatcher import AbstractResource

from node.ports import free_port
from portal.app import make_app
from portal.config import load_portal_config
from portal.node import NodeClient
from portal.openapi import openapi_document
from portal.server import self_signed, write_config
from tests.support.nodes import make_province


def _unchecked(receipt: bytes, *, sha256: str | None, size: int | None) -> dict[str, str]:
    raise AssertionError("not called")


async def test_the_openapi_document_describes_every_public_route(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    bundle = setup.portal()
    directory = tmp_path / "portal"
    directory.mkdir()
    self_signed(directory, "127.0.0.1")
    config = load_portal_config(
        write_config(
            directory,
            node=f"127.0.0.1:{free_port()}",
            credentials=bundle.key.parent,
            listen=f"127.0.0.1:{free_port()}",
        )
    )
    node = NodeClient(config.section.node, config.node_tls)
    try:
        app = make_app(config, node, _unchecked)
        document = openapi_document("https://opendata.example")
        samples = {path: _sample(path) for path in document["paths"]}
        public = []
        for resource in app.router.resources():
            info = resource.get_info()
            shown = info.get("formatter") or info.get("path") or ""
            if shown.startswith(("/api/", "/catalog.")):
                public.append(resource)
        # Every path described is served, and every public route is described.
        for path, sample in samples.items():
            assert any(_matches(r, sample) for r in public), path
        for resource in public:
            assert any(_matches(resource, s) for s in samples.values()), resource.canonical
        assert document["openapi"].startswith("3.1")
        for path, operations in document["paths"].items():
            for operation in operations.values():
                assert operation["summary"] and operation["responses"], path
    finally:
        await node.close()


def _sample(path: str) -> str:
    return path.replace("{code}", "350000-1-000001").replace("{id}", "oa-1")


def _matches(resource: AbstractResource, path: str) -> bool:
    info = resource.get_info()
    if "path" in info:
        return bool(info["path"] == path)
    return re.fullmatch(info["pattern"], path) is not None
