"""Graded security (分级管理, 第三十七条): the level table, every refusal it makes, clear-text
justifications and the masking of level-4 items."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from conformance.probes import probe_entry
from node.catalog import (
    DataType,
    MaskingKind,
    MaskingRule,
    OpenType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    default_clear_items,
    effective_masking,
    highest_level,
    validate_entry,
)
from node.catalog._grading import LEVEL_LIMITS, clear_text_problem, grading_problems
from node.demo import EXAMPLES_DIR, load_example_catalog
from node.errors import InvalidArgument
from node.records._query import shape_row
from node.servicers.convert import entry_from_proto, entry_to_proto
from tests.support.entries import NODE_REGION, item, make_entry

NAME_RULE = MaskingRule(kind=MaskingKind.NAME)
ALL_METHODS = (ShareMethod.VERIFY, ShareMethod.QUERY, ShareMethod.EXCHANGE, ShareMethod.SUBSCRIBE)


def graded(level: int, **fields: Any) -> ResourceEntry:
    """A valid entry whose most sensitive item has ``level`` (the key item stays level 1)."""
    items = (item("tyshxydm", key=True, required=True), item("xx", sensitivity_level=level))
    return make_entry(1, items=items, **fields)


def problems(entry: ResourceEntry) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_entry(entry, node_region=NODE_REGION)
    return caught.value.message.split("; ")


# --- the table ------------------------------------------------------------------------------


def test_the_table_covers_every_level_and_only_tightens() -> None:
    assert sorted(LEVEL_LIMITS) == [1, 2, 3, 4]
    for lower, higher in ((1, 2), (2, 3), (3, 4)):
        a, b = LEVEL_LIMITS[lower], LEVEL_LIMITS[higher]
        assert b.share_types <= a.share_types
        assert b.open_types <= a.open_types
        assert b.conditional_only_methods >= a.conditional_only_methods


@pytest.mark.parametrize("level", [1, 2, 3, 4])
@pytest.mark.parametrize("share_type", list(ShareType))
@pytest.mark.parametrize("open_type", list(OpenType))
def test_every_combination_is_allowed_exactly_when_the_table_says(
    level: int, share_type: ShareType, open_type: OpenType
) -> None:
    fields: dict[str, Any] = {"share_type": share_type, "open_type": open_type}
    if share_type is ShareType.NOT_SHARED:
        fields |= {"share_methods": (), "legal_basis": "《某条例》第一条"}
    else:
        fields["share_methods"] = (ShareMethod.VERIFY, ShareMethod.QUERY)
    limit = LEVEL_LIMITS[level]
    allowed = share_type in limit.share_types and open_type in limit.open_types
    found = grading_problems(graded(level, **fields))
    assert (found == []) is allowed, found
    if allowed:
        validate_entry(graded(level, **fields), node_region=NODE_REGION)


@pytest.mark.parametrize(
    ("level", "fields", "expected"),
    [
        (
            4,
            {"share_type": ShareType.UNCONDITIONAL},
            "entry.share_type: 无条件共享 (unconditional) is not allowed: entry.items[1] xx has "
            "sensitivity level 4 (高度敏感 highly sensitive), the highest of the resource "
            "(分级管理, 第三十七条), which allows only 有条件共享, 暂不共享",
        ),
        (
            3,
            {"open_type": OpenType.UNIVERSAL},
            "entry.open_type: 普遍开放 (universal) is not allowed: entry.items[1] xx has "
            "sensitivity level 3 (敏感 sensitive), the highest of the resource (分级管理, "
            "第三十七条), which allows only 授权开放, 不予开放",
        ),
        (
            4,
            {"open_type": OpenType.AUTHORIZED},
            "entry.open_type: 授权开放 (authorized) is not allowed: entry.items[1] xx has "
            "sensitivity level 4 (高度敏感 highly sensitive), the highest of the resource "
            "(分级管理, 第三十七条), which allows only 不予开放",
        ),
    ],
)
def test_each_refusal_names_the_field_the_item_and_the_rule(
    level: int, fields: dict[str, Any], expected: str
) -> None:
    assert problems(graded(level, **fields)) == [expected]


def test_level_4_bulk_methods_need_conditional_sharing() -> None:
    entry = graded(4, share_type=ShareType.UNCONDITIONAL, share_methods=ALL_METHODS)
    found = problems(entry)
    assert found[0].startswith("entry.share_type: 无条件共享")
    assert found[1:] == [
        f"entry.share_methods[{i}]: {name} is allowed only for a 有条件共享 (conditional) "
        "resource: entry.items[1] xx has sensitivity level 4 (高度敏感 highly sensitive), the "
        "highest of the resource (分级管理, 第三十七条)"
        for i, name in ((2, "数据交换 exchange"), (3, "主动推送 subscribe"))
    ]
    validate_entry(graded(4, share_methods=ALL_METHODS), node_region=NODE_REGION)


def test_level_3_may_be_shared_unconditionally_by_any_method() -> None:
    entry = graded(3, share_type=ShareType.UNCONDITIONAL, share_methods=ALL_METHODS)
    validate_entry(entry, node_region=NODE_REGION)


# --- levels that are not set or out of range ------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (0, "entry.items[1].sensitivity_level: must be 1 to 4, got 0 (not set: grade every item)"),
        (5, "entry.items[1].sensitivity_level: must be 1 to 4, got 5 (分级管理, 第三十七条)"),
        (-1, "entry.items[1].sensitivity_level: must be 1 to 4, got -1 (分级管理, 第三十七条)"),
    ],
)
def test_a_level_outside_1_to_4_is_refused_once(level: int, expected: str) -> None:
    found = problems(graded(level))
    assert len(found) == 1 and found[0].startswith(expected)


def test_an_item_sent_without_a_level_is_refused_not_taken_as_public() -> None:
    wire = entry_to_proto(graded(2))
    wire.items[1].ClearField("sensitivity_level")
    found = problems(entry_from_proto(wire))
    assert found == [
        "entry.items[1].sensitivity_level: must be 1 to 4, got 0 (not set: grade every item) "
        "(分级管理, 第三十七条)"
    ]


def test_a_data_item_has_no_default_level() -> None:
    with pytest.raises(pydantic.ValidationError, match="sensitivity_level"):
        ResourceEntry.model_validate(
            graded(1).model_dump() | {"items": [{"name": "x", "title": "X", "data_type": "string"}]}
        )


def test_example_catalog_and_conformance_probes_are_valid() -> None:
    catalog = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")
    assert [highest_level(e) for e in catalog.resources] == [4, 2, 4, 4]
    for entry in catalog.resources:
        validate_entry(entry, node_region="350000")
    for kind in ("unconditional", "not_shared", "conditional"):
        entry = entry_from_proto(probe_entry(kind, NODE_REGION, "run1"))
        validate_entry(entry, node_region=NODE_REGION)


# --- clear text and masking -----------------------------------------------------------------


def person() -> ResourceEntry:
    return make_entry(
        1,
        items=(
            item("sfzhm", title="公民身份号码", key=True, sensitivity_level=4),
            item("xm", title="姓名", sensitivity_level=3, masking=NAME_RULE),
            item("bz", title="备注", sensitivity_level=1),
        ),
    )


def test_clear_text_needs_a_justification_naming_level_4_items() -> None:
    entry = person()
    assert clear_text_problem(entry, [], "") is None
    assert clear_text_problem(entry, ["sfzhm", "xm"], "社保待遇资格认证需核对完整身份证号") is None
    assert clear_text_problem(entry, ["sfzhm", "xm"], "  ") == (
        "justification: clear text of sfzhm (公民身份号码, level 4 高度敏感 highly sensitive), "
        "xm (姓名) needs a justification recorded in the grant; level-4 items are otherwise "
        "always masked (分级管理, 第三十七条)"
    )
    assert clear_text_problem(entry, ["sfzhm", "nope"], "理由") == (
        "clear_text_items: 'nope': not an item of resource 350100-3-000001"
    )


def test_level_4_items_without_a_masking_rule_are_masked_fully() -> None:
    entry = person()
    by_name = {i.name: i for i in entry.items}
    assert effective_masking(by_name["sfzhm"]).kind is MaskingKind.FULL
    assert effective_masking(by_name["xm"]).kind is MaskingKind.NAME
    assert effective_masking(by_name["bz"]).kind is MaskingKind.NONE
    assert default_clear_items(entry) == frozenset({"bz"})
    stored = {"sfzhm": "350102199003071234", "xm": "张三", "bz": "ok"}
    row = shape_row(by_name, ("sfzhm", "xm", "bz"), frozenset({"bz"}), stored, 1)
    assert row.values == {"sfzhm": "*" * 18, "xm": "张*", "bz": "ok"}
    assert row.masked_items == ("sfzhm", "xm")
    granted = shape_row(by_name, ("sfzhm",), frozenset({"sfzhm"}), stored, 1)
    assert granted.values == {"sfzhm": stored["sfzhm"]} and granted.masked_items == ()


def test_level_4_with_its_own_masking_rule_keeps_it() -> None:
    rule = MaskingRule(kind=MaskingKind.CITIZEN_ID)
    level4 = item("sfzhm", data_type=DataType.STRING, sensitivity_level=4, masking=rule)
    assert effective_masking(level4) == rule
