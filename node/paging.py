"""Paging of list calls (common.proto, "Pagination"): page sizes and page tokens.

Every list takes ``page_size`` (0: the list's default; above the list's maximum: reduced to
it; negative: refused) and ``page_token``, which is opaque: exactly the ``next_page_token`` of
the previous page. Each list encodes its own token (a version tag and its cursor, in URL-safe
base64); anything else a caller sends (non-ASCII, not base64, truncated, huge, another list's
token, a cursor of the wrong shape) must be refused with INVALID_ARGUMENT naming the field,
never reach a decoder's exception (INTERNAL) or the database as a nonsensical cursor. These
helpers are what the lists share for that.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TypeVar

from node.errors import InvalidArgument

T = TypeVar("T")

#: Largest count a cursor may carry (offsets, sequences, ids): what a database BIGINT holds.
MAX_COUNT = 2**63 - 1


def page_size(requested: int, *, default: int, maximum: int, field: str = "page_size") -> int:
    """The rows of one page: ``default`` for 0, at most ``maximum``; negative is refused."""
    if requested < 0:
        raise InvalidArgument(f"{field}: must not be negative, got {requested}")
    return min(requested or default, maximum)


def encode_text(text: str) -> str:
    """``text`` as a token: URL-safe base64 of its UTF-8, without padding."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_text(token: str) -> str | None:
    """The text :func:`encode_text` made ``token`` from, or None when it is not such a token
    (non-ASCII, characters outside URL-safe base64, a truncated group, not UTF-8)."""
    if not token.isascii():
        return None
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        return raw.decode()
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return None


def parse_count(text: str) -> int | None:
    """A cursor's count (offset, sequence, id) written as ASCII digits, 0 to :data:`MAX_COUNT`;
    None for anything else (signs, spaces, other scripts' digits, too many digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_COUNT)):
        return None
    value = int(text)
    return value if value <= MAX_COUNT else None


# --- offset paging ----------------------------------------------------------------------
# For short lists a caller reads newest first (applications, grants, change requests): the
# token is the offset of the next page. A row inserted meanwhile may shift a row to the next
# page (seen twice); these lists are small and rarely paged, and keyset paging is for the big
# ones (catalog, records, audit).

_OFFSET_PREFIX = "o:"


def offset_page(token: str, size: int, *, default: int, maximum: int) -> tuple[int, int]:
    """The offset ``token`` continues from (0 for "") and the page's size (see
    :func:`page_size`); a token this kind of list did not make is refused."""
    size = page_size(size, default=default, maximum=maximum)
    if not token:
        return 0, size
    raw = decode_text(token) or ""
    offset = parse_count(raw.removeprefix(_OFFSET_PREFIX))
    if not raw.startswith(_OFFSET_PREFIX) or offset is None:
        raise InvalidArgument("page_token: not a token from this list; omit it to start")
    return offset, size


def offset_token(offset: int) -> str:
    """The token of the page starting at ``offset``."""
    return encode_text(f"{_OFFSET_PREFIX}{offset}")


def offset_rows(rows: Sequence[T], offset: int, size: int) -> tuple[list[T], str]:
    """One page of ``rows`` (read with ``OFFSET offset LIMIT size + 1``) and the next page's
    token, "" on the last page."""
    more = len(rows) > size
    return list(rows[:size]), offset_token(offset + size) if more else ""
