"""The system page: the node's effective configuration, read only (the file and the
environment overrides as the node applied them), with secrets never shown: the database URL's
password is masked, and key and secret files are named by path, never read."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from sqlalchemy import make_url

from node.config import NodeConfig
from node.console._render import render
from node.console._state import state_of

#: Keys whose values are never shown, whatever they hold.
_SECRET_KEYS = re.compile(r"(password|passphrase|token|credential)", re.IGNORECASE)
MASK = "******"


def _masked(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if isinstance(value, str) and _SECRET_KEYS.search(key):
        return MASK
    return value


def effective_config(config: NodeConfig) -> dict[str, Any]:
    """The configuration as shown: every section, secrets masked."""
    shown: dict[str, Any] = _masked(
        config.model_dump(mode="json", exclude={"base_dir", "config_file"})
    )
    storage = shown.get("storage", {})
    if isinstance(storage.get("url"), str):
        storage["url"] = make_url(storage["url"]).render_as_string(hide_password=True)
    return shown


async def system(request: web.Request) -> web.Response:
    config = state_of(request).config
    sections = {
        name: json.dumps(value, ensure_ascii=False, indent=2)
        for name, value in effective_config(config).items()
    }
    return await render(request, "system.html", sections=sections, base_dir=str(config.base_dir))


def routes(table: web.RouteTableDef) -> None:
    table.get("/system")(system)
