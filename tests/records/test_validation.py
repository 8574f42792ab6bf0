"""Data quality rules for submitted values (第十五、十六条): types, rules, records."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.catalog import DataItem, DataType, ValidationKind, ValidationRule
from node.codes import (
    citizen_id_problem,
    credit_code_problem,
    make_citizen_id,
    make_credit_code,
)
from node.records._validation import (
    citizen_id_fast_ok,
    credit_code_fast_ok,
    item_value_problem,
    normalise,
    record_problems,
)
from tests.support.entries import item, make_entry

CITIZEN_ID = make_citizen_id("35010219900101106")  # check character 'X'
CREDIT_CODE = make_credit_code("91350100M000100Y4")


def typed(data_type: DataType, **rule: Any) -> DataItem:
    return item("v", data_type=data_type, validation=ValidationRule(**rule))


def ruled(kind: ValidationKind, **rule: Any) -> DataItem:
    return item("v", validation=ValidationRule(kind=kind, **rule))


# --- data types -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "value", "canonical"),
    [
        (DataType.STRING, "  福州  ", "福州"),
        (DataType.INTEGER, "-42", "-42"),
        (DataType.INTEGER, "+007", "7"),
        (DataType.DECIMAL, "3.10", "3.1"),
        (DataType.DECIMAL, "-0.50", "-0.5"),
        (DataType.DECIMAL, "100", "100"),
        (DataType.DECIMAL, "-0.0", "0"),
        (DataType.DATE, "2024-02-29", "2024-02-29"),
        (DataType.DATETIME, "2024-01-31T08:00:00+08:00", "2024-01-31T00:00:00Z"),
        (DataType.DATETIME, "2024-01-31T00:00:00Z", "2024-01-31T00:00:00Z"),
        (DataType.DATETIME, "2024-01-31 08:00:00", "2024-01-31T00:00:00Z"),  # CST
        (DataType.DATETIME, "2024-01-31T00:00:00.5Z", "2024-01-31T00:00:00.500000Z"),
        (DataType.BOOLEAN, "TRUE", "true"),
        (DataType.BOOLEAN, "1", "true"),
        (DataType.BOOLEAN, "是", "true"),
        (DataType.BOOLEAN, "否", "false"),
        (DataType.BOOLEAN, "0", "false"),
    ],
)
def test_valid_values_have_one_canonical_form(
    data_type: DataType, value: str, canonical: str
) -> None:
    data_item = typed(data_type)
    assert item_value_problem(data_item, value) is None
    assert normalise(data_item, value) == canonical


@pytest.mark.parametrize(
    ("data_type", "value", "message"),
    [
        (DataType.INTEGER, "4.2", "not an integer"),
        (DataType.INTEGER, "四十二", "not an integer"),
        (DataType.INTEGER, "", "not an integer"),
        (DataType.DECIMAL, "3,14", "not a decimal number"),
        (DataType.DECIMAL, "1e5", "not a decimal number"),
        (DataType.DATE, "2023-02-29", "2023-02-29 is not a real calendar date"),
        (DataType.DATE, "2024-13-01", "not a real calendar date"),
        (DataType.DATE, "2024/01/31", "not a date YYYY-MM-DD"),
        (DataType.DATETIME, "2024-01-31T08:00:00", "needs an offset"),
        (DataType.DATETIME, "2024-02-30 08:00:00", "not a real date and time"),
        (DataType.DATETIME, "yesterday", "not a datetime"),
        (DataType.BOOLEAN, "yes", "not a boolean"),
    ],
)
def test_values_breaking_their_type_are_refused(
    data_type: DataType, value: str, message: str
) -> None:
    assert message in (item_value_problem(typed(data_type), value) or "")


def test_enum_values_must_be_listed() -> None:
    status = typed(DataType.ENUM, enum_values=("存续", "注销"))
    assert item_value_problem(status, "存续") is None
    assert "not one of the allowed values (存续, 注销)" in (
        item_value_problem(status, "吊销") or ""
    )
    as_rule = ruled(ValidationKind.ENUM, enum_values=("A", "B"))
    assert item_value_problem(as_rule, "B") is None
    assert item_value_problem(as_rule, "b") is not None


# --- rules ----------------------------------------------------------------------------


def test_citizen_id_rule_checks_gb_11643() -> None:
    rule = ruled(ValidationKind.CITIZEN_ID)
    assert CITIZEN_ID.endswith("X")
    assert item_value_problem(rule, CITIZEN_ID) is None
    # A lower-case x is the same number: accepted and stored upper-case.
    assert normalise(rule, CITIZEN_ID.lower()) == CITIZEN_ID
    wrong = CITIZEN_ID[:17] + "3"
    assert item_value_problem(rule, wrong) == (
        "公民身份号码 check character is '3', GB 11643 requires 'X'"
    )
    impossible = make_citizen_id("35010219900230123")  # 30 February
    assert "birth date 19900230 is not a real date" in (item_value_problem(rule, impossible) or "")
    assert "must be 18 characters" in (item_value_problem(rule, "3501021990") or "")


def test_credit_code_rule_checks_gb_32100() -> None:
    rule = ruled(ValidationKind.CREDIT_CODE)
    assert item_value_problem(rule, CREDIT_CODE) is None
    expected = CREDIT_CODE[17]
    wrong = CREDIT_CODE[:17] + ("0" if expected != "0" else "1")
    assert item_value_problem(rule, wrong) == (
        f"统一社会信用代码 check character is {wrong[17]!r}, GB 32100 requires {expected!r}"
    )
    assert "outside the GB 32100 set" in (item_value_problem(rule, "91350100I000100Y4X") or "")


@given(
    region=st.from_regex(r"[1-9][0-9]{5}", fullmatch=True),
    birth=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2024, 12, 31)),
    sequence=st.integers(min_value=0, max_value=999),
)
def test_citizen_ids_made_by_make_citizen_id_round_trip(
    region: str, birth: dt.date, sequence: int
) -> None:
    value = make_citizen_id(f"{region}{birth:%Y%m%d}{sequence:03d}")
    rule = ruled(ValidationKind.CITIZEN_ID)
    assert item_value_problem(rule, value) is None
    assert item_value_problem(rule, value.lower()) is None
    assert normalise(rule, f" {value.lower()} ") == value
    # Any other check character is refused, naming the one GB 11643 requires.
    other = "0" if value[17] != "0" else "1"
    assert f"GB 11643 requires {value[17]!r}" in (
        item_value_problem(rule, value[:17] + other) or ""
    )


@given(st.from_regex(r"[0-9A-Y]{18}", fullmatch=True))
def test_the_fast_national_code_checks_agree_with_node_codes(value: str) -> None:
    assert credit_code_fast_ok(value) is (credit_code_problem(value) is None)
    completed = make_credit_code(value[:17]) if credit_code_problem(value) is None else value
    assert credit_code_fast_ok(completed) is (credit_code_problem(completed) is None)


@given(st.from_regex(r"[0-9]{17}[0-9X]", fullmatch=True))
def test_the_fast_citizen_id_check_agrees_with_node_codes(value: str) -> None:
    assert citizen_id_fast_ok(value) is (citizen_id_problem(value) is None)


def test_date_rule_on_a_string_item() -> None:
    rule = ruled(ValidationKind.DATE)
    assert item_value_problem(rule, "2024-02-29") is None
    assert "not a real calendar date" in (item_value_problem(rule, "2023-02-29") or "")


def test_pattern_rule_must_match_the_whole_value() -> None:
    rule = ruled(ValidationKind.PATTERN, pattern=r"[A-Z]{2}\d{4}")
    assert item_value_problem(rule, "FJ2024") is None
    assert item_value_problem(rule, "FJ2024x") == r"does not match the pattern '[A-Z]{2}\d{4}'"
    assert item_value_problem(rule, "xFJ2024") is not None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("13812345678", True),
        ("19912345678", True),
        ("12812345678", False),  # no 12x mobile prefix
        ("1381234567", False),
        ("0591-87654321", True),
        ("059187654321", True),
        ("010-1234567", True),
        ("0591-87654321-123", True),
        ("87654321", False),  # a fixed line needs its area code
        ("+8613812345678", False),
    ],
)
def test_phone_rule(value: str, ok: bool) -> None:
    problem = item_value_problem(ruled(ValidationKind.PHONE), value)
    assert (problem is None) is ok
    if not ok:
        assert problem is not None and problem.startswith("not a phone number")


def test_max_length_counts_characters_not_bytes() -> None:
    name = item("v", validation=ValidationRule(max_length=3))
    assert item_value_problem(name, "欧阳娜") is None
    assert item_value_problem(name, "欧阳娜娜") == "at most 3 characters, got 4"


# --- records --------------------------------------------------------------------------


def test_a_valid_record_has_no_problems() -> None:
    entry = make_entry(1)
    assert (
        record_problems(entry, {"tyshxydm": "X1", "qymc": "福州公司"}, allowed_extra=frozenset())
        == []
    )


def test_record_problems_name_every_item() -> None:
    entry = make_entry(
        1,
        items=(
            item("tyshxydm", key=True, validation=ValidationRule(kind=ValidationKind.CREDIT_CODE)),
            item("qymc", required=True),
            item("clrq", data_type=DataType.DATE),
        ),
    )
    problems = record_problems(
        entry,
        {"tyshxydm": "  ", "clrq": "2023-02-29", "email": "a@b.cn"},
        allowed_extra=frozenset(),
    )
    assert sorted(problems) == [
        ("clrq", "2023-02-29 is not a real calendar date"),
        ("email", "not declared in the catalog entry (第十二条)"),
        ("qymc", "required item is missing or empty (第十五条)"),
        ("tyshxydm", "key item is missing or empty; records are identified by their key items"),
    ]


def test_temporary_items_are_allowed_only_when_named() -> None:
    entry = make_entry(1)
    values = {"tyshxydm": "X1", "email": "a@b.cn"}
    assert record_problems(entry, values, allowed_extra=frozenset({"email"})) == []
    assert record_problems(entry, values, allowed_extra=frozenset({"phone"})) == [
        ("email", "not declared in the catalog entry (第十二条)")
    ]


def test_an_invalid_required_value_is_reported_once() -> None:
    entry = make_entry(1, items=(item("n", key=True, data_type=DataType.INTEGER),))
    assert record_problems(entry, {"n": "x"}, allowed_extra=frozenset()) == [
        ("n", "not an integer: optional sign and decimal digits, e.g. -42")
    ]


@given(
    sign=st.sampled_from(["", "+", "-"]),
    whole=st.text("0123456789", min_size=1, max_size=12),
    fraction=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=12)),
)
def test_numbers_are_canonicalised_on_their_text_as_decimal_and_int_would(
    sign: str, whole: str, fraction: str | None
) -> None:
    """INTEGER and DECIMAL canonical forms are computed on the text (int() and Decimal are
    quadratic or rounding on long values); within their range they give what those gave."""
    import decimal

    integer = sign + whole
    integer_item = DataItem(name="n", title="N", data_type=DataType.INTEGER, sensitivity_level=1)
    assert normalise(integer_item, integer) == str(int(integer))
    number = integer if fraction is None else f"{integer}.{fraction}"
    expected = format(decimal.Decimal(number).normalize(), "f")
    expected = "0" if expected in ("-0", "+0") else expected
    decimal_item = DataItem(name="d", title="D", data_type=DataType.DECIMAL, sensitivity_level=1)
    assert normalise(decimal_item, number) == expected
