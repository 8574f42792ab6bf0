"""Quoting what a caller sent in a message that goes back to the caller and into the audit log.

A refusal names the value it refuses, but a caller controls that value's size: quoted in full,
a 100 KB resource code made a 100 KB status message (which gRPC clients refuse above 16 KiB as
"metadata size exceeds hard limit", hiding the real status) and a 100 KB audit record that is
kept for years (第三十九条). So messages quote a caller's value only through :func:`quote` (a
short prefix, escaped, with the full length) or :func:`quote_each` (a few of many), and the
guard cuts any status message to :data:`MAX_MESSAGE_BYTES` as a backstop
(:func:`clip_message`).

Pure Python with no grpc: domain modules in node/ use it too.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MAX_MESSAGE_BYTES", "QUOTE_CHARS", "QUOTE_ITEMS", "clip_message", "quote", "quote_each"]

#: Characters of a caller's value a message quotes.
QUOTE_CHARS = 64
#: Values :func:`quote_each` names before saying how many there are in all.
QUOTE_ITEMS = 5
#: The largest status message (UTF-8 bytes) the node sends or audits. gRPC carries it
#: percent-encoded in the grpc-message trailer (up to 3 bytes per byte), well under the 8 KiB
#: a client accepts without complaint.
MAX_MESSAGE_BYTES = 1024


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``value`` as a message quotes it: ``'350100-3-000001'``, or for a long value its first
    ``limit`` characters and its length: ``'xxxx'… (100000 characters)``.

    Whatever would not print (control characters, line breaks, bidi overrides, lone surrogates)
    is escaped as Python escapes it (``\\n``, ``\\x00``, ``\\u202e``), so the message stays one
    readable line; printable text in any script (福州市) and backslashes (patterns such as
    ``\\d{4}``) are kept as they are.
    """
    text = value if isinstance(value, str) else str(value)
    shown = text if len(text) <= limit else text[:limit]
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    mark = '"' if "'" in shown and '"' not in shown else "'"
    if len(text) <= limit:
        return f"{mark}{shown}{mark}"
    return f"{mark}{shown}{mark}… ({len(text)} characters)"


def quote_each(values: Iterable[object], limit: int = QUOTE_ITEMS) -> str:
    """A few of many caller values, each through :func:`quote`, separated by commas:
    ``'a', 'b'``, or ``'a', 'b', 'c', 'd', 'e', … (1000 in all)``."""
    shown: list[str] = []
    count = 0
    for value in values:
        count += 1
        if count <= limit:
            shown.append(quote(value))
    if count > limit:
        shown.append(f"… ({count} in all)")
    return ", ".join(shown)


def clip_message(message: str, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` cut to at most ``max_bytes`` of UTF-8, on a character boundary, with a marker
    saying so; unencodable characters (lone surrogates) replaced. Idempotent."""
    try:
        data = message.encode("utf-8")
    except UnicodeEncodeError:
        data = message.encode("utf-8", "replace")
        message = data.decode("utf-8")
    if len(data) <= max_bytes:
        return message
    marker = f"… (message cut: {len(data)} bytes)"
    keep = max(0, max_bytes - len(marker.encode("utf-8")))
    # errors="ignore" drops a character cut in half at the end.
    return data[:keep].decode("utf-8", "ignore") + marker
