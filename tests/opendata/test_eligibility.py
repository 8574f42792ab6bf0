"""Who may apply for 授权开放 data (第三十二条): the applicant's 统一社会信用代码 is checked
against the type it applies as, and every refusal names the article and the reason."""

from __future__ import annotations

import pytest

from node.codes import make_credit_code
from node.errors import PermissionDenied
from node.opendata import (
    REGISTRATION_CATEGORIES,
    ApplicantType,
    Ineligible,
    check_eligibility,
    registration_of,
)

ENTERPRISE = make_credit_code("91350100M000100Y4")  # 工商 / 企业
SOLE_TRADER = make_credit_code("92350100MA2Y00001")  # 工商 / 个体工商户
COOPERATIVE = make_credit_code("93350100MA2Y00002")  # 工商 / 农民专业合作社
GOVERNMENT = make_credit_code("11350000003591001")  # 机构编制 / 机关
PUBLIC_INSTITUTION = make_credit_code("12350000488000001")  # 机构编制 / 事业单位
PRIVATE_NON_ENTERPRISE = make_credit_code("52350000MJ0000001")  # 民政 / 民办非企业单位
SOCIETY = make_credit_code("51350000MJ0000002")  # 民政 / 社会团体
RELIGIOUS_COLLEGE = make_credit_code("72350000MJ0000003")  # 宗教 / 宗教院校

NO_DECLARATION = {"domestic_control_declared": False, "evidence_reference": ""}
DECLARED = {"domestic_control_declared": True, "evidence_reference": "股权结构说明 2026-017"}


def refusal(code: str, applicant: ApplicantType, **kwargs: object) -> str:
    arguments = {**NO_DECLARATION, **kwargs}
    with pytest.raises(Ineligible) as caught:
        check_eligibility(code, applicant, **arguments)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("第三十二条: ")
    assert len(message) < 400
    return message


def test_a_domestic_enterprise_with_its_declaration_and_evidence_is_eligible() -> None:
    found = check_eligibility(ENTERPRISE, ApplicantType.DOMESTIC_ENTERPRISE, **DECLARED)  # type: ignore[arg-type]
    assert (found.authority, found.category) == ("工商", "企业")
    assert found.evidence_reference == "股权结构说明 2026-017"
    assert "内资控股" in found.to_confirm


@pytest.mark.parametrize("applicant", [ApplicantType.UNIVERSITY, ApplicantType.RESEARCH_INSTITUTE])
@pytest.mark.parametrize(
    ("code", "category"),
    [(PUBLIC_INSTITUTION, "事业单位"), (PRIVATE_NON_ENTERPRISE, "民办非企业单位")],
)
def test_universities_and_institutes_are_public_institutions_or_private_non_enterprises(
    applicant: ApplicantType, code: str, category: str
) -> None:
    found = check_eligibility(code, applicant, **NO_DECLARATION)  # type: ignore[arg-type]
    assert found.category == category
    assert found.evidence_reference == ""  # a declaration counts only for an enterprise
    assert applicant.term in found.to_confirm  # the authority confirms which it is


def test_a_code_with_a_wrong_check_character_is_refused() -> None:
    wrong = ENTERPRISE[:17] + ("0" if ENTERPRISE[17] != "0" else "1")
    message = refusal(wrong, ApplicantType.DOMESTIC_ENTERPRISE, **DECLARED)
    assert "is not valid" in message and "check character" in message
    assert "not valid" in refusal("91350100", ApplicantType.UNIVERSITY)


def test_a_sole_trader_or_a_cooperative_is_not_a_legal_person_enterprise() -> None:
    message = refusal(SOLE_TRADER, ApplicantType.DOMESTIC_ENTERPRISE, **DECLARED)
    assert "个体工商户" in message and "not a legal person" in message and "法人企业" in message
    message = refusal(COOPERATIVE, ApplicantType.DOMESTIC_ENTERPRISE, **DECLARED)
    assert "农民专业合作社" in message and "not an enterprise" in message


def test_a_government_body_is_sent_to_sharing() -> None:
    for applicant in ApplicantType:
        message = refusal(GOVERNMENT, applicant, **DECLARED)
        assert "机关" in message and "sharing" in message and "共享" in message


def test_an_enterprise_needs_its_declaration_and_its_evidence() -> None:
    message = refusal(ENTERPRISE, ApplicantType.DOMESTIC_ENTERPRISE)
    assert "does not declare domestic control" in message
    message = refusal(
        ENTERPRISE,
        ApplicantType.DOMESTIC_ENTERPRISE,
        domestic_control_declared=True,
        evidence_reference="  ",
    )
    assert "without naming its evidence" in message
    message = refusal(
        ENTERPRISE,
        ApplicantType.DOMESTIC_ENTERPRISE,
        domestic_control_declared=True,
        evidence_reference="x" * 1000,
    )
    assert "at most 200" in message


def test_the_code_must_fit_the_type_applied_as() -> None:
    message = refusal(ENTERPRISE, ApplicantType.UNIVERSITY)
    assert "applies as 内资控股法人企业" in message
    message = refusal(PUBLIC_INSTITUTION, ApplicantType.DOMESTIC_ENTERPRISE, **DECLARED)
    assert "事业单位" in message and "not an enterprise" in message
    for other in (SOCIETY, RELIGIOUS_COLLEGE):
        message = refusal(other, ApplicantType.RESEARCH_INSTITUTE)
        assert "事业单位 (12) or a 民办非企业单位 (52)" in message
    message = refusal(make_credit_code("J1350000MJ0000004"), ApplicantType.UNIVERSITY)
    assert "no registration category" in message


def test_ineligible_is_a_permission_refusal_for_the_servicer() -> None:
    assert issubclass(Ineligible, PermissionDenied)


def test_the_table_names_every_category_by_its_two_characters() -> None:
    assert registration_of("91") == ("工商", "企业")
    assert registration_of("12") == ("机构编制", "事业单位")
    assert registration_of("52") == ("民政", "民办非企业单位")
    assert registration_of("Y1") == ("其他", "其他")
    assert registration_of("94") is None
    assert set(REGISTRATION_CATEGORIES) == set("123456789ANY")
