"""Data for the agency SDK's tests and the examples' (tests/sdk): companies of the example
法人单位基础信息 resource."""

from __future__ import annotations

from node.codes import make_credit_code


def company(n: int) -> dict[str, str]:
    """A record of 法人单位基础信息 (tests.support.sharing.COMPANIES), numbered ``n``."""
    return {
        "tyshxydm": make_credit_code(f"9135000000{n:07d}"),
        "dwmc": f"福州某某科技有限公司{n}",
        "fddbr": "王五",
        "djzt": "存续",
    }
