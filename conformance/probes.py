"""Probe resources: the catalog entries and records a run creates, and how they are marked.

Every probe entry has ``probe = true`` (a node lets a tester identity register, feed, use and
withdraw only such entries, 第三十一条), a name starting with ``[conformance]``, and is
withdrawn when the run ends, so that the target's catalog of active resources is left as the
run found it. Records stay (nothing is ever hard-deleted, 第四十一条) but belong to withdrawn
probe resources only, which no one is served any more.

Kinds of probe entries at the target:

- ``unconditional``: 无条件共享 by Verify, Compare and Query, with items masked three ways
  (citizen id, name, phone) and two clear items; the workhorse of the run;
- ``not_shared``: 暂不共享, must never be served to the tester;
- ``conditional``: 有条件共享 by Verify and Query, must be refused without a grant;

and one ``unconditional`` entry at the province, for the province -> target leg of the catalog
round trip.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from govnode.v1 import common_pb2

# GB 32100 unified social credit code: character set and weights of the check character.
_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

PROBE_NAME_PREFIX = "[conformance]"
DEPARTMENTAL_DIGIT = "3"


def probe_provider_code(region: str) -> str:
    """A valid credit code registered in ``region`` (11 = 机关), naming the probe provider."""
    first17 = f"11{region}PR0BE0001"
    total = sum(_CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return first17 + _CREDIT_CHARSET[(31 - total % 31) % 31]


def probe_resource_code(region: str) -> str:
    """A random departmental code in the 99xxxx range of ``region``."""
    return f"{region}-{DEPARTMENTAL_DIGIT}-99{secrets.randbelow(10_000):04d}"


@dataclass(frozen=True)
class ProbeRecord:
    """The one record each target probe resource holds, with values the run can recognise."""

    key: str
    citizen_id: str
    name: str
    phone: str
    note: str

    def values(self) -> dict[str, str]:
        return {
            "probe_key": self.key,
            "sfzhm": self.citizen_id,
            "xm": self.name,
            "sjhm": self.phone,
            "bz": self.note,
        }


def new_probe_record(run_id: str) -> ProbeRecord:
    digits = f"{secrets.randbelow(10**8):08d}"
    return ProbeRecord(
        key=f"probe-{run_id}",
        citizen_id=f"350102{digits[:4]}0101{digits[4:7]}X",
        name="测试探针",
        phone=f"138{digits}",
        note=f"conformance run {run_id}",
    )


def _item(
    name: str,
    title: str,
    *,
    key: bool = False,
    masking: common_pb2.MaskingKind.ValueType = common_pb2.MASKING_KIND_UNSPECIFIED,
    level: int = 1,
) -> common_pb2.DataItem:
    return common_pb2.DataItem(
        name=name,
        title=title,
        data_type=common_pb2.DATA_TYPE_STRING,
        key=key,
        required=key,
        sensitivity_level=level,
        validation=common_pb2.ValidationRule(max_length=64),
        masking=common_pb2.MaskingRule(kind=masking),
        description="conformance probe item",
    )


PROBE_ITEMS = (
    _item("probe_key", "探针键", key=True),
    _item("sfzhm", "公民身份号码", masking=common_pb2.MASKING_KIND_CITIZEN_ID, level=3),
    _item("xm", "姓名", masking=common_pb2.MASKING_KIND_NAME, level=2),
    _item("sjhm", "手机号码", masking=common_pb2.MASKING_KIND_PHONE, level=2),
    _item("bz", "备注"),
)
MASKED_ITEMS = ("sfzhm", "xm", "sjhm")
CLEAR_ITEMS = ("probe_key", "bz")

SHARE = {
    "unconditional": common_pb2.SHARE_TYPE_UNCONDITIONAL,
    "not_shared": common_pb2.SHARE_TYPE_NOT_SHARED,
    "conditional": common_pb2.SHARE_TYPE_CONDITIONAL,
}


def probe_entry(kind: str, region: str, run_id: str) -> common_pb2.ResourceEntry:
    """A probe catalog entry of ``kind`` (see the module docstring) for a node of ``region``."""
    entry = common_pb2.ResourceEntry(
        resource_code=probe_resource_code(region),
        name=f"{PROBE_NAME_PREFIX} {kind} probe {run_id}",
        provider_name="政务数据共享平台符合性测试 (conformance probe)",
        provider_code=probe_provider_code(region),
        classification=common_pb2.CLASSIFICATION_DEPARTMENTAL,
        industry_category="符合性测试",
        summary="Created by a conformance run (第三十一条) and withdrawn when it ends.",
        format="structured",
        items=PROBE_ITEMS,
        share_type=SHARE[kind],
        open_type=common_pb2.OPEN_TYPE_NOT_OPEN,
        update_cycle=common_pb2.UPDATE_CYCLE_IRREGULAR,
        publish_date="2026-01-01",
        probe=True,
    )
    if kind == "not_shared":
        entry.legal_basis = "符合性测试: 探针资源不对外共享 (conformance probe)"
    else:
        entry.share_methods.extend(
            [common_pb2.SHARE_METHOD_VERIFY, common_pb2.SHARE_METHOD_QUERY]
            + ([common_pb2.SHARE_METHOD_COMPARE] if kind == "unconditional" else [])
        )
    if kind == "conditional":
        entry.share_conditions = "仅限符合性测试 (conformance probe only)"
    return entry


# --- open data probes (第二十九至三十五条) ----------------------------------------------------

#: GB 11643 weights of the first 17 digits of a citizen ID, and the check characters.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
OPEN_PROBE_ROWS = 3


def citizen_id_check(first17: str) -> str:
    """The GB 11643 check character of an 18-character citizen ID's first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def valid_citizen_id(first17: str) -> str:
    return first17 + citizen_id_check(first17)


@dataclass(frozen=True)
class OpenProbeRecord:
    """One record of an open data probe: direct identifiers the published data must not hold
    in clear, whatever the item's treatment (第二十九条, 第三十七条)."""

    key: str
    citizen_id: str  # a valid GB 11643 ID (check character correct)
    name: str
    mobile: str  # a mainland mobile number, 1[3-9] and 9 digits
    note: str

    def values(self, *, level3: bool) -> dict[str, str]:
        values = {
            "probe_key": self.key,
            "zjhm": self.citizen_id,  # masked to its first six digits
            "sjhm": self.mobile,  # masked to 3 + 4 digits
            "lxdh": self.mobile,  # pseudonymised
            "xm": self.name,  # pseudonymised
            "bz": self.note,  # as stored: harmless text
        }
        if level3:
            values["sfzhm"] = self.citizen_id  # level 3: never opened
        return values

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in clear in a download."""
        return (self.citizen_id, self.mobile, self.name)


def new_open_probe_records(run_id: str, count: int = OPEN_PROBE_ROWS) -> list[OpenProbeRecord]:
    out = []
    for i in range(count):
        digits = f"{secrets.randbelow(10**8):08d}"
        out.append(
            OpenProbeRecord(
                key=f"open-{run_id}-{i}",
                citizen_id=valid_citizen_id(
                    f"350102198{digits[0]}0{1 + i % 9}1{i % 10}{digits[1:4]}"
                ),
                name=("测试甲", "测试乙", "测试丙")[i % 3],
                mobile=f"13{3 + i % 7}{digits}",
                note=f"conformance open data probe {run_id}",
            )
        )
    return out


def _open_item(
    name: str,
    title: str,
    treatment: common_pb2.OpenTreatment | None,
    *,
    key: bool = False,
    level: int = 2,
) -> common_pb2.DataItem:
    item = _item(name, title, key=key, level=level)
    if treatment is not None:
        item.open.CopyFrom(treatment)
    return item


_AS_STORED = common_pb2.OpenTreatment(kind=common_pb2.OPEN_TREATMENT_KIND_AS_STORED)
_PSEUDONYM = common_pb2.OpenTreatment(kind=common_pb2.OPEN_TREATMENT_KIND_PSEUDONYMIZE)


def _mask(first: int, last: int) -> common_pb2.OpenTreatment:
    return common_pb2.OpenTreatment(
        kind=common_pb2.OPEN_TREATMENT_KIND_MASK, keep_first=first, keep_last=last
    )


#: The items of the open data probes: what each opens as. ``sfzhm`` (level 3) only in the
#: 授权开放 probe, since a resource with a level-3 item may not be 普遍开放 (第三十七条).
OPEN_PROBE_ITEMS = (
    _open_item("probe_key", "探针键", _AS_STORED, key=True, level=1),
    _open_item("zjhm", "证件号码", _mask(6, 0)),
    _open_item("sjhm", "手机号码", _mask(3, 4)),
    _open_item("lxdh", "联系电话", _PSEUDONYM),
    _open_item("xm", "姓名", _PSEUDONYM),
    _open_item("bz", "备注", _AS_STORED, level=1),
)
LEVEL3_ITEM = _open_item("sfzhm", "公民身份号码", None, level=3)
LEVEL3_ITEM.masking.kind = common_pb2.MASKING_KIND_CITIZEN_ID
OPENED_ITEMS = tuple(i.name for i in OPEN_PROBE_ITEMS)

OPEN_KINDS = {
    "open_universal": common_pb2.OPEN_TYPE_UNIVERSAL,  # 普遍开放
    "open_authorized": common_pb2.OPEN_TYPE_AUTHORIZED,  # 授权开放
}


def open_probe_entry(kind: str, region: str, run_id: str) -> common_pb2.ResourceEntry:
    """An open data probe entry of ``kind`` (``open_universal`` or ``open_authorized``)."""
    entry = probe_entry("unconditional", region, run_id)
    entry.name = f"{PROBE_NAME_PREFIX} {kind} probe {run_id}"
    del entry.items[:]
    entry.items.extend(OPEN_PROBE_ITEMS)
    if kind == "open_authorized":
        entry.items.append(LEVEL3_ITEM)
        entry.open_conditions = "仅限符合性测试 (conformance probe only)"
    entry.open_type = OPEN_KINDS[kind]
    return entry
