"""What a caller reads of a served dataset (第三十二条、第三十三条): 普遍开放 data whole; 授权开放
data only with the key of an approved application (node.opendata._keys), and then only the
items its approval names.

A download or a row query asks :func:`open_access` once, before it reads a row. For 授权开放
data the answer is the served dataset narrowed to the approved items (in catalog order, so a
file's header row, a JSON object and the items a filter may name shrink alike) and the key's
scope, whose holder a receipt names: ``key:<key id>``. A key presented for 普遍开放 data is
not looked at: that data needs none, and a revoked or suspended key must not stop a download
anyone may make.

A key is a bearer secret: nothing here puts it in a message, only its id. No grpc.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from node.catalog import OpenType
from node.errors import FailedPrecondition, PermissionDenied
from node.opendata._catalog import Served
from node.opendata._keys import OpenKeys
from node.opendata._open_terms import KeyScope

#: Characters a presented key may have: a key is ``gok_<16 hex>_<43 base64url>`` (64); the
#: bound leaves room for a longer secret without letting anything large reach the lookup.
MAX_KEY_CHARS = 100
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")


def key_problem(value: str) -> str | None:
    """Why ``value`` cannot be a key, without repeating it (a mistyped key is still most of a
    secret), or None."""
    if not value:
        return "empty; leave it out for 普遍开放 data"
    if len(value) > MAX_KEY_CHARS:
        return f"{len(value)} characters; a key has at most {MAX_KEY_CHARS}"
    if not _KEY_CHARS.match(value):
        return "not a key: a key has letters, digits, '_' and '-' only (gok_<id>_<secret>)"
    return None


@dataclass(frozen=True)
class Access:
    """What one call reads: ``served`` narrowed to what the caller may read, and the key's
    scope for 授权开放 data (None for 普遍开放)."""

    served: Served
    scope: KeyScope | None = None
    #: ``served`` has every published item of its version (its full file is stored).
    whole: bool = True

    @property
    def holder(self) -> str:
        """The recipient a receipt names for a key's holder, ``key:<key id>``; "" without."""
        return f"key:{self.scope.key_id}" if self.scope is not None else ""


def needs_key(served: Served) -> bool:
    return served.entry.open_type is OpenType.AUTHORIZED


async def open_access(served: Served, keys: OpenKeys | None, key: str) -> Access:
    """What a caller presenting ``key`` ("" for none) reads of ``served``. 授权开放 data:
    PermissionDenied without a key or when :meth:`OpenKeys.authorize` refuses it (naming why);
    FailedPrecondition when none of the approved items is published in the served version."""
    if not needs_key(served):
        return Access(served)
    code = served.entry.resource_code
    if not key or keys is None:
        raise PermissionDenied(
            f"resource {code} is 授权开放: its data is read only with the key of an approved "
            "授权开放 application (第三十二条、第三十三条)"
        )
    scope = await keys.authorize(key, code)
    approved = set(scope.items)
    items = [item for item in served.entry.items if item.name in approved]
    if not items:
        # The entry changed since the approval and was published again without those items.
        raise FailedPrecondition(
            f"key gok_{scope.key_id}_… authorizes items {', '.join(scope.items)} of {code}, "
            f"and version {served.version} publishes none of them: the authority reviews the "
            "authorization again"
        )
    entry = served.entry.model_copy(update={"items": items})
    whole = len(items) == len(served.entry.items)
    return Access(dataclasses.replace(served, entry=entry), scope, whole)
