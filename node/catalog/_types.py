"""Catalog entries (政务信息资源目录), their canonical JSON and the rules they must follow.

Pure domain: no database, no grpc. Names match the wire contract (govnode.v1 ResourceEntry,
DataItem) so the servicer maps field by field. The models carry types only; the rules of the
Measures are checked by :func:`validate_entry`, which names the field path and the rule in
every message, because the message reaches the registering agency verbatim.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from gateway.quote import quote
from node.catalog._patterns import (
    ENGINE,
    MAX_ENTRY_PATTERN_SIZE,
    UnsupportedPattern,
    compile_pattern,
    quote_pattern,
)
from node.codes import Region, credit_code_problem, credit_code_region
from node.errors import InvalidArgument

# --- vocabularies -------------------------------------------------------------------------


class ShareType(enum.StrEnum):
    """共享类型 (第二十四条)."""

    UNCONDITIONAL = "unconditional"  # 无条件共享
    CONDITIONAL = "conditional"  # 有条件共享
    NOT_SHARED = "not_shared"  # 暂不共享


class ShareMethod(enum.StrEnum):
    """共享方式 (第二十六、二十七条)."""

    VERIFY = "verify"  # 联机验证
    COMPARE = "compare"  # 比对验证
    QUERY = "query"  # 检索查询
    EXCHANGE = "exchange"  # 数据交换
    SUBSCRIBE = "subscribe"  # 主动推送


class OpenType(enum.StrEnum):
    """开放类型 (第三十条)."""

    UNIVERSAL = "universal"  # 普遍开放
    AUTHORIZED = "authorized"  # 授权开放
    NOT_OPEN = "not_open"  # 不予开放


class Classification(enum.StrEnum):
    """目录分类; the digit in the resource code is 1, 2 or 3 in this order."""

    BASIC = "basic"  # 基础
    THEMATIC = "thematic"  # 主题
    DEPARTMENTAL = "departmental"  # 部门


class DataType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    DECIMAL = "decimal"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    ENUM = "enum"


class UpdateCycle(enum.StrEnum):
    """更新周期 (第二十一条)."""

    REALTIME = "realtime"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    YEARLY = "yearly"
    IRREGULAR = "irregular"


class ValidationKind(enum.StrEnum):
    """数据校验规则 (第十五、十六条)."""

    NONE = "none"
    CITIZEN_ID = "citizen_id"  # GB 11643 公民身份号码
    CREDIT_CODE = "credit_code"  # GB 32100 统一社会信用代码
    DATE = "date"
    ENUM = "enum"
    PATTERN = "pattern"
    PHONE = "phone"


class MaskingKind(enum.StrEnum):
    """脱敏方式 (第三十四条)."""

    NONE = "none"
    CITIZEN_ID = "citizen_id"
    PHONE = "phone"
    NAME = "name"
    KEEP_EDGES = "keep_edges"
    FULL = "full"


class OpenTreatmentKind(enum.StrEnum):
    """What the open data (第二十九条: 脱密脱敏) holds of an item: nothing unless declared."""

    DROP = "drop"  # not published (the default; level-3/4 items always)
    MASK = "mask"  # the value with all but keep_first/keep_last characters replaced
    GENERALIZE = "generalize"  # coarsened: see Generalization
    PSEUDONYMIZE = "pseudonymize"  # a keyed pseudonym, stable within one dataset version only
    AS_STORED = "as_stored"  # the value as stored


class Generalization(enum.StrEnum):
    """How a GENERALIZE treatment coarsens a value (GB/T 37964: 泛化)."""

    NONE = "none"
    MONTH = "month"  # a date "YYYY-MM-DD" -> "YYYY-MM"
    YEAR = "year"  # a date -> "YYYY"
    PREFIX = "prefix"  # a code (e.g. a division code) -> its first prefix_length characters
    RANGE = "range"  # a number -> the range "[lo, lo + range_width)" that holds it


class ResourceStatus(enum.StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"  # 已撤销; kept with its history, never deleted


class ChangeKind(enum.StrEnum):
    REGISTERED = "registered"
    UPDATED = "updated"
    WITHDRAWN = "withdrawn"


# --- entries ------------------------------------------------------------------------------


def _as_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes in catalog entries must be timezone-aware")
    return value.astimezone(dt.UTC)


UtcDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class ValidationRule(BaseModel):
    model_config = _FROZEN

    kind: ValidationKind = ValidationKind.NONE
    enum_values: tuple[str, ...] = ()
    pattern: str = ""
    max_length: int = 0  # 0: no limit


class MaskingRule(BaseModel):
    model_config = _FROZEN

    kind: MaskingKind = MaskingKind.NONE
    keep_first: int = 0
    keep_last: int = 0


class OpenTreatment(BaseModel):
    """What an item becomes in the open data (第二十九条); see OpenTreatmentKind."""

    model_config = _FROZEN

    kind: OpenTreatmentKind = OpenTreatmentKind.DROP
    keep_first: int = 0  # MASK
    keep_last: int = 0  # MASK
    generalize: Generalization = Generalization.NONE  # GENERALIZE
    prefix_length: int = 0  # GENERALIZE by PREFIX
    range_width: int = 0  # GENERALIZE by RANGE


class DataItem(BaseModel):
    """数据项: one field of a resource."""

    model_config = _FROZEN

    name: str  # machine name, e.g. "xm"
    title: str  # 中文名称, e.g. "姓名"
    data_type: DataType
    required: bool = False
    key: bool = False  # identifies a record; Verify/Compare/Query look records up by key items
    #: 1 (public) .. 4 (highly sensitive), 第三十七条 (node.catalog._grading). No default: an item
    #: whose level was never set must not pass as public.
    sensitivity_level: int
    validation: ValidationRule = ValidationRule()
    masking: MaskingRule = MaskingRule()
    standard_element: str = ""  # 标准数据元 identifier
    authoritative_source: bool = False  # this resource is the source of standard_element (一数一源)
    description: str = ""
    #: What the open data holds of this item (第二十九条); dropped unless declared.
    open: OpenTreatment = OpenTreatment()
    #: A quasi-identifier (准标识符, GB/T 37964): the open data must be k-anonymous over these.
    quasi_identifier: bool = False


class ResourceEntry(BaseModel):
    """目录条目: one registered data resource (登记, 第十八条)."""

    model_config = _FROZEN

    resource_code: str  # RRRRRR-C-NNNNNN
    name: str
    provider_name: str
    provider_code: str  # the providing agency's 统一社会信用代码
    region: str = ""  # set by the node on registration
    classification: Classification
    industry_category: str = ""
    summary: str = ""
    format: str = ""
    items: tuple[DataItem, ...] = ()
    share_type: ShareType
    share_conditions: str = ""
    legal_basis: str = ""
    share_methods: tuple[ShareMethod, ...] = ()
    open_type: OpenType = OpenType.NOT_OPEN
    open_conditions: str = ""
    update_cycle: UpdateCycle = UpdateCycle.IRREGULAR
    publish_date: str = ""  # YYYY-MM-DD
    version: int = 0
    status: ResourceStatus = ResourceStatus.ACTIVE
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    #: A conformance probe resource (第三十一条): registered, changed and fed with records by
    #: testers only, never counted in aggregation status (rules in :mod:`node.catalog._probe`).
    probe: bool = False


class CatalogChange(BaseModel):
    """One row of the catalog change feed: what happened to which entry, in order."""

    model_config = _FROZEN

    sequence: int
    resource_code: str
    version: int
    kind: ChangeKind
    origin_region: str
    at: UtcDatetime
    entry: ResourceEntry


# --- canonical JSON -----------------------------------------------------------------------


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: equal data gives equal text on every node."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


#: Fields of an entry (and of its items) written only when they differ from these defaults:
#: entries stored before the fields existed keep their exact text, so catalog digests stay
#: equal across nodes whichever release wrote an entry. Set, they are part of the text and so
#: of the digest. Reading falls back to the same defaults.
_ENTRY_OMITTED_DEFAULTS: dict[str, Any] = {"probe": False}
_ITEM_OMITTED_DEFAULTS: dict[str, Any] = {
    "open": OpenTreatment().model_dump(mode="json"),
    "quasi_identifier": False,
}


def _omit_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> None:
    for name, default in defaults.items():
        if data[name] == default:
            del data[name]


def entry_to_json(entry: ResourceEntry) -> str:
    data = entry.model_dump(mode="json")
    _omit_defaults(data, _ENTRY_OMITTED_DEFAULTS)
    for item in data["items"]:
        _omit_defaults(item, _ITEM_OMITTED_DEFAULTS)
    return canonical_json(data)


def entry_from_json(text: str) -> ResourceEntry:
    return ResourceEntry.model_validate_json(text)


# --- rules ------------------------------------------------------------------------------

RESOURCE_CODE_RE = re.compile(r"^\d{6}-[123]-\d{6}$")
ITEM_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ELEMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

CLASSIFICATION_DIGIT = {
    Classification.BASIC: "1",
    Classification.THEMATIC: "2",
    Classification.DEPARTMENTAL: "3",
}
KEYED_METHODS = frozenset({ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY})
MAX_ITEMS = 1000
#: An entry's refusal names this many of its problems, then how many more there are.
MAX_PROBLEMS_SHOWN = 10
#: Allowed values of one ENUM item, each at most MAX_ENUM_VALUE_LENGTH characters: every node
#: parses the entry on each change, and the refusal message lists them.
MAX_ENUM_VALUES = 10_000
MAX_ENUM_VALUE_LENGTH = 200

_TEXT_LIMITS = {
    "name": 200,
    "provider_name": 200,
    "industry_category": 100,
    "summary": 4000,
    "format": 100,
    "share_conditions": 2000,
    "legal_basis": 2000,
    "open_conditions": 2000,
}


def validate_entry(entry: ResourceEntry, *, node_region: str) -> None:
    """Check ``entry`` against the catalog rules; raise InvalidArgument naming every problem."""
    problems = entry_problems(entry, node_region=node_region)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        problems = [*problems[:MAX_PROBLEMS_SHOWN], f"and {more} more problems"]
    if problems:
        raise InvalidArgument("; ".join(problems))


def entry_problems(entry: ResourceEntry, *, node_region: str) -> list[str]:
    """Every rule ``entry`` breaks, as ``entry.<path>: <rule>`` messages (empty when valid).
    An entry with too many items or share methods gets only that: the rules per item would
    otherwise make one message per item (megabytes) and work for nothing."""
    oversized = _size_problems(entry)
    if oversized:
        return oversized
    problems: list[str] = []
    problems += _code_problems(entry, node_region)
    problems += _text_problems(entry)
    problems += _sharing_problems(entry)
    problems += _item_problems(entry)
    # Imported here: node.catalog._grading builds on the types of this module.
    from node.catalog._grading import grading_problems
    from node.catalog._open_treatment import open_treatment_problems

    problems += grading_problems(entry)
    problems += open_treatment_problems(entry)
    return problems


def _size_problems(entry: ResourceEntry) -> list[str]:
    problems = []
    if len(entry.items) > MAX_ITEMS:
        problems.append(f"entry.items: at most {MAX_ITEMS} items, got {len(entry.items)}")
    if len(entry.share_methods) > len(ShareMethod):
        problems.append(
            f"entry.share_methods: at most {len(ShareMethod)} (each method once), "
            f"got {len(entry.share_methods)}"
        )
    return problems


def _code_problems(entry: ResourceEntry, node_region: str) -> list[str]:
    problems = []
    code = entry.resource_code
    if not RESOURCE_CODE_RE.match(code):
        problems.append(
            f"entry.resource_code: {quote(code)} must look like RRRRRR-C-NNNNNN (region code, "
            "classification digit 1 basic / 2 thematic / 3 departmental, six-digit number)"
        )
    else:
        if code[:6] != node_region:
            problems.append(
                f"entry.resource_code: {quote(code)} starts with region {code[:6]}, but this node "
                f"registers resources of region {node_region} only"
            )
        digit = CLASSIFICATION_DIGIT[entry.classification]
        if code[7] != digit:
            problems.append(
                f"entry.resource_code: {quote(code)} has classification digit {code[7]}, but "
                f"entry.classification {entry.classification.value} requires {digit}"
            )
    problem = credit_code_problem(entry.provider_code)
    if problem is not None:
        problems.append(
            f"entry.provider_code: {quote(entry.provider_code)} is not a valid unified social "
            f"credit code (GB 32100): {problem}"
        )
    elif not Region(node_region).contains(credit_code_region(entry.provider_code)):
        problems.append(
            f"entry.provider_code: {quote(entry.provider_code)} was registered in division "
            f"{credit_code_region(entry.provider_code)}, outside this node's region {node_region}"
        )
    if entry.region and entry.region != node_region:
        problems.append(
            f"entry.region: {quote(entry.region)} differs from this node's region {node_region}"
        )
    return problems


def _text_problems(entry: ResourceEntry) -> list[str]:
    problems = []
    for field in ("name", "provider_name"):
        if not getattr(entry, field).strip():
            problems.append(f"entry.{field}: must not be empty")
    for field, limit in _TEXT_LIMITS.items():
        value: str = getattr(entry, field)
        if len(value) > limit:
            problems.append(f"entry.{field}: at most {limit} characters, got {len(value)}")
    if not DATE_RE.match(entry.publish_date):
        problems.append(
            f"entry.publish_date: {quote(entry.publish_date)} must be a date YYYY-MM-DD"
        )
    else:
        try:
            dt.date.fromisoformat(entry.publish_date)
        except ValueError:
            problems.append(f"entry.publish_date: {quote(entry.publish_date)} is not a real date")
    return problems


def _sharing_problems(entry: ResourceEntry) -> list[str]:
    problems = []
    methods = entry.share_methods
    seen: set[ShareMethod] = set()
    for i, method in enumerate(methods):
        if method in seen:
            problems.append(f"entry.share_methods[{i}]: {method.value} is listed twice")
        seen.add(method)
    if entry.share_type is ShareType.NOT_SHARED:
        if not entry.legal_basis.strip():
            problems.append(
                "entry.legal_basis: 暂不共享 requires a legal basis: a law, administrative "
                "regulation or national policy (第二十四条)"
            )
        if methods:
            problems.append(
                "entry.share_methods: a 暂不共享 (not shared) resource must not list share methods"
            )
    else:
        if not methods:
            problems.append(
                f"entry.share_methods: a {entry.share_type.value} shared resource needs at least "
                "one share method (第二十六条)"
            )
        if entry.share_type is ShareType.CONDITIONAL and not entry.share_conditions.strip():
            problems.append(
                "entry.share_conditions: 有条件共享 requires the sharing conditions (第二十四条)"
            )
        keyed = sorted(m.value for m in seen & KEYED_METHODS)
        if keyed and entry.items and not any(item.key for item in entry.items):
            problems.append(
                f"entry.items: share methods {', '.join(keyed)} look records up by key, so at "
                "least one item must be marked key"
            )
    return problems


def _item_problems(entry: ResourceEntry) -> list[str]:
    problems = []
    if not entry.items:
        problems.append("entry.items: a resource needs at least one data item")
    names: set[str] = set()
    claimed: dict[str, int] = {}
    for i, item in enumerate(entry.items):
        path = f"entry.items[{i}]"
        if not ITEM_NAME_RE.match(item.name):
            problems.append(
                f"{path}.name: {quote(item.name)} must be lower-case letters, digits and _, "
                "starting with a letter, at most 63 characters"
            )
        elif item.name in names:
            problems.append(f"{path}.name: duplicate item name {quote(item.name)}")
        names.add(item.name)
        if not item.title.strip():
            problems.append(f"{path}.title: must not be empty")
        elif len(item.title) > 200:
            problems.append(f"{path}.title: at most 200 characters, got {len(item.title)}")
        if len(item.description) > 2000:
            problems.append(f"{path}.description: at most 2000 characters")
        if not 1 <= item.sensitivity_level <= 4:
            unset = " (not set: grade every item)" if item.sensitivity_level == 0 else ""
            problems.append(
                f"{path}.sensitivity_level: must be 1 to 4, got {item.sensitivity_level}{unset} "
                "(分级管理, 第三十七条)"
            )
        problems += _rule_problems(path, item)
        if item.standard_element and not ELEMENT_RE.match(item.standard_element):
            problems.append(
                f"{path}.standard_element: {quote(item.standard_element)} must be letters, digits, "
                "'.', '_' or '-', at most 64 characters"
            )
        if item.authoritative_source:
            if not item.standard_element:
                problems.append(
                    f"{path}.authoritative_source: needs standard_element, the element this "
                    "item is the authoritative source of (一数一源, 第十三条)"
                )
            elif item.standard_element in claimed:
                problems.append(
                    f"{path}.standard_element: {quote(item.standard_element)} is already "
                    f"claimed by entry.items[{claimed[item.standard_element]}]; one element, one "
                    "source"
                )
            else:
                claimed[item.standard_element] = i
    problems += _pattern_problems(entry)
    return problems


def _pattern_problems(entry: ResourceEntry) -> list[str]:
    """Every PATTERN rule must run on the linear-time engine (node.catalog._patterns), and the
    entry's patterns together stay within a compile budget: compiling runs on the event loop."""
    problems = []
    spent = 0
    seen: set[str] = set()
    for i, item in enumerate(entry.items):
        rule = item.validation
        if rule.kind is not ValidationKind.PATTERN or not rule.pattern or rule.pattern in seen:
            continue
        seen.add(rule.pattern)
        path = f"entry.items[{i}].validation.pattern"
        if spent > MAX_ENTRY_PATTERN_SIZE:
            problems.append(
                f"{path}: not checked: the entry's patterns before it already compile to more "
                f"than {MAX_ENTRY_PATTERN_SIZE:,} RE2 instructions, the most one entry may have"
            )
            break
        try:
            spent += compile_pattern(rule.pattern).size
        except UnsupportedPattern as refusal:
            spent += refusal.cost  # what trying to compile it cost
            problems.append(f"{path}: {quote_pattern(rule.pattern)}: {refusal}; {ENGINE}")
            continue
        if spent > MAX_ENTRY_PATTERN_SIZE:
            problems.append(
                f"{path}: the entry's patterns compile to more than {MAX_ENTRY_PATTERN_SIZE:,} "
                "RE2 instructions together, the most one entry may have (Unicode classes such "
                "as \\w cost about 1,350 per repetition)"
            )
    return problems


def _rule_problems(path: str, item: DataItem) -> list[str]:
    problems = []
    rule = item.validation
    if (item.data_type is DataType.ENUM or rule.kind is ValidationKind.ENUM) and not any(
        v.strip() for v in rule.enum_values
    ):
        problems.append(f"{path}.validation.enum_values: an enum item needs its allowed values")
    if len(rule.enum_values) > MAX_ENUM_VALUES or any(
        len(v) > MAX_ENUM_VALUE_LENGTH for v in rule.enum_values
    ):
        problems.append(
            f"{path}.validation.enum_values: at most {MAX_ENUM_VALUES:,} values of at most "
            f"{MAX_ENUM_VALUE_LENGTH} characters each, got {len(rule.enum_values):,}"
        )
    elif len(set(rule.enum_values)) != len(rule.enum_values):
        problems.append(f"{path}.validation.enum_values: values must be unique")
    if rule.kind is ValidationKind.PATTERN and not rule.pattern:
        problems.append(f"{path}.validation.pattern: a pattern rule needs a pattern")
    if rule.max_length < 0:
        problems.append(f"{path}.validation.max_length: must be 0 (no limit) or more")
    mask = item.masking
    if mask.keep_first < 0 or mask.keep_last < 0:
        problems.append(f"{path}.masking: keep_first and keep_last must not be negative")
    return problems
