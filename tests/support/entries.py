"""Catalog test data: valid agency codes, agency identities and catalog entries to start from;
tests change what they are about and leave the rest valid."""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.identity import Identity, Role
from node.catalog import (
    Classification,
    DataItem,
    DataType,
    Generalization,
    MaskingKind,
    MaskingRule,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    UpdateCycle,
    ValidationKind,
    ValidationRule,
)
from node.codes import make_credit_code

NODE_REGION = "350100"  # 福州市
TRUST_DOMAIN = "fujian.gov.cn"
FIXED_TIME = dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)


def agency_code(n: int, region: str = NODE_REGION) -> str:
    """A valid 统一社会信用代码 of an agency registered in ``region`` (chars 3-8)."""
    return make_credit_code(f"11{region}MB{n:07d}")


def agency(code: str, region: str = NODE_REGION) -> Identity:
    return Identity(region, TRUST_DOMAIN, Role.AGENCY, code)


def resource_code(n: int, classification: Classification = Classification.DEPARTMENTAL) -> str:
    digit = {Classification.BASIC: 1, Classification.THEMATIC: 2, Classification.DEPARTMENTAL: 3}
    return f"{NODE_REGION}-{digit[classification]}-{n:06d}"


def item(name: str, **fields: Any) -> DataItem:
    values: dict[str, Any] = {
        "title": name.upper(),
        "data_type": DataType.STRING,
        "sensitivity_level": 1,
    } | fields
    return DataItem(name=name, **values)


def make_entry(n: int, provider: str | None = None, **fields: Any) -> ResourceEntry:
    """A valid, conditionally shared departmental entry numbered ``n``, with a key item."""
    classification = fields.get("classification", Classification.DEPARTMENTAL)
    values: dict[str, Any] = {
        "resource_code": resource_code(n, classification),
        "name": f"资源{n}",
        "provider_name": "福州市市场监督管理局",
        "provider_code": provider or agency_code(1),
        "classification": Classification.DEPARTMENTAL,
        "industry_category": "市场监管",
        "summary": "企业登记信息",
        "format": "table",
        "items": (item("tyshxydm", key=True, required=True), item("qymc")),
        "share_type": ShareType.CONDITIONAL,
        "share_conditions": "用于行政审批",
        "share_methods": (ShareMethod.VERIFY, ShareMethod.QUERY),
        "open_type": OpenType.NOT_OPEN,
        "update_cycle": UpdateCycle.DAILY,
        "publish_date": "2025-01-15",
    } | fields
    return ResourceEntry(**values)


def person_entry(n: int = 2, provider: str | None = None, **fields: Any) -> ResourceEntry:
    """A valid entry of personal records (人口基础信息) keyed by 公民身份号码, with an item of
    every kind the records tests need: rules, masking, dates, decimals, enums."""
    items = (
        DataItem(
            name="sfzhm",
            title="公民身份号码",
            data_type=DataType.STRING,
            key=True,
            sensitivity_level=3,
            validation=ValidationRule(kind=ValidationKind.CITIZEN_ID),
            masking=MaskingRule(kind=MaskingKind.CITIZEN_ID),
        ),
        DataItem(
            name="xm",
            title="姓名",
            data_type=DataType.STRING,
            required=True,
            sensitivity_level=3,
            validation=ValidationRule(max_length=50),
            masking=MaskingRule(kind=MaskingKind.NAME),
        ),
        DataItem(
            name="sjhm",
            title="手机号码",
            data_type=DataType.STRING,
            sensitivity_level=3,
            validation=ValidationRule(kind=ValidationKind.PHONE),
            masking=MaskingRule(kind=MaskingKind.PHONE),
        ),
        DataItem(name="csrq", title="出生日期", data_type=DataType.DATE, sensitivity_level=2),
        DataItem(name="ysr", title="月收入", data_type=DataType.DECIMAL, sensitivity_level=3),
        DataItem(
            name="hyzk",
            title="婚姻状况",
            data_type=DataType.ENUM,
            sensitivity_level=3,
            validation=ValidationRule(enum_values=("未婚", "已婚", "离婚", "丧偶")),
        ),
    )
    values: dict[str, Any] = {
        "name": "人口基础信息",
        "provider_name": "福州市公安局",
        "items": items,
        "share_methods": (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
    } | fields
    return make_entry(n, provider, **values)


def open_items() -> tuple[DataItem, ...]:
    """The items of a 普遍开放 list of old-age allowance payments (高龄津贴发放), with what the
    open data holds of each (脱密脱敏, 第二十九条): every treatment and generalization once,
    birth year, sex and county of household registration marked quasi-identifiers."""
    kind, how = OpenTreatmentKind, Generalization
    return (
        item("ffbh", title="发放编号", key=True, required=True),  # dropped
        item(
            "xm",
            title="姓名",
            sensitivity_level=2,
            masking=MaskingRule(kind=MaskingKind.NAME),
            open=OpenTreatment(kind=kind.PSEUDONYMIZE),
        ),
        item(
            "csrq",
            title="出生日期",
            data_type=DataType.DATE,
            sensitivity_level=2,
            open=OpenTreatment(kind=kind.GENERALIZE, generalize=how.YEAR),
            quasi_identifier=True,
        ),
        item(
            "xb",
            title="性别",
            data_type=DataType.ENUM,
            validation=ValidationRule(enum_values=("男", "女")),
            open=OpenTreatment(kind=kind.AS_STORED),
            quasi_identifier=True,
        ),
        item(
            "hjqh",
            title="户籍地行政区划代码",
            sensitivity_level=2,
            open=OpenTreatment(kind=kind.GENERALIZE, generalize=how.PREFIX, prefix_length=4),
            quasi_identifier=True,
        ),
        item(
            "ffje",
            title="发放金额",
            data_type=DataType.DECIMAL,
            open=OpenTreatment(kind=kind.GENERALIZE, generalize=how.RANGE, range_width=100),
        ),
        item(
            "ffsj",
            title="发放时间",
            data_type=DataType.DATETIME,
            open=OpenTreatment(kind=kind.GENERALIZE, generalize=how.MONTH),
        ),
        item(
            "jbr",
            title="经办人",
            open=OpenTreatment(kind=kind.MASK, keep_first=1),
        ),
        item("lxdh", title="联系电话", sensitivity_level=2, quasi_identifier=True),  # dropped
    )


#: The fields that make an entry the 普遍开放 allowance list of :func:`open_items`.
OPEN_ENTRY: dict[str, Any] = {
    "name": "高龄津贴发放",
    "open_type": OpenType.UNIVERSAL,
    "items": open_items(),
}
