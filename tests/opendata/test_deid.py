"""De-identification of open data (第二十九条): each treatment, what is published at all, and
the scan for direct identifiers left in clear (GB/T 37964)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.catalog import DataItem, DataType, Generalization, OpenTreatment, OpenTreatmentKind
from node.codes import make_citizen_id
from node.opendata import (
    Treater,
    TreatmentError,
)
from tests.support.entries import item

KEY = b"k" * 32
OTHER_KEY = b"o" * 32

MASK = OpenTreatmentKind.MASK
GENERALIZE = OpenTreatmentKind.GENERALIZE
PSEUDONYMIZE = OpenTreatmentKind.PSEUDONYMIZE
AS_STORED = OpenTreatmentKind.AS_STORED
DROP = OpenTreatmentKind.DROP

CITIZEN = make_citizen_id("35010219900307123")
OTHER_CITIZEN = make_citizen_id("35020319851231001")


def opened(name: str, kind: OpenTreatmentKind, *, level: int = 1, **fields: Any) -> DataItem:
    """An item of ``level`` whose open treatment is ``kind`` with ``fields``; ``data_type``
    and ``quasi`` go to the item."""
    data_type = fields.pop("data_type", DataType.STRING)
    quasi = fields.pop("quasi", False)
    return item(
        name,
        data_type=data_type,
        sensitivity_level=level,
        quasi_identifier=quasi,
        open=OpenTreatment(kind=kind, **fields),
    )


def treat(one: DataItem, value: str, key: bytes = KEY) -> str:
    return Treater([one], key).apply({one.name: value})[one.name]


def wrong_check_char(citizen_id: str) -> str:
    return citizen_id[:17] + ("0" if citizen_id[17] != "0" else "1")


# --- what is published ----------------------------------------------------------------------


def test_published_items_are_the_declared_ones_of_levels_1_and_2_in_catalog_order() -> None:
    items = [
        opened("xm", MASK, level=2, keep_first=1, quasi=False),
        opened("bz", DROP),
        opened("sfzh", AS_STORED, level=3),
        opened("csrq", GENERALIZE, generalize=Generalization.YEAR, quasi=True),
        opened("jkzk", PSEUDONYMIZE, level=4),
        opened("xb", AS_STORED, quasi=True),
    ]
    treater = Treater(items, KEY)
    assert treater.published_items == ("xm", "csrq", "xb")
    assert treater.quasi_items == ("csrq", "xb")
    row = {"xm": "张三丰", "bz": "note", "sfzh": CITIZEN, "csrq": "1990-03-07", "jkzk": "良好"}
    assert treater.apply(row | {"xb": "男"}) == {"xm": "张**", "csrq": "1990", "xb": "男"}


@pytest.mark.parametrize("kind", list(OpenTreatmentKind))
@pytest.mark.parametrize("level", [3, 4])
def test_levels_3_and_4_are_never_published_whatever_they_declare(
    kind: OpenTreatmentKind, level: int
) -> None:
    fields: dict[str, Any] = {"keep_first": 1} if kind is MASK else {}
    if kind is GENERALIZE:
        fields = {"generalize": Generalization.PREFIX, "prefix_length": 2}
    treater = Treater([opened("x", kind, level=level, **fields), opened("y", AS_STORED)], KEY)
    assert treater.published_items == ("y",)
    assert treater.apply({"x": CITIZEN, "y": "v"}) == {"y": "v"}
    assert treater.describe()["x"].startswith(f"dropped (level {level}, 第三十七条)")


def test_a_published_item_missing_from_the_record_is_published_empty() -> None:
    treater = Treater([opened("a", AS_STORED), opened("b", PSEUDONYMIZE)], KEY)
    assert treater.apply({"zz": "not in the catalog"}) == {"a": "", "b": ""}


def test_describe_says_what_each_item_becomes() -> None:
    items = [
        opened("xm", MASK, keep_first=1),
        opened("csrq", GENERALIZE, generalize=Generalization.MONTH, data_type=DataType.DATE),
        opened("sj", GENERALIZE, generalize=Generalization.YEAR, data_type=DataType.DATETIME),
        opened("dm", GENERALIZE, generalize=Generalization.PREFIX, prefix_length=4),
        opened("je", GENERALIZE, generalize=Generalization.RANGE, range_width=1000),
        opened("sjhm", PSEUDONYMIZE),
        opened("xb", AS_STORED),
        opened("bz", DROP),
        opened("sfzh", AS_STORED, level=3),
        opened("jb", DROP, level=4),
    ]
    assert Treater(items, KEY).describe() == {
        "xm": "masked, keeping 1 first and 0 last characters",
        "csrq": "generalised to month",
        "sj": "generalised to year (China Standard Time)",
        "dm": "generalised to the first 4 characters",
        "je": "generalised to ranges of width 1000",
        "sjhm": "pseudonymised (keyed per version)",
        "xb": "as stored",
        "bz": "dropped",
        "sfzh": "dropped (level 3, 第三十七条); declared as_stored",
        "jb": "dropped (level 4, 第三十七条)",
    }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "GENERALIZE needs a generalisation"),
        ({"generalize": Generalization.PREFIX}, "needs prefix_length >= 1"),
        ({"generalize": Generalization.RANGE, "range_width": 0}, "needs range_width >= 1"),
        ({"generalize": Generalization.RANGE, "range_width": -5}, "needs range_width >= 1"),
    ],
)
def test_a_generalisation_that_cannot_work_is_refused_when_the_treater_is_built(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(TreatmentError, match=problem) as raised:
        Treater([opened("dm", GENERALIZE, **fields)], KEY)
    assert raised.value.item == "dm"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Treater([], b"short")


# --- MASK -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "first", "last", "masked"),
    [
        ("张三丰", 1, 0, "张**"),
        ("欧阳娜娜", 2, 0, "欧阳**"),
        ("13812345678", 3, 4, "138****5678"),
        ("350102199003071234", 6, 4, "350102********1234"),
        ("😀a😀b😀", 1, 1, "😀***😀"),  # characters, not bytes or UTF-16 units
        ("李四", 1, 1, "**"),  # exactly keep_first + keep_last long: masked whole
        ("李", 1, 1, "*"),
        ("abc", 0, 0, "***"),
        ("", 1, 1, ""),
    ],
)
def test_mask(value: str, first: int, last: int, masked: str) -> None:
    assert treat(opened("x", MASK, keep_first=first, keep_last=last), value) == masked


@given(st.text(max_size=40), st.integers(0, 12), st.integers(0, 12))
def test_mask_never_shows_more_than_the_kept_characters(value: str, first: int, last: int) -> None:
    masked = treat(opened("x", MASK, keep_first=first, keep_last=last), value)
    assert len(masked) == len(value)
    shown = [i for i, c in enumerate(masked) if c != "*"]
    assert len(shown) <= first + last
    if len(value) <= first + last:
        assert masked == "*" * len(value)
    for i in shown:
        assert masked[i] == value[i]
        assert i < first or i >= len(value) - last


# --- GENERALIZE -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "generalize", "value", "expected"),
    [
        (DataType.DATE, Generalization.MONTH, "2024-02-29", "2024-02"),
        (DataType.DATE, Generalization.YEAR, "2024-02-29", "2024"),
        (DataType.DATETIME, Generalization.MONTH, "2024-01-15T08:00:00Z", "2024-01"),
        (DataType.DATETIME, Generalization.MONTH, "2024-01-31T15:59:59.999999Z", "2024-01"),
        # 16:00 UTC on the last day is midnight in China: the next month, the next year.
        (DataType.DATETIME, Generalization.MONTH, "2024-01-31T16:00:00Z", "2024-02"),
        (DataType.DATETIME, Generalization.YEAR, "2023-12-31T16:00:00Z", "2024"),
        (DataType.DATE, Generalization.MONTH, "", ""),
    ],
)
def test_generalise_dates(
    data_type: DataType, generalize: Generalization, value: str, expected: str
) -> None:
    one = opened("rq", GENERALIZE, generalize=generalize, data_type=data_type)
    assert treat(one, value) == expected


@pytest.mark.parametrize(
    ("data_type", "value"),
    [
        (DataType.DATE, "2024-02-30"),
        (DataType.DATE, "20240201"),  # date.fromisoformat takes it; the canonical form is not it
        (DataType.DATE, "2024-02-01T00:00:00Z"),
        (DataType.DATE, "二〇二四年二月"),
        (DataType.DATETIME, "2024-02-01"),
        (DataType.DATETIME, "2024-02-30T00:00:00Z"),
        (DataType.DATETIME, "yesterday, a long time ago in a galaxy"),
    ],
)
def test_a_malformed_date_is_refused_naming_the_item_and_a_short_prefix(
    data_type: DataType, value: str
) -> None:
    one = opened("rq", GENERALIZE, generalize=Generalization.MONTH, data_type=data_type)
    with pytest.raises(TreatmentError) as raised:
        treat(one, value)
    assert raised.value.item == "rq"
    message = str(raised.value)
    assert message.startswith("item rq: ")
    if len(value) <= 16:
        assert f"'{value}'" in message
    else:
        assert f"'{value[:16]}'… ({len(value)} characters)" in message


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [("350102", 4, "3501"), ("福建省福州市鼓楼区", 6, "福建省福州市"), ("", 4, "")],
)
def test_generalise_to_a_prefix(value: str, length: int, expected: str) -> None:
    one = opened("dm", GENERALIZE, generalize=Generalization.PREFIX, prefix_length=length)
    assert treat(one, value) == expected


@pytest.mark.parametrize("value", ["3501", "350"])
def test_a_value_no_longer_than_its_prefix_is_refused_not_published_whole(value: str) -> None:
    one = opened("dm", GENERALIZE, generalize=Generalization.PREFIX, prefix_length=4)
    with pytest.raises(TreatmentError, match="not longer than the 4-character prefix"):
        treat(one, value)


@pytest.mark.parametrize(
    ("value", "width", "expected"),
    [
        ("42", 10, "[40,50)"),
        ("40", 10, "[40,50)"),
        ("0", 10, "[0,10)"),
        ("-0", 10, "[0,10)"),
        ("-1", 10, "[-10,0)"),
        ("-10", 10, "[-10,0)"),
        ("-11", 10, "[-20,-10)"),
        ("-0.5", 10, "[-10,0)"),
        ("-10.0", 10, "[-10,0)"),
        ("-10.000001", 10, "[-20,-10)"),
        ("9.999999999999999999999999999999", 10, "[0,10)"),  # a float would say 10
        ("+007", 5, "[5,10)"),
        (
            "123456789012345678901234567890.5",
            1000,
            "[123456789012345678901234567000,123456789012345678901234568000)",
        ),
        ("", 10, ""),
    ],
)
def test_generalise_to_a_range(value: str, width: int, expected: str) -> None:
    one = opened("je", GENERALIZE, generalize=Generalization.RANGE, range_width=width)
    assert treat(one, value) == expected


@pytest.mark.parametrize("value", ["12a", "1e5", "NaN", "Infinity", "1,000", " 12", "--1", "."])
def test_range_refuses_what_is_not_a_number(value: str) -> None:
    one = opened("je", GENERALIZE, generalize=Generalization.RANGE, range_width=10)
    with pytest.raises(TreatmentError, match=r"^item je: .* is not a number"):
        treat(one, value)


_RANGE = re.compile(r"\[(-?[0-9]+),(-?[0-9]+)\)")


@given(
    st.integers(-(10**30), 10**30),
    st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=12)),
    st.booleans(),
    st.integers(1, 10**6),
)
def test_a_range_always_holds_its_value(
    whole: int, fraction: str | None, negative_zero: bool, width: int
) -> None:
    sign = "-" if whole < 0 or (whole == 0 and negative_zero) else ""
    value = f"{sign}{abs(whole)}" + (f".{fraction}" if fraction is not None else "")
    one = opened("je", GENERALIZE, generalize=Generalization.RANGE, range_width=width)
    match = _RANGE.fullmatch(treat(one, value))
    assert match is not None
    low, high = int(match[1]), int(match[2])
    assert high - low == width
    assert low % width == 0
    # Exact comparison on integers: value * 10^k against the bounds * 10^k.
    scale = 10 ** len(fraction or "")
    scaled = int(value.replace(".", "")) if "." in value else int(value) * scale
    assert low * scale <= scaled < high * scale


# --- PSEUDONYMIZE and AS_STORED ---------------------------------------------------------------


def test_pseudonyms_are_stable_within_a_key_and_unrelated_across_keys_and_items() -> None:
    one, other_item = opened("sjhm", PSEUDONYMIZE), opened("lxdh", PSEUDONYMIZE)
    treater = Treater([one, other_item], KEY)
    first = treater.apply({"sjhm": "13812345678", "lxdh": "13812345678"})
    again = treater.apply({"sjhm": "13812345678", "lxdh": "13812345678"})
    assert first == again
    assert first["sjhm"] != first["lxdh"]  # the item name is part of the MAC
    assert re.fullmatch(r"[A-Z2-7]{16}", first["sjhm"])
    assert treat(one, "13812345678", OTHER_KEY) != first["sjhm"]
    assert treat(one, "13812345679") != first["sjhm"]


def test_a_pseudonym_is_the_documented_hmac() -> None:
    import base64
    import hashlib
    import hmac

    mac = hmac.new(KEY, b"sjhm\x00" + "张三".encode(), hashlib.sha256).digest()
    expected = base64.b32encode(mac[:10]).decode()
    assert treat(opened("sjhm", PSEUDONYMIZE), "张三") == expected


@given(st.text(max_size=50))
def test_pseudonyms_have_one_length_and_empty_stays_empty(value: str) -> None:
    pseudonym = treat(opened("x", PSEUDONYMIZE), value)
    assert len(pseudonym) == (16 if value else 0)


def test_as_stored_is_the_value() -> None:
    assert treat(opened("x", AS_STORED), " 原样 ") == " 原样 "
