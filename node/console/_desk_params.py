"""What part B's pages (desks, catalog, federation, quality) share on top of node.console._params:
path ids and form fields bounded and checked, a filter chosen from a fixed set, the page token
passed through to the domain list (which refuses a token it did not make), and reads whose
domain refusals become the page's status.

Every refusal is a 400 quoting at most a short prefix of what was sent."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web

from gateway.quote import quote
from node.console._actions import http_status
from node.console._desks import Desks, desks_of
from node.console._identity import ConsoleRefusal
from node.console._params import text
from node.console._state import state_of
from node.errors import DomainError
from node.servicers.status import status_for

T = TypeVar("T")

#: Ids of applications, grants, change requests, reports, notices: ``350000-A-<hex>`` and the
#: like (letters, digits, ``-``, ``_``, ``.``), at most 100 characters.
_ID = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
#: A page token of a domain list: URL-safe base64, bounded.
MAX_TOKEN_CHARS = 200
#: A free-text form field (a comment, a reason, a note): the domain's own limit is 2000.
MAX_TEXT_CHARS = 2000


def bad(message: str) -> ConsoleRefusal:
    return ConsoleRefusal(400, message, "INVALID_ARGUMENT")


def path_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info.get(name, "")
    if not _ID.fullmatch(value):
        raise bad(f"{name}：{quote(value)} 不是有效的编号")
    return value


def choice(params: Mapping[str, str], name: str, allowed: Sequence[str], default: str) -> str:
    """``name`` from ``allowed`` (``default`` when absent)."""
    value = text(params, name, max_chars=40) or default
    if value not in allowed:
        raise bad(f"参数 {name}：{quote(value)} 不是 {'、'.join(allowed)} 之一")
    return value


def page_token(params: Mapping[str, str]) -> str:
    return text(params, "page", max_chars=MAX_TOKEN_CHARS)


def form_text(form: Mapping[str, Any], name: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """A text field of a submitted form ("" when absent); a file or an oversized value is
    refused."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise bad(f"字段 {name} 应为文本")
    if len(value) > max_chars:
        raise bad(f"字段 {name} 至多 {max_chars} 个字符，收到 {len(value)} 个")
    return value


def request_id(form: Mapping[str, Any]) -> str:
    """The form's request id (rendered once per page): a resubmitted form (reload, double
    click) is the same request to the domain, answered again, never done twice."""
    value = form_text(form, "request_id", max_chars=64)
    return value or uuid.uuid4().hex


def new_request_id() -> str:
    return uuid.uuid4().hex


async def read(call: Callable[[], Awaitable[T]]) -> T:
    """A read of the service layer; its refusal (a bad page token, an unknown id) becomes the
    page's status with the domain's message."""
    try:
        return await call()
    except DomainError as exc:
        code = status_for(exc).name
        raise ConsoleRefusal(http_status(code), exc.message, code) from None


def desks(request: web.Request) -> Desks:
    """The node's desks for this request (node.console._desks)."""
    return desks_of(state_of(request).services)


def pager(request: web.Request, token: str) -> dict[str, str]:
    """Links to the first page (when not on it) and the next (when there is one), keeping the
    page's other parameters; and this page's own address (``here``), which htmx polls to
    refresh the page's table in place."""
    kept = {k: v for k, v in request.query.items() if k != "page"}
    return {
        "here": request.path_qs,
        "first": "?" + urlencode(kept) if "page" in request.query else "",
        "next": "?" + urlencode({**kept, "page": token}) if token else "",
    }
