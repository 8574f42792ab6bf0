"""What a request message must be beyond parsing, checked by the guard before any servicer.

Text fields hold UTF-8 (the protobuf runtime refuses anything else), and UTF-8 allows U+0000.
No text the platform keeps may hold it: PostgreSQL cannot store it in text or JSON columns (it
failed there as INTERNAL), SQLite would keep what PostgreSQL refuses, and tools written in C
cut strings at it. So a request carrying it in any string, at any depth, map keys included,
is refused naming the field (:func:`nul_field`).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

NUL = "\x00"
#: How much of a map key a field path quotes.
_KEY_CHARS = 20


def nul_field(message: Message, raw: bytes) -> str | None:
    """The path of the first string field of ``message`` holding U+0000 (``items[2]``,
    ``records[1].values["qymc"]``), or None. ``raw`` is the message's encoding: without a 0x00
    byte no string can hold U+0000, so most requests cost one byte scan."""
    if b"\x00" not in raw:
        return None
    return _walk(message, "")


def _walk(message: Message, prefix: str) -> str | None:
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            found = _in_strings(value, name, field.is_repeated)
        elif field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            found = _in_map(value, name)
        elif field.is_repeated:
            found = next((p for i, m in enumerate(value) if (p := _walk(m, f"{name}[{i}]."))), None)
        else:
            found = _walk(value, name + ".")
        if found is not None:
            return found
    return None


def _in_strings(value: Any, name: str, repeated: bool) -> str | None:
    if not repeated:
        return name if NUL in value else None
    return next((f"{name}[{i}]" for i, text in enumerate(value) if NUL in text), None)


def _in_map(value: Any, name: str) -> str | None:
    for key, item in value.items():
        if isinstance(key, str) and NUL in key:
            return f"{name} (a key)"
        shown = f"{name}[{key[:_KEY_CHARS]!r}]" if isinstance(key, str) else f"{name}[{key}]"
        shown = shown.replace("'", '"')
        if isinstance(item, str):
            if NUL in item:
                return shown
        elif isinstance(item, Message) and (found := _walk(item, shown + ".")) is not None:
            return found
    return None
