"""The catalog browser (政务信息资源目录, 第十八条): entries a page at a time, found by code or by a
part of the name, and an entry with its items, its versions (what each changed) and the change
requests approved on it (第四十一条). Read-only, from node.catalog and node.governance; any
operator may read it."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.quote import quote
from node.catalog import MAX_NAME_SEARCH, ResourceEntry, entry_to_json
from node.console._desk_params import bad, choice, desks, page_token, pager, read
from node.console._params import page_size, text
from node.console._render import render
from node.governance import ChangeStatus

#: Versions the page shows (the newest), and approved changes listed beside them.
HISTORY_SHOWN = 50
CHANGES_SHOWN = 20
_CODE_CHARS = frozenset("0123456789-")
#: Fields of an entry's JSON that change on every version and say nothing about the change.
_VOLATILE = ("version", "updated_at", "created_at")


def _code(value: str) -> str:
    if len(value) > 32 or not set(value) <= _CODE_CHARS:
        raise bad(f"资源代码：{quote(value)} 不是 RRRRRR-C-NNNNNN 形式")
    return value


async def entries(request: web.Request) -> web.Response:
    params = request.query
    code = text(params, "code", max_chars=40).strip()
    if code:
        raise web.HTTPSeeOther(f"/catalog/{_code(code)}")
    name = text(params, "name", max_chars=MAX_NAME_SEARCH).strip()
    withdrawn = choice(params, "withdrawn", ("0", "1"), "0") == "1"
    catalog = desks(request).catalog
    found, token = await read(
        lambda: catalog.list(
            name_contains=name,
            include_withdrawn=withdrawn,
            page_size=page_size(params),
            page_token=page_token(params),
        )
    )
    return await render(
        request,
        "catalog.html",
        entries=found,
        search_name=name,
        withdrawn=withdrawn,
        pages=pager(request, token),
    )


def _fields(entry: ResourceEntry) -> dict[str, str]:
    values = json.loads(entry_to_json(entry))
    return {
        k: json.dumps(v, ensure_ascii=False, sort_keys=True)
        for k, v in values.items()
        if k not in _VOLATILE
    }


def versions(history: list[ResourceEntry]) -> list[dict[str, Any]]:
    """Each version, newest first, with the fields it changed against the one before."""
    out = []
    for before, entry in zip([None, *history[:-1]], history, strict=True):
        if before is None:
            changed: list[str] = []
        else:
            old, new = _fields(before), _fields(entry)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        out.append({"entry": entry, "changed": changed})
    return out[::-1]


async def entry(request: web.Request) -> web.Response:
    code = _code(request.match_info.get("code", ""))
    d = desks(request)
    current = await read(lambda: d.catalog.get(code))
    history = await read(lambda: d.catalog.history(code, newest=HISTORY_SHOWN + 1))
    approved, _ = await read(
        lambda: d.changes.list(
            d.authority,
            status=ChangeStatus.APPROVED,
            resource_code=code,
            page_size=CHANGES_SHOWN,
        )
    )
    return await render(
        request,
        "catalog_entry.html",
        entry=current,
        versions=versions(history)[:HISTORY_SHOWN],
        approved=approved,
    )


def routes(table: web.RouteTableDef) -> None:
    table.get("/catalog")(entries)
    table.get("/catalog/{code}")(entry)
