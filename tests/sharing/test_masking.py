"""Masking (脱敏): what each rule keeps, Chinese names, and short values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.catalog import MaskingKind, MaskingRule
from node.sharing import mask


def rule(kind: MaskingKind, first: int = 0, last: int = 0) -> MaskingRule:
    return MaskingRule(kind=kind, keep_first=first, keep_last=last)


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        (MaskingKind.CITIZEN_ID, "350102199001011234", "350102********1234"),
        (MaskingKind.CITIZEN_ID, "35010219900101106X", "350102********106X"),
        (MaskingKind.PHONE, "13812345678", "138****5678"),
        (MaskingKind.NAME, "张三", "张*"),
        (MaskingKind.NAME, "王小明", "王**"),
        (MaskingKind.NAME, "欧阳娜娜", "欧阳**"),  # compound surname (复姓) kept whole
        (MaskingKind.NAME, "司马光", "司马*"),
        (MaskingKind.FULL, "福州市鼓楼区", "******"),
        (MaskingKind.NONE, "13812345678", "13812345678"),
    ],
)
def test_each_rule_keeps_what_it_says(kind: MaskingKind, value: str, masked: str) -> None:
    assert mask(value, rule(kind)) == masked


def test_keep_edges_keeps_the_configured_characters() -> None:
    assert mask("福建省福州市鼓楼区", rule(MaskingKind.KEEP_EDGES, 3, 3)) == "福建省***鼓楼区"
    assert mask("ABCDEFGH", rule(MaskingKind.KEEP_EDGES, 0, 2)) == "******GH"


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        (MaskingKind.NAME, "张", "*"),  # a one-character name shows nothing
        (MaskingKind.NAME, "欧阳", "欧*"),  # not the whole of a two-character name
        (MaskingKind.CITIZEN_ID, "1234", "1**4"),  # malformed id: at most 2 of 4 shown
        (MaskingKind.CITIZEN_ID, "12345678901", "1234****901"),
        (MaskingKind.PHONE, "1234", "**34"),
        (MaskingKind.KEEP_EDGES, "abc", "a*c"),
    ],
)
def test_short_values_never_show_more_than_two_thirds(
    kind: MaskingKind, value: str, masked: str
) -> None:
    r = rule(kind, 2, 2) if kind is MaskingKind.KEEP_EDGES else rule(kind)
    assert mask(value, r) == masked


def test_empty_values_stay_empty() -> None:
    assert mask("", rule(MaskingKind.FULL)) == ""


@given(
    value=st.text(min_size=1, max_size=40),
    kind=st.sampled_from([k for k in MaskingKind if k is not MaskingKind.NONE]),
    first=st.integers(0, 30),
    last=st.integers(0, 30),
)
def test_masking_keeps_length_and_always_hides_a_third(
    value: str, kind: MaskingKind, first: int, last: int
) -> None:
    masked = mask(value, rule(kind, first, last))
    assert len(masked) == len(value)
    hidden = sum(1 for a, b in zip(value, masked, strict=True) if b == "*" and a != "*")
    stars_in_value = value.count("*")
    assert hidden + stars_in_value >= max(1, -(-len(value) // 3))
    assert all(b in (a, "*") for a, b in zip(value, masked, strict=True))
