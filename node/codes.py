"""Checks for the national codes the platform relies on.

- GB 32100-2015 统一社会信用代码 (unified social credit code): 18 characters with a check
  character; identifies every agency and legal person.
- GB 11643-1999 公民身份号码 (citizen identity number): 18 characters with a check character.
- GB/T 2260 行政区划代码 (administrative division code): six digits. Only a province
  (``XX0000``) or a prefecture-level city (``XXYY00``) may run a platform (第十九条, 第三十一条);
  counties, districts and ``XX90YY`` directly-administered county-level units may not.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from gateway.quote import quote

# --- GB 32100 unified social credit code -------------------------------------------------

_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CREDIT_RE = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$")


def credit_code_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 characters of a code."""
    total = sum(_CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_CHARSET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    """Why ``code`` is not a valid unified social credit code, or None when it is."""
    if len(code) != 18:
        return f"must be 18 characters, got {len(code)}"
    if not _CREDIT_RE.match(code):
        return "has characters outside the GB 32100 set (digits and A-Z without I, O, S, V, Z)"
    expected = credit_code_check_char(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, GB 32100 requires {expected!r}"
    return None


def is_credit_code(code: str) -> bool:
    return credit_code_problem(code) is None


def make_credit_code(first17: str) -> str:
    """Complete a 17-character prefix with its check character (tests, demo data)."""
    return first17 + credit_code_check_char(first17)


def credit_code_region(code: str) -> str:
    """The registration authority's division code (characters 3-8)."""
    return code[2:8]


def agency_home_problem(node_region: str, code: str) -> str | None:
    """Why the agency with ``code`` does not belong to the node of ``node_region``, or None.

    A city node serves the agencies registered in its city (any district of it); the province
    node serves province-level agencies, registered at the province itself (``XX0000``).
    Everyone else gets credentials from their own region's node.
    """
    home = credit_code_region(code)
    region = Region(node_region)
    belongs = home == node_region if region.is_province else region.contains(home)
    if belongs:
        return None
    level = "province-level agencies (registered in " if region.is_province else "agencies of "
    return (
        f"{code} was registered in division {home}; this node serves {level}{node_region}"
        f"{')' if region.is_province else ''}, so the agency belongs to its own region's node"
    )


# --- GB 11643 citizen identity number -----------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_RE = re.compile(r"^[1-9][0-9]{16}[0-9X]$")


def citizen_id_check_char(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def citizen_id_problem(value: str, *, today: dt.date | None = None) -> str | None:
    """Why ``value`` is not a valid citizen identity number, or None when it is."""
    if len(value) != 18:
        return f"must be 18 characters, got {len(value)}"
    if not _ID_RE.match(value):
        return "must be 17 digits followed by a digit or X"
    try:
        birth = dt.datetime.strptime(value[6:14], "%Y%m%d").date()
    except ValueError:
        return f"birth date {value[6:14]} is not a real date"
    if birth.year < 1900 or birth > (today or dt.datetime.now(dt.UTC).date()):
        return f"birth date {value[6:14]} is out of range"
    expected = citizen_id_check_char(value[:17])
    if value[17] != expected:
        return f"check character is {value[17]!r}, GB 11643 requires {expected!r}"
    return None


def make_citizen_id(first17: str) -> str:
    return first17 + citizen_id_check_char(first17)


# --- GB/T 2260 administrative divisions ---------------------------------------------------

#: Names of Fujian's divisions that may run a platform, used to cross-check configured names.
FUJIAN_DIVISIONS: dict[str, str] = {
    "350000": "福建省",
    "350100": "福州市",
    "350200": "厦门市",
    "350300": "莆田市",
    "350400": "三明市",
    "350500": "泉州市",
    "350600": "漳州市",
    "350700": "南平市",
    "350800": "龙岩市",
    "350900": "宁德市",
}

_REGION_RE = re.compile(r"^[1-9][0-9]{5}$")


@dataclass(frozen=True)
class Region:
    """A division that may run a node: a province or one of its prefecture-level cities."""

    code: str

    @property
    def is_province(self) -> bool:
        return self.code.endswith("0000")

    @property
    def province_code(self) -> str:
        return self.code[:2] + "0000"

    def contains(self, code: str) -> bool:
        """Whether the division ``code`` (any level) lies inside this region."""
        prefix = self.code[:2] if self.is_province else self.code[:4]
        return code.startswith(prefix)


def region_problem(code: str) -> str | None:
    """Why ``code`` may not run a platform node, or None when it may (第十九条)."""
    if not _REGION_RE.match(code):
        return f"{quote(code)} is not a six-digit GB/T 2260 division code"
    if code.endswith("0000"):
        return None
    if code.endswith("00"):
        if code[2:4] == "90":
            return (
                f"{code} is a group of directly-administered county-level units, not a "
                "设区市; only the province and its cities may run a platform (第十九条)"
            )
        return None
    return (
        f"{code} is a county-level division; counties may not build a platform, only the "
        "province and its cities (第十九条、第三十一条)"
    )


def parse_region(code: str) -> Region:
    problem = region_problem(code)
    if problem is not None:
        raise ValueError(problem)
    return Region(code)
