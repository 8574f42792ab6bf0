"""The row API's filter grammar (node.opendata._filters): each op, comparisons typed by what
the published item holds, every refusal naming its key, and nothing but FilterError whatever
a caller sends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.catalog import (
    DataType,
    Generalization,
    OpenTreatment,
    OpenTreatmentKind,
    ResourceEntry,
    ValidationKind,
    ValidationRule,
)
from node.errors import InvalidArgument
from node.opendata import (
    MAX_FILTERS,
    MAX_IN_VALUES,
    MAX_VALUE_CHARS,
    FilterError,
    RowFilter,
    parse_filters,
    projection_problem,
)
from tests.support.entries import item, make_entry

AS_STORED = OpenTreatment(kind=OpenTreatmentKind.AS_STORED)


def generalised(how: Generalization, **fields: Any) -> OpenTreatment:
    return OpenTreatment(kind=OpenTreatmentKind.GENERALIZE, generalize=how, **fields)


ENTRY = make_entry(
    1,
    items=(
        item("bh", key=True, open=OpenTreatment(kind=OpenTreatmentKind.PSEUDONYMIZE)),
        item("je", data_type=DataType.DECIMAL, open=AS_STORED),
        item("rq", data_type=DataType.DATE, open=AS_STORED),
        item("sj", data_type=DataType.DATETIME, open=AS_STORED),
        item(
            "nl", data_type=DataType.INTEGER, open=generalised(Generalization.RANGE, range_width=10)
        ),
        item("csrq", data_type=DataType.DATE, open=generalised(Generalization.YEAR)),
        item("yf", data_type=DataType.DATE, open=generalised(Generalization.MONTH)),
        item("qh", open=generalised(Generalization.PREFIX, prefix_length=4)),
        item("bz", open=AS_STORED),
        item("hy", data_type=DataType.BOOLEAN, open=AS_STORED),
        item(
            "zt",
            data_type=DataType.ENUM,
            open=AS_STORED,
            validation=ValidationRule(kind=ValidationKind.ENUM, enum_values=("在营", "注销")),
        ),
    ),
)

ROWS = [
    {
        "bh": "K5QXG3ZB7Q2DTMWA",
        "je": "7",
        "rq": "2024-01-31",
        "sj": "2024-01-31T00:00:00Z",
        "nl": "[30,40)",
        "csrq": "1980",
        "yf": "2024-01",
        "qh": "3501",
        "bz": "福州 Gulou 鼓楼",
        "hy": "true",
        "zt": "在营",
    },
    {
        "bh": "AAAAAAAAAAAAAAAA",
        "je": "-0.5",
        "rq": "2023-12-01",
        "sj": "2024-01-31T00:00:00.5Z",
        "nl": "[-10,0)",
        "csrq": "1991",
        "yf": "2023-12",
        "qh": "3502",
        "bz": "",
        "hy": "false",
        "zt": "注销",
    },
    {"bh": "BBBBBBBBBBBBBBBB", "je": "", "rq": "", "sj": "", "nl": "", "bz": "厦门"},
]


def matching(*pairs: tuple[str, str], entry: ResourceEntry = ENTRY) -> list[int]:
    """The indexes of ROWS the filters match."""
    row_filter = parse_filters(pairs, entry)
    return [i for i, row in enumerate(ROWS) if row_filter.matches(row)]


def refusal(*pairs: tuple[str, str]) -> str:
    with pytest.raises(FilterError) as caught:
        parse_filters(pairs, ENTRY)
    assert isinstance(caught.value, InvalidArgument)  # INVALID_ARGUMENT on the wire
    return caught.value.message


def test_no_filter_matches_every_row() -> None:
    assert matching() == [0, 1, 2]
    assert not parse_filters((), ENTRY) and RowFilter().matches({})


def test_exact_differs_in_and_notin_on_text() -> None:
    assert matching(("bz__exact", "厦门")) == [2]
    assert matching(("bz__exact", "  厦门 ")) == [2]  # a stored string is compared stripped
    assert matching(("qh__in", "3501,3502")) == [0, 1]
    assert matching(("qh__notin", "3501,9999")) == [1]  # row 2 has no qh: null
    assert matching(("bz__differs", "厦门")) == [0]  # the empty bz of row 1 is null


def test_contains_is_a_plain_substring_in_any_case() -> None:
    assert matching(("bz__contains", "gulou")) == [0]
    assert matching(("bz__contains", "鼓楼")) == [0]
    assert matching(("bz__contains", ".*")) == []  # not a pattern
    assert matching(("bz__notcontains", "鼓楼")) == [2]


def test_null_values_match_isnull_and_nothing_else() -> None:
    assert matching(("je__isnull", "")) == [2]
    assert matching(("je__isnotnull", "")) == [0, 1]
    assert matching(("csrq__isnull", "")) == [2]  # an item a row lacks is null


def test_numbers_compare_as_decimals() -> None:
    assert matching(("je__exact", "7.0")) == [0]
    assert matching(("je__exact", "+007")) == [0]
    assert matching(("je__in", "7.00,-0.5")) == [0, 1]
    assert matching(("je__less", "7")) == [0, 1]
    assert matching(("je__strictly_less", "7")) == [1]
    assert matching(("je__greater", "-0.5")) == [0, 1]
    assert matching(("je__strictly_greater", "-0.5")) == [0]
    # As strings "10" < "7"; as numbers it is not.
    assert matching(("je__greater", "10")) == []
    assert matching(("je__less", "10")) == [0, 1]


def test_dates_and_datetimes_compare_in_their_canonical_forms() -> None:
    assert matching(("rq__less", "2023-12-31")) == [1]
    assert matching(("rq__greater", "2024-01-31")) == [0]
    assert matching(("rq__strictly_greater", "2024-01-31")) == []
    # A datetime is an instant, given in any form records accept: 08:00 in China Standard
    # Time is midnight UTC, and half a second later sorts after it (as strings it would not).
    assert matching(("sj__exact", "2024-01-31 08:00:00")) == [0]
    assert matching(("sj__exact", "2024-01-31T08:00:00+08:00")) == [0]
    assert matching(("sj__strictly_greater", "2024-01-31T00:00:00Z")) == [1]
    assert matching(("sj__strictly_less", "2024-01-31T00:00:00.5Z")) == [0]
    assert matching(("sj__greater", "2024-01-31T00:00:00.000001Z")) == [1]


def test_generalised_values_compare_as_published() -> None:
    assert matching(("csrq__less", "1985")) == [0]
    assert matching(("csrq__in", "1980,1991")) == [0, 1]
    assert matching(("yf__strictly_greater", "2023-12")) == [0]
    # A range compares by its lower bound; exact and in take the published text.
    assert matching(("nl__greater", "30")) == [0]
    assert matching(("nl__strictly_less", "30")) == [1]
    assert matching(("nl__less", "-10")) == [1]
    assert matching(("nl__exact", "[30,40)")) == [0]
    assert matching(("nl__notin", "[30,40)")) == [1]
    assert matching(("nl__in", "[30,40),[-10,0)")) == [0, 1]


def test_booleans_and_enums_take_what_records_take() -> None:
    assert matching(("hy__exact", "是")) == [0]
    assert matching(("hy__exact", "0")) == [1]
    assert matching(("zt__exact", "注销")) == [1]


def test_filters_combine_with_and() -> None:
    assert matching(("je__less", "10"), ("bz__contains", "福州")) == [0]
    assert matching(("je__less", "10"), ("je__greater", "0")) == [0]
    assert matching(("bz__exact", "厦门"), ("bz__exact", "福州")) == []


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("bz", "x")], "filter 'bz': is not <item>__<op>, e.g. bh__exact"),
        ([("__exact", "x")], "filter '__exact': is not <item>__<op>"),
        ([("bz__like", "x")], "filter 'bz__like': 'like' is not an op; one of exact, differs"),
        ([("bz__sort", "asc")], "filter 'bz__sort': sorting is not offered: rows come in their"),
        ([("sfzhm__exact", "1")], "filter 'sfzhm__exact': 'sfzhm' is not a published item of"),
        (
            [("bz__exact", "")],
            "bz__exact': exact needs a value; to find empty values use bz__isnull",
        ),
        ([("bz__isnull", "true")], "filter 'bz__isnull': isnull takes no value, got 'true'"),
        ([("bz__less", "b")], "less compares numbers, dates, datetimes, months, years and ranges"),
        ([("qh__greater", "35")], "item qh is text as published (generalize): use exact"),
        ([("je__less", "ten")], "filter 'je__less': 'ten': not a decimal number"),
        ([("rq__exact", "2024-02-30")], "'2024-02-30': 2024-02-30 is not a real calendar date"),
        ([("sj__less", "2024-01-31T08:00:00")], "datetime needs an offset"),
        ([("csrq__less", "1985-01")], "filter 'csrq__less': '1985-01' is not a year YYYY"),
        ([("yf__exact", "2024")], "'2024' is not a month YYYY-MM"),
        ([("nl__less", "[30,40)")], "is not a number; a range item compares by the lower bound"),
        ([("nl__exact", "35")], "'35' is not a range [lo,hi) as published, e.g. [30,40)"),
        ([("hy__exact", "yes")], "not a boolean"),
        ([("zt__in", "在营,歇业")], "'歇业': not one of the allowed values (在营, 注销)"),
        ([("qh__in", "a,,b")], "in takes values separated by single commas, none empty"),
        ([("qh__in", ",".join("x" * MAX_IN_VALUES + "x"))], "in takes at most 20 values, got 21"),
    ],
)
def test_refusals_name_the_key_and_the_rule(pairs: list[tuple[str, str]], expected: str) -> None:
    assert expected in refusal(*pairs)


def test_refusals_of_size_quote_only_a_short_prefix() -> None:
    many = [("bz__exact", "x")] * (MAX_FILTERS + 1)
    assert f"at most {MAX_FILTERS} filters may be combined, got 11" in refusal(*many)
    long_value = refusal(("bz__exact", "v" * (MAX_VALUE_CHARS + 1)))
    assert f"the value is 201 characters, at most {MAX_VALUE_CHARS}" in long_value
    long_key = refusal(("k" * 5000 + "__exact", "x"))
    assert "(5007 characters)" in long_key and len(long_key) < 200
    wrong = refusal(("je__exact", "九" * 150))
    assert "… (150 characters)" in wrong and len(wrong) < 200
    control = refusal(("bz\n__like", "x"))
    assert "\\n" in control and "\n" not in control


def test_a_projection_names_published_items_once() -> None:
    assert projection_problem(["bz", "je"], ENTRY) is None
    unknown = projection_problem(["bz", "sfzhm"], ENTRY)
    assert unknown is not None and "'sfzhm' not published items of" in unknown
    assert "its items: bh, je, rq" in unknown
    assert projection_problem(["bz", "bz"], ENTRY) == "an item is named twice"


KEYS = st.one_of(
    st.text(max_size=30),
    st.builds(
        "{}__{}".format,
        st.sampled_from([i.name for i in ENTRY.items] + ["x", ""]),
        st.sampled_from(["exact", "in", "less", "strictly_greater", "isnull", "sort", "x"]),
    ),
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[+-]?[0-9]{1,30}(\.[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"\[-?[0-9]{1,4},-?[0-9]{1,4}\)", fullmatch=True),
    st.sampled_from(["2024-01-31", "2024-01-31T08:00:00+08:00", "2024", "2024-13", "是", ","]),
)


@given(st.lists(st.tuples(KEYS, VALUES), max_size=12), st.lists(st.sampled_from(ROWS)))
def test_parsing_raises_nothing_but_filter_error(
    pairs: Sequence[tuple[str, str]], rows: list[dict[str, str]]
) -> None:
    try:
        row_filter = parse_filters(pairs, ENTRY)
    except FilterError as error:
        assert len(error.message) < 1024
        return
    for row in rows:  # and a filter it makes never raises on a published row
        row_filter.matches(row)
