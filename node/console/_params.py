"""Query and form parameters, bounded: a hostile value is refused with 400 quoting at most a
short prefix of it, never echoed whole."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.quote import quote
from node.console._identity import ConsoleRefusal

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PARAM_CHARS = 200


def text(params: Mapping[str, str], name: str, *, max_chars: int = MAX_PARAM_CHARS) -> str:
    """The parameter ``name`` ("" when absent), at most ``max_chars`` characters."""
    value = params.get(name, "")
    if len(value) > max_chars:
        raise ConsoleRefusal(
            400, f"参数 {name} 至多 {max_chars} 个字符，收到 {len(value)} 个", "INVALID_ARGUMENT"
        )
    return value


def number(
    params: Mapping[str, str], name: str, *, default: int, low: int = 0, high: int = 2**62
) -> int:
    """The integer parameter ``name``, ``default`` when absent or empty, within low..high."""
    value = text(params, name, max_chars=20)
    if not value:
        return default
    if not value.isdigit():
        raise ConsoleRefusal(400, f"参数 {name} 应为整数，收到 {quote(value)}", "INVALID_ARGUMENT")
    parsed = int(value)
    if not low <= parsed <= high:
        raise ConsoleRefusal(
            400, f"参数 {name} 应在 {low} 到 {high} 之间，收到 {parsed}", "INVALID_ARGUMENT"
        )
    return parsed


def page_size(params: Mapping[str, str]) -> int:
    """``page_size``: 1 to :data:`MAX_PAGE_SIZE` (larger is refused, not silently cut)."""
    return number(params, "page_size", default=DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE)
