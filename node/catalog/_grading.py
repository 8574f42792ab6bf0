"""Graded security (分级管理, 第三十七条): what a resource may declare, given how sensitive its
data items are, and what that means for clear text and masking.

Every data item carries a sensitivity level: 1 公开 (public), 2 内部 (internal), 3 敏感
(sensitive), 4 高度敏感 (highly sensitive). There is no default: level 0 on the wire means
"not set" and is refused, because reading an unset level as 1 would publish whatever the
provider forgot to grade.

The highest level among a resource's items limits what its catalog entry may declare
(:data:`LEVEL_LIMITS`, the one table of these rules):

=====  ==========================  =======================  ===============================
level  share types (共享类型)       open types (开放类型)     methods only under 有条件共享
=====  ==========================  =======================  ===============================
1      any                         any                      none
2      any                         any                      none
3      any                         授权开放, 不予开放          none
4      有条件共享, 暂不共享          不予开放                  数据交换 Exchange, 主动推送 Subscribe
=====  ==========================  =======================  ===============================

So sensitive (3) data is never 普遍开放 to the public, and highly sensitive (4) data leaves its
provider only under an approved application (第二十五条), is never opened, and is copied in
bulk (Exchange, Subscribe) only to a grantee.

Level-4 items are masked whenever they leave the node without a clear-text grant: by their
masking rule, or fully (MASKING_KIND_FULL) when they have none (:func:`effective_masking`). A
grant that lists a level-4 item in clear text needs a justification, recorded in the grant
(:func:`clear_text_problem`).

Pure domain: no database, no grpc.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from gateway.quote import quote_each
from node.catalog._types import (
    DataItem,
    MaskingKind,
    MaskingRule,
    OpenType,
    ResourceEntry,
    ShareMethod,
    ShareType,
)

__all__ = [
    "LEVEL_LIMITS",
    "LEVEL_NAMES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "LevelLimit",
    "clear_text_problem",
    "default_clear_items",
    "effective_masking",
    "grading_problems",
    "highest_level",
]

_E = TypeVar("_E", bound=enum.Enum)

MIN_LEVEL = 1
MAX_LEVEL = 4
#: The level whose items are never shown in clear without a justified clear-text grant.
HIGHLY_SENSITIVE = 4

LEVEL_NAMES = {
    1: "公开 public",
    2: "内部 internal",
    3: "敏感 sensitive",
    4: "高度敏感 highly sensitive",
}

_SHARE_NAMES = {
    ShareType.UNCONDITIONAL: "无条件共享",
    ShareType.CONDITIONAL: "有条件共享",
    ShareType.NOT_SHARED: "暂不共享",
}
_OPEN_NAMES = {
    OpenType.UNIVERSAL: "普遍开放",
    OpenType.AUTHORIZED: "授权开放",
    OpenType.NOT_OPEN: "不予开放",
}
_METHOD_NAMES = {
    ShareMethod.VERIFY: "联机验证 verify",
    ShareMethod.COMPARE: "比对验证 compare",
    ShareMethod.QUERY: "检索查询 query",
    ShareMethod.EXCHANGE: "数据交换 exchange",
    ShareMethod.SUBSCRIBE: "主动推送 subscribe",
}


@dataclass(frozen=True)
class LevelLimit:
    """What a resource whose most sensitive item has one level may declare."""

    share_types: frozenset[ShareType]
    open_types: frozenset[OpenType]
    #: Share methods such a resource may list only when it is 有条件共享 (served to grantees).
    conditional_only_methods: frozenset[ShareMethod]


_ANY_SHARE = frozenset(ShareType)
_ANY_OPEN = frozenset(OpenType)

#: 分级管理 (第三十七条): the highest sensitivity level among a resource's items -> what the
#: resource may declare. The module docstring shows the same table.
LEVEL_LIMITS: dict[int, LevelLimit] = {
    1: LevelLimit(_ANY_SHARE, _ANY_OPEN, frozenset()),
    2: LevelLimit(_ANY_SHARE, _ANY_OPEN, frozenset()),
    3: LevelLimit(_ANY_SHARE, frozenset({OpenType.AUTHORIZED, OpenType.NOT_OPEN}), frozenset()),
    4: LevelLimit(
        frozenset({ShareType.CONDITIONAL, ShareType.NOT_SHARED}),
        frozenset({OpenType.NOT_OPEN}),
        frozenset({ShareMethod.EXCHANGE, ShareMethod.SUBSCRIBE}),
    ),
}


def highest_level(entry: ResourceEntry) -> int:
    """The highest valid sensitivity level among ``entry``'s items (0 without any)."""
    return max(
        (i.sensitivity_level for i in entry.items if MIN_LEVEL <= i.sensitivity_level <= MAX_LEVEL),
        default=0,
    )


def _names(values: Collection[_E], names: dict[_E, str]) -> str:
    """The Chinese names of ``values``, in the order of ``names``."""
    return ", ".join(name for value, name in names.items() if value in values)


def grading_problems(entry: ResourceEntry) -> list[str]:
    """Every rule of :data:`LEVEL_LIMITS` ``entry`` breaks, as ``entry.<field>: ...`` messages.

    Items with a level outside 1..4 are reported by the item rules (catalog_types) and left out
    here, so one mistake gives one message."""
    level = highest_level(entry)
    limit = LEVEL_LIMITS.get(level)
    if limit is None:
        return []
    index, item = next(
        (i, item) for i, item in enumerate(entry.items) if item.sensitivity_level == level
    )
    because = (
        f"entry.items[{index}] {item.name} has sensitivity level {level} "
        f"({LEVEL_NAMES[level]}), the highest of the resource (分级管理, 第三十七条)"
    )
    problems = []
    if entry.share_type not in limit.share_types:
        problems.append(
            f"entry.share_type: {_SHARE_NAMES[entry.share_type]} ({entry.share_type.value}) is "
            f"not allowed: {because}, which allows only "
            f"{_names(limit.share_types, _SHARE_NAMES)}"
        )
    if entry.open_type not in limit.open_types:
        problems.append(
            f"entry.open_type: {_OPEN_NAMES[entry.open_type]} ({entry.open_type.value}) is not "
            f"allowed: {because}, which allows only {_names(limit.open_types, _OPEN_NAMES)}"
        )
    if entry.share_type is not ShareType.CONDITIONAL:
        for i, method in enumerate(entry.share_methods):
            if method in limit.conditional_only_methods:
                problems.append(
                    f"entry.share_methods[{i}]: {_METHOD_NAMES[method]} is allowed only for a "
                    f"有条件共享 (conditional) resource: {because}"
                )
    return problems


def effective_masking(item: DataItem) -> MaskingRule:
    """The rule that masks ``item`` for a caller without clear text of it: its own rule, or
    full masking for a level-4 item that declares none (never shown in clear by default)."""
    if item.masking.kind is MaskingKind.NONE and item.sensitivity_level >= HIGHLY_SENSITIVE:
        return MaskingRule(kind=MaskingKind.FULL)
    return item.masking


def default_clear_items(entry: ResourceEntry) -> frozenset[str]:
    """The items a caller who is not the provider sees in clear without a clear-text grant:
    those whose effective masking (:func:`effective_masking`) is none."""
    return frozenset(i.name for i in entry.items if effective_masking(i).kind is MaskingKind.NONE)


def clear_text_problem(
    entry: ResourceEntry, clear_items: Collection[str], justification: str
) -> str | None:
    """Why a grant on ``entry`` may not show ``clear_items`` in clear text, or None.

    Clear text beyond the masking rules needs an explicit justification recorded in the grant
    (第三十七条; govnode.v1 Grant.justification is required whenever clear_text_items is not
    empty), and level-4 items are named as such in the message. The message names the field of
    the review (``clear_text_items`` or ``justification``) and the items."""
    by_name = {i.name: i for i in entry.items}
    unknown = [name for name in clear_items if name not in by_name]
    if unknown:
        return (
            f"clear_text_items: {quote_each(unknown)}: not an item of resource "
            f"{entry.resource_code}"
        )
    if not clear_items or justification.strip():
        return None
    named = []
    for name in clear_items:
        item = by_name[name]
        level = item.sensitivity_level
        grade = f", level {level} {LEVEL_NAMES[level]}" if level >= HIGHLY_SENSITIVE else ""
        named.append(f"{name} ({item.title}{grade})")
    return (
        f"justification: clear text of {', '.join(named)} needs a justification recorded in the "
        f"grant; level-{HIGHLY_SENSITIVE} items are otherwise always masked (分级管理, 第三十七条)"
    )
