"""Masking (脱敏) of values a caller may see but not in clear text (第三十四、三十七条).

Each data item carries a :class:`~node.catalog.MaskingRule`; :func:`mask` applies it:

==========  ==============================================  ========================
kind        keeps                                           example
==========  ==============================================  ========================
NONE        everything (the value is not masked)            ``13812345678``
CITIZEN_ID  first 6 and last 4 characters                   ``350102********1234``
PHONE       first 3 and last 4 characters                   ``138****5678``
NAME        the surname: the first character, or the first  ``张*``, ``欧阳**``
            two for a compound surname (复姓) such as 欧阳
KEEP_EDGES  ``keep_first`` and ``keep_last`` characters     (as configured)
FULL        nothing                                         ``****``
==========  ==============================================  ========================

Every masked character becomes one ``*``, so the length shows (as in the examples the
national de-identification guidance uses). Characters are Unicode code points, so a Chinese
name is masked by character, never by byte.

Short values: a rule never reveals more than it would on a value of the expected shape.
Whatever the rule, at least a third of the characters (rounded up, and at least one) are
masked; when the kept counts would mask fewer, both kept counts shrink in proportion. So a
malformed 4-character "citizen id" shows ``1**4``, not ``1234``, and a one-character name
shows ``*``. The standard shapes are unaffected: 18-character ids mask 8, 11-digit mobile
numbers mask 4.
"""

from __future__ import annotations

from node.catalog import MaskingKind, MaskingRule

__all__ = ["COMPOUND_SURNAMES", "MASK_CHAR", "kept_counts", "mask"]

MASK_CHAR = "*"

#: Common compound surnames (复姓): a masked name keeps the whole surname, as is usual practice.
COMPOUND_SURNAMES = frozenset(
    {
        *("欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙"),
        *("宇文", "司徒", "夏侯", "轩辕", "令狐", "钟离", "端木", "独孤", "南宫", "西门"),
        *("百里", "呼延", "澹台", "公冶", "太史", "申屠", "闻人", "万俟", "拓跋", "赫连"),
    }
)

_KEEP: dict[MaskingKind, tuple[int, int]] = {
    MaskingKind.CITIZEN_ID: (6, 4),
    MaskingKind.PHONE: (3, 4),
    MaskingKind.NAME: (1, 0),
    MaskingKind.FULL: (0, 0),
}


def kept_counts(length: int, rule: MaskingRule) -> tuple[int, int]:
    """How many leading and trailing characters of a ``length``-character value stay clear."""
    first, last = _KEEP.get(rule.kind, (max(rule.keep_first, 0), max(rule.keep_last, 0)))
    return _shrunk(length, first, last)


def _shrunk(length: int, first: int, last: int) -> tuple[int, int]:
    must_mask = max(1, -(-length // 3))  # ceil(length / 3), at least one
    budget = max(length - must_mask, 0)
    if first + last > budget:
        shrunk_first = budget * first // (first + last)
        first, last = shrunk_first, budget - shrunk_first
    return first, last


def mask(value: str, rule: MaskingRule) -> str:
    """``value`` masked by ``rule`` (unchanged when the rule is NONE)."""
    if rule.kind is MaskingKind.NONE or not value:
        return value
    if rule.kind is MaskingKind.NAME and value[:2] in COMPOUND_SURNAMES:
        first, last = _shrunk(len(value), 2, 0)
    else:
        first, last = kept_counts(len(value), rule)
    hidden = len(value) - first - last
    return value[:first] + MASK_CHAR * hidden + value[len(value) - last :]
