"""Who may apply for 授权开放 data (第三十二条): checked from the applicant's code, not trusted.

第三十二条: 属于授权开放类的，内资控股法人企业、高校或者科研院所可以向省或者设区市数据管理机构申请.
An applicant gives its 统一社会信用代码 and the type it applies as. The code must be valid
(GB 32100-2015, check character) and its first two characters, the registration authority
(登记管理部门代码) and the category it registered the applicant in (机构类别代码), must fit
the type:

- 内资控股法人企业: an enterprise registered with 工商 (now market regulation), ``91``. A
  个体工商户 (``92``) is not a legal person and a 农民专业合作社 (``93``) is not an enterprise.
  The code cannot show who controls an enterprise (a foreign-invested one is ``91`` too), so the
  applicant also declares domestic control and names its evidence (a document the authority
  can look at); both are required, and the authority checks the evidence on review.
- 高校 and 科研院所: a 事业单位 (``12``: public universities and research institutes) or a
  民办非企业单位 (``52``: private universities and private research institutes register with
  民政 as such). The code cannot tell a university from a hospital, both ``12``: the authority
  confirms on review (the 事业单位法人证书 and, for a 高校, its approval to run one).

Everyone else is refused naming 第三十二条 and what the code says the applicant is. A 机关
(``11``) is government: it gets government data by sharing (第二章), not by open data.

The table is the code table of registration authorities and categories that goes with
GB 32100-2015 (the standard itself fixes the structure and gives 1 机构编制 / 5 民政 / 9 工商 as
examples; the full list of authorities and categories is kept by the national 统一社会信用代码
data centre).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.quote import quote
from node.codes import credit_code_problem
from node.errors import PermissionDenied

ARTICLE = "第三十二条"
MAX_EVIDENCE = 200

#: GB 32100-2015 登记管理部门代码 (the code's 1st character) -> (the authority, its 机构类别代码
#: (2nd character) -> the category).
REGISTRATION_CATEGORIES: dict[str, tuple[str, dict[str, str]]] = {
    "1": (
        "机构编制",
        {"1": "机关", "2": "事业单位", "3": "中央编办直接管理机构编制的群众团体", "9": "其他"},
    ),
    "2": ("外交", {"1": "外国常驻新闻机构", "9": "其他"}),
    "3": (
        "司法行政",
        {
            "1": "律师执业机构",
            "2": "公证处",
            "3": "基层法律服务所",
            "4": "司法鉴定机构",
            "5": "仲裁委员会",
            "9": "其他",
        },
    ),
    "4": ("文化", {"1": "外国在华文化中心", "9": "其他"}),
    "5": ("民政", {"1": "社会团体", "2": "民办非企业单位", "3": "基金会", "9": "其他"}),
    "6": (
        "旅游",
        {
            "1": "外国旅游部门常驻代表机构",
            "2": "港澳台地区旅游部门常驻内地（大陆）代表机构",
            "9": "其他",
        },
    ),
    "7": ("宗教", {"1": "宗教活动场所", "2": "宗教院校", "9": "其他"}),
    "8": ("工会", {"1": "基层工会", "9": "其他"}),
    "9": ("工商", {"1": "企业", "2": "个体工商户", "3": "农民专业合作社"}),
    "A": ("中央军委改革和编制办公室", {"1": "军队事业单位", "9": "其他"}),
    "N": (
        "农业",
        {"1": "组级集体经济组织", "2": "村级集体经济组织", "3": "乡镇级集体经济组织", "9": "其他"},
    ),
    "Y": ("其他", {"1": "其他"}),
}


class ApplicantType(enum.Enum):
    """What an applicant for 授权开放 data applies as (第三十二条)."""

    DOMESTIC_ENTERPRISE = "domestic_enterprise"  # 内资控股法人企业
    UNIVERSITY = "university"  # 高校
    RESEARCH_INSTITUTE = "research_institute"  # 科研院所

    @property
    def term(self) -> str:
        return _TERMS[self]


_TERMS = {
    ApplicantType.DOMESTIC_ENTERPRISE: "内资控股法人企业",
    ApplicantType.UNIVERSITY: "高校",
    ApplicantType.RESEARCH_INSTITUTE: "科研院所",
}

# The categories (first two characters) each type may be registered in, and what the
# authority still confirms on review. Refused on purpose, with the reason in the message:
# 社会团体 and 基金会 (a 学会 or a foundation is neither a university nor an institute; its
# members apply through their own), 宗教院校 (trains clergy under the religious affairs
# regulations, not a 高等学校), 军队事业单位 (under the Central Military Commission, outside a
# provincial platform), and the 其他 categories (nothing the code shows fits).
_ACCEPTED: dict[ApplicantType, dict[str, str]] = {
    ApplicantType.DOMESTIC_ENTERPRISE: {
        "91": "the evidence of domestic control (内资控股)",
    },
    ApplicantType.UNIVERSITY: {
        "12": "that the 事业单位 is a 高校 (its 事业单位法人证书 and approval to run a 高校)",
        "52": "that the 民办非企业单位 is a 高校 (its 民办学校办学许可证)",
    },
    ApplicantType.RESEARCH_INSTITUTE: {
        "12": "that the 事业单位 is a 科研院所 (its 事业单位法人证书 and 宗旨和业务范围)",
        "52": "that the 民办非企业单位 is a 科研院所 (its registration certificate's 业务范围)",
    },
}


class Ineligible(PermissionDenied):
    """An applicant 第三十二条 does not allow; the message names the article and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{ARTICLE}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Eligibility:
    """An applicant whose code fits the type it applies as."""

    credit_code: str
    applicant_type: ApplicantType
    authority: str  # 登记管理部门, e.g. 工商
    category: str  # 机构类别, e.g. 企业
    evidence_reference: str  # of domestic control, for an enterprise; else empty
    to_confirm: str  # what the 数据管理机构 confirms on review before it grants


def registration_of(credit_code: str) -> tuple[str, str] | None:
    """(登记管理部门, 机构类别) of a code's first two characters, or None when the table has no
    such pair."""
    authority = REGISTRATION_CATEGORIES.get(credit_code[:1])
    if authority is None:
        return None
    category = authority[1].get(credit_code[1:2])
    return None if category is None else (authority[0], category)


def _refusal(code: str, kind: str, authority: str, category: str, applicant: ApplicantType) -> str:
    registered = f"{code} is registered with {authority} as {category} ({code[:2]})"
    wants = applicant.term
    if kind == "11":
        return (
            f"{registered}: a government body gets government data by sharing (第二章, "
            "共享), not by applying for open data"
        )
    if kind == "92":
        return f"{registered}, not a legal person: only a 法人企业 may apply as {wants}"
    if kind == "93":
        return f"{registered}, not an enterprise: only a 法人企业 may apply as {wants}"
    if kind == "91":
        return f"{registered}: an enterprise applies as 内资控股法人企业, not as {wants}"
    if applicant is ApplicantType.DOMESTIC_ENTERPRISE:
        return f"{registered}, not an enterprise (91): only a 法人企业 may apply as {wants}"
    return (
        f"{registered}: a {wants} is a 事业单位 (12) or a 民办非企业单位 (52); only "
        "内资控股法人企业、高校 and 科研院所 may apply"
    )


def check_eligibility(
    credit_code: str,
    applicant_type: ApplicantType,
    *,
    domestic_control_declared: bool,
    evidence_reference: str,
) -> Eligibility:
    """Whether the applicant with ``credit_code`` may apply for 授权开放 data as
    ``applicant_type`` (第三十二条). Raises :class:`Ineligible` saying why not. The declaration
    and evidence of domestic control count only for an enterprise."""
    problem = credit_code_problem(credit_code)
    if problem is not None:
        raise Ineligible(
            f"the applicant's 统一社会信用代码 {quote(credit_code)} is not valid: {problem}"
        )
    kind = credit_code[:2]
    registration = registration_of(credit_code)
    if registration is None:
        raise Ineligible(
            f"{credit_code}: its first two characters {kind} name no registration category of "
            f"GB 32100; only 内资控股法人企业 (91)、高校 and 科研院所 (12, 52) may apply"
        )
    authority, category = registration
    to_confirm = _ACCEPTED[applicant_type].get(kind)
    if to_confirm is None:
        raise Ineligible(_refusal(credit_code, kind, authority, category, applicant_type))
    if applicant_type is not ApplicantType.DOMESTIC_ENTERPRISE:
        return Eligibility(credit_code, applicant_type, authority, category, "", to_confirm)
    if not domestic_control_declared:
        raise Ineligible(
            f"{credit_code} applies as 内资控股法人企业 but does not declare domestic control "
            "(内资控股); the code cannot show who controls an enterprise"
        )
    evidence = evidence_reference.strip()
    if not evidence:
        raise Ineligible(
            f"{credit_code} declares domestic control (内资控股) without naming its evidence "
            "(evidence_reference: the document the authority checks)"
        )
    if len(evidence) > MAX_EVIDENCE or not evidence.isprintable():
        raise Ineligible(
            f"evidence_reference {quote(evidence)} must be one line of at most {MAX_EVIDENCE} "
            "characters"
        )
    return Eligibility(credit_code, applicant_type, authority, category, evidence, to_confirm)
