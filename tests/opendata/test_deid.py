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
    CITIZEN_ID,
    MAX_SCAN_CHARS,
    MOBILE,
    OLD_CITIZEN_ID,
    PERSON_NAME,
    Finding,
    IdentifierScan,
    Treater,
    TreatmentError,
    direct_identifier,
    embedded_identifiers,
    looks_like_person_names,
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


# --- direct identifiers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        CITIZEN,
        OTHER_CITIZEN,
        make_citizen_id("11010519491231002"),  # check character X
        make_citizen_id("11010519491231002").lower(),
        f" {CITIZEN} ",
    ],
)
def test_a_valid_citizen_id_is_a_direct_identifier(value: str) -> None:
    assert direct_identifier(value) == CITIZEN_ID


def test_the_x_case_is_covered() -> None:
    assert make_citizen_id("11010519491231002").endswith("X")


@pytest.mark.parametrize(
    "value",
    [
        wrong_check_char(CITIZEN),
        wrong_check_char(OTHER_CITIZEN),
        make_citizen_id("35010219901307123"),  # month 13
        CITIZEN[:17],
        "350102900307123",  # 15 digits: no check character, no evidence alone
    ],
)
def test_what_fails_gb_11643_is_not_a_citizen_id(value: str) -> None:
    assert direct_identifier(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "13812345678",
        "19912345678",
        "+8613812345678",
        "8613812345678",
        "+86 138 1234 5678",
        "86-138-1234-5678",
        "138-1234-5678",
        "+86  138 1234 5678",  # 18 characters, as many as a citizen id
        "１３８１２３４５６７８",  # full-width digits
    ],
)
def test_a_mobile_number_is_a_direct_identifier(value: str) -> None:
    assert direct_identifier(value) == MOBILE


@pytest.mark.parametrize(
    "value",
    [
        "12812345678",  # 1 then 2: not a mobile prefix
        "1381234567",
        "138123456789",
        "0591-87654321",  # a fixed line: an office, not a person
        "+8713812345678",
        "138abc45678",
        "91350100MA2XXXXXX",
        "91350100M000100Y43",  # a credit code: an organisation
        "",
    ],
)
def test_other_values_are_not_direct_identifiers(value: str) -> None:
    assert direct_identifier(value) is None


def test_identifiers_inside_text_are_found_with_their_offsets() -> None:
    note = f"联系人电话13812345678，备用 +86 139-0000-1111；身份证{CITIZEN}。"
    found = list(embedded_identifiers(note))
    assert found == [
        (MOBILE, note.index("138")),
        (MOBILE, note.index("86 139")),
        (CITIZEN_ID, note.index(CITIZEN)),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-31 办结，金额 1380000 元",
        f"身份证号码错误：{wrong_check_char(CITIZEN)}",
        "订单号 202401311381234567890",  # a phone-like run inside a longer number
        f"{CITIZEN}0",  # 19 digits
        "138****5678",  # masked
        "共 1 页，编号 3812345678",  # runs joined by more than one character are apart
    ],
)
def test_no_identifier_is_made_up_from_dates_amounts_or_longer_numbers(text: str) -> None:
    assert list(embedded_identifiers(text)) == []


def test_the_date_inside_a_citizen_id_is_not_a_phone() -> None:
    assert list(embedded_identifiers(f"a{CITIZEN}b")) == [(CITIZEN_ID, 1)]


def test_the_scan_reads_a_bounded_prefix_in_linear_time() -> None:
    tail = "13812345678"
    assert list(embedded_identifiers("x" * (MAX_SCAN_CHARS - 11) + tail)) == [
        (MOBILE, MAX_SCAN_CHARS - 11)
    ]
    assert list(embedded_identifiers("x" * (MAX_SCAN_CHARS - 10) + tail)) == []
    # Many short runs joined by separators: each starts a bounded number of candidates.
    assert list(embedded_identifiers("1-" * 10**6)) == []


# --- names ------------------------------------------------------------------------------------

NAMES = [
    *("陈建国", "林秀英", "黄志强", "张伟", "王芳", "李娜", "刘洋", "吴敏", "郑海燕", "周杰"),
    *("欧阳娜娜", "司马光", "诸葛亮", "上官婉儿", "蓝玉凤", "雷小明", "钟丽华", "肖红", "赖文"),
    *("许明", "杨帆", "叶青", "蔡依林", "谢晓峰", "魏来", "江涛", "罗晓", "高原", "苏娟"),
]
_COUNTIES = (
    "鼓楼区 台江区 仓山区 马尾区 晋安区 长乐区 闽侯县 连江县 罗源县 闽清县 永泰县 平潭县 福清市 "
    "思明区 海沧区 湖里区 集美区 同安区 翔安区 城厢区 涵江区 荔城区 秀屿区 仙游县 三元区 沙县区 "
    "明溪县 清流县 宁化县 大田县 尤溪县 将乐县 泰宁县 建宁县 永安市 鲤城区 丰泽区 洛江区 泉港区 "
    "惠安县 安溪县 永春县 德化县 金门县 石狮市 晋江市 南安市 芗城区 龙文区 龙海区 长泰区 云霄县 "
    "漳浦县 诏安县 东山县 南靖县 平和县 华安县 延平区 建阳区 顺昌县 浦城县 光泽县 松溪县 政和县 "
    "邵武市 武夷山市 建瓯市 新罗区 永定区 长汀县 上杭县 武平县 连城县 漳平市 蕉城区 霞浦县 古田县 "
    "屏南县 寿宁县 周宁县 柘荣县 福安市 福鼎市"
)
#: Fujian's county-level divisions: real place names, many of them starting with a surname.
FUJIAN_COUNTIES = _COUNTIES.split()
PRODUCTS = [
    *("大米", "食用油", "酱油", "白砂糖", "牛奶", "鸡蛋", "猪肉", "白菜", "苹果", "香蕉"),
    *("王老吉", "康师傅", "娃哈哈", "农夫山泉", "李宁", "安踏", "华为", "小米", "格力", "美的"),
    *("海尔", "长虹", "方太", "老板", "九牧", "铁观音", "大红袍", "茉莉花茶", "肉松", "鱼丸"),
]


def test_a_column_of_names_looks_like_names() -> None:
    assert looks_like_person_names(NAMES)
    assert looks_like_person_names(NAMES[:3])  # too few for the frequency test
    assert looks_like_person_names([*NAMES, "", " ", "Zhang Wei", "未知"])  # still most


@pytest.mark.parametrize(
    "column",
    [
        FUJIAN_COUNTIES,
        [county[:-1] for county in FUJIAN_COUNTIES],  # without 区/县/市: 石狮, 连江, 马尾
        PRODUCTS,
        ["男", "女", "男", "女"],
        ["已办结", "办理中", "已受理"],
        [],
        ["", ""],
    ],
    ids=["counties", "counties-bare", "products", "sex", "status", "empty", "blank"],
)
def test_place_and_product_names_are_not_person_names(column: list[str]) -> None:
    assert not looks_like_person_names(column)


def test_the_frequency_test_decides_for_surname_shaped_words() -> None:
    # Every value is shaped like a name (a surname, no place ending), but they all start
    # with rare surnames: from ten values on that is not a column of names.
    rare = ["福清", "石狮", "连江", "罗源", "晋安", "金门", "龙海", "云霄", "华安", "平和"]
    assert looks_like_person_names(rare[:9])
    assert not looks_like_person_names(rare)
    assert looks_like_person_names([*rare[:8], "陈明", "林芳"])


# --- the scan ---------------------------------------------------------------------------------


def scan_items() -> list[DataItem]:
    return [
        opened("xm", AS_STORED),
        opened("bz", AS_STORED),
        opened("sjhm", PSEUDONYMIZE),
        opened("lxdh", MASK, keep_first=3, keep_last=4),
        opened("dh2", MASK, keep_first=11),  # keeps too much
        opened("qx", AS_STORED),
        opened("jzsj", GENERALIZE, generalize=Generalization.MONTH, data_type=DataType.DATE),
        opened("sfzh", AS_STORED, level=3),
        opened("jlh", AS_STORED),
    ]


def test_the_scan_reports_identifiers_left_in_clear_by_item_kind_count_and_first_row() -> None:
    treater = Treater(scan_items(), KEY)
    scan = IdentifierScan(treater)
    assert scan.scanned_items == ("xm", "bz", "lxdh", "dh2", "qx", "jzsj", "jlh")
    for n in range(40):
        phone = f"139{n:08d}"
        note = f"第{n}次回访，电话 {phone}" if n % 10 == 3 else "无"
        record = {
            "xm": NAMES[n % len(NAMES)],
            "bz": note,
            "sjhm": phone,
            "lxdh": phone,
            "dh2": phone + "（本人）",
            "qx": FUJIAN_COUNTIES[n][:-1],
            "jzsj": "2024-05-06",
            "sfzh": CITIZEN,
            "jlh": "350102" + f"90{n % 12 + 1:02d}01" + "123" if n else "",
        }
        scan.add(treater.apply(record))
    findings = scan.findings()
    assert findings == [
        Finding("xm", PERSON_NAME, count=40, first_row=1, position=0),
        Finding("bz", MOBILE, count=4, first_row=4, position=len("第3次回访，电话 ")),
        Finding("dh2", MOBILE, count=40, first_row=1, position=0),
        Finding("jlh", OLD_CITIZEN_ID, count=39, first_row=2, position=0),
    ]
    assert not any("139" in str(f) for f in findings)  # never the value


def test_a_published_citizen_id_is_found_and_a_wrong_one_is_not() -> None:
    treater = Treater([opened("zjhm", AS_STORED), opened("bh", AS_STORED)], KEY)
    scan = IdentifierScan(treater)
    scan.add(treater.apply({"zjhm": wrong_check_char(CITIZEN), "bh": wrong_check_char(CITIZEN)}))
    scan.add(treater.apply({"zjhm": CITIZEN, "bh": f"本人 {CITIZEN}，配偶 {OTHER_CITIZEN}"}))
    scan.add(treater.apply({"zjhm": OTHER_CITIZEN}))
    assert scan.findings() == [
        Finding("zjhm", CITIZEN_ID, count=2, first_row=2, position=0),
        Finding("bh", CITIZEN_ID, count=1, first_row=2, position=3),  # rows, not identifiers
    ]


def test_a_column_of_places_gives_no_finding() -> None:
    treater = Treater([opened("qx", AS_STORED), opened("bh", AS_STORED)], KEY)
    scan = IdentifierScan(treater)
    for n, county in enumerate(FUJIAN_COUNTIES):
        # 15-digit numbers, a fifth of them shaped like old ids: too few for an id column.
        middle = "900101" if n % 5 == 0 else "000000"
        scan.add({"qx": county[:-1], "bh": f"350100{middle}{n:03d}"})
    assert scan.findings() == []


def test_names_beyond_the_sample_are_counted_but_the_sample_decides() -> None:
    treater = Treater([opened("mc", AS_STORED)], KEY)
    scan = IdentifierScan(treater, sample_size=20)
    for county in FUJIAN_COUNTIES[:20]:
        scan.add({"mc": county})
    for name in NAMES:
        scan.add({"mc": name})
    assert scan.findings() == []
    scan = IdentifierScan(treater, sample_size=20)
    for name in NAMES[:20]:
        scan.add({"mc": name})
    for county in FUJIAN_COUNTIES:
        scan.add({"mc": county})
    assert scan.findings() == [Finding("mc", PERSON_NAME, count=20, first_row=1, position=0)]
