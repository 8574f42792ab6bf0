"""The records the benchmark aggregates and verifies: 法人单位基础信息 from the example catalog.

Record ``i`` is a pure function of ``i``, so the load generator (another process) can build
Verify requests for records the bench submitted without being sent the data.
"""

from __future__ import annotations

from node.catalog import ResourceEntry
from node.codes import make_credit_code
from node.demo import EXAMPLES_DIR, load_example_catalog

#: The example catalog's unconditionally shared resource (无条件共享), so any registered agency
#: may Verify against it without a grant.
RESOURCE_CODE = "350000-1-000002"
#: Its key item (统一社会信用代码) and the item callers claim in Verify (单位名称).
KEY_ITEM = "tyshxydm"
CLAIMED_ITEM = "dwmc"
#: The agency that calls Verify: 福建省公安厅, a consumer, not the provider.
CONSUMER_CODE = make_credit_code("11350000003591001")
CONSUMER_NAME = "福建省公安厅"
#: Another consumer, 福建省民政厅: opens the Subscribe streams it never reads (bench.unread).
IDLE_CONSUMER_CODE = make_credit_code("11350000003591003")
IDLE_CONSUMER_NAME = "福建省民政厅"

_STATUSES = ("存续", "注销", "吊销")


def resource_entry() -> ResourceEntry:
    """The catalog entry, exactly as the example catalog declares it."""
    catalog = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")
    for entry in catalog.resources:
        if entry.resource_code == RESOURCE_CODE:
            return entry
    raise LookupError(f"{RESOURCE_CODE} is missing from the example catalog")


def provider() -> tuple[str, str]:
    """The provider agency's (code, name): only it may Submit records of the resource."""
    entry = resource_entry()
    return entry.provider_code, entry.provider_name


def credit_code(i: int) -> str:
    """A valid GB 32100 code registered in 350000 (digits only in the organisation part)."""
    return make_credit_code(f"91350000{i:09d}")


def company_name(i: int) -> str:
    return f"福建基准测试{i:07d}有限公司"


def record_values(i: int) -> dict[str, str]:
    return {
        KEY_ITEM: credit_code(i),
        CLAIMED_ITEM: company_name(i),
        "fddbr": f"法人{i:07d}",
        "djzt": _STATUSES[i % len(_STATUSES)],
    }


def changed_values(i: int) -> dict[str, str]:
    """Record ``i`` with another legal representative: a change of a stored record, which
    Submit holds for the authority's approval (第四十一条)."""
    return record_values(i) | {"fddbr": f"代表{i:07d}"}
