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

from node.errors import InvalidArgument

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
