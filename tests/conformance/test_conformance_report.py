"""Conformance reports: the signed report.json the province verifies, and its two views.

Certificates are real, minted with the platform's own PKI (:mod:`node.pki._ca`): a province
root, the province's intermediate (URI name constraint ``350000.fujian.gov.cn``) and a tester
leaf, so the verifier is exercised exactly as an approving province would use it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conformance.model import CaseInfo, CaseResult, Outcome, RunReport
from conformance.report import (
    FORMAT,
    ReportError,
    canonical,
    verify_signed_report,
    write_reports,
)
from gateway.identity import Role, make_identity
from node.codes import make_credit_code
from node.pki import _ca as pki
from node.pki._files import certs_pem, private_key_pem

TD = "fujian.gov.cn"
TESTER = make_identity("350000", TD, Role.TESTER, "lab-1")
SCRIPT = "<script>alert('x')</script>"
SIGNATURE_MESSAGE = "signature does not verify: it was altered or signed with another key"


@dataclass(frozen=True)
class Signer:
    key_pem: bytes
    chain_pem: bytes


@dataclass(frozen=True)
class Pki:
    root: pki.KeyPair
    province: pki.KeyPair
    tester: Signer

    @property
    def root_pem(self) -> bytes:
        return certs_pem(self.root.cert)


def _signer(leaf: pki.KeyPair, *cas: pki.KeyPair) -> Signer:
    return Signer(private_key_pem(leaf.key), certs_pem(leaf.cert, *(ca.cert for ca in cas)))


def _platform() -> Pki:
    root = pki.create_root_ca("350000", "福建省", TD)
    province = pki.create_intermediate(root, "350000", "福建省", TD)
    tester = pki.issue_leaf(province, TESTER, common_name="福建省测试实验室")
    return Pki(root, province, _signer(tester, province))


@pytest.fixture(scope="module")
def platform() -> Pki:
    return _platform()


# --- a run to report on -------------------------------------------------------------------

CONN_TLS = CaseInfo("CONN-01", "双向 TLS 握手", True, "第三十一条", "mutual TLS with the target")
CONN_HEALTH = CaseInfo("CONN-02", "健康检查", True, "第三十一条", "grpc.health.v1 says SERVING")
CONN_REFLECT = CaseInfo("CONN-03", "服务反射", False, "第三十一条", "reflection lists services")
SEC_ESCAPE = CaseInfo("SEC-01", f"拒绝注入 {SCRIPT} & 过滤", True, "第三十三条", "refuses <b>")
SEC_MASK = CaseInfo("SEC-02", "数据脱敏", False, "第三十五条", "masks citizen ids")


def _run(*, all_pass: bool = False) -> RunReport:
    started = dt.datetime(2026, 11, 25, 9, 30, tzinfo=dt.UTC)
    failed = Outcome.PASSED if all_pass else Outcome.FAILED
    skipped = Outcome.PASSED if all_pass else Outcome.SKIPPED
    return RunReport(
        province="province.fujian.example:7443",
        target="xiamen.fujian.example:7443",
        tester_identity=TESTER.uri,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=12.5),
        target_identity="spiffe://350200.fujian.gov.cn/node",
        mandatory_ids=["CONN-01", "CONN-02", "SEC-01"] + ([] if all_pass else ["SEC-03"]),
        results=[
            CaseResult(CONN_TLS, Outcome.PASSED, "握手成功", ["TLS 1.3", "对端 350200"], 0.25),
            CaseResult(
                CONN_HEALTH,
                failed,
                "健康检查未返回 SERVING",
                ["status: NOT_SERVING", SCRIPT, "control \x00\x1b chars"],
                1.5,
            ),
            CaseResult(CONN_REFLECT, skipped, "未选择 (--only)"),
            CaseResult(SEC_ESCAPE, Outcome.PASSED, f"回显已转义 {SCRIPT}", [SCRIPT], 0.125),
            CaseResult(SEC_MASK, failed, "身份证号未脱敏", ["350203********1234 expected"], 2.0),
        ],
    )


def _write(tmp_path: Path, signer: Signer, report: RunReport | None = None) -> Path:
    paths = write_reports(
        report or _run(), tmp_path / "out", key_pem=signer.key_pem, chain_pem=signer.chain_pem
    )
    return paths.json


def _envelope(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data


def _dump(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, indent=2, ensure_ascii=False).encode("utf-8")


# --- signing and verifying ----------------------------------------------------------------


def test_round_trip_verifies_and_returns_report_and_tester(tmp_path: Path, platform: Pki) -> None:
    report = _run()
    path = _write(tmp_path, platform.tester, report)
    data = path.read_bytes()

    verified = verify_signed_report(data, platform.root_pem)

    assert verified.report == report.to_json()
    assert verified.tester == TESTER
    assert verified.sha256 == hashlib.sha256(data).hexdigest()


def test_envelope_layout(tmp_path: Path, platform: Pki) -> None:
    path = _write(tmp_path, platform.tester)
    text = path.read_text(encoding="utf-8")
    envelope = json.loads(text)

    assert set(envelope) == {"format", "report", "signature"}
    assert envelope["format"] == FORMAT == "govnode-conformance-report/1"
    assert envelope["signature"]["algorithm"] == "ECDSA-P256-SHA256"
    assert envelope["signature"]["signer_chain_pem"] == platform.tester.chain_pem.decode()
    assert "第三十一条" in text  # UTF-8 as is, not \u escapes
    assert text.startswith("{\n  ")  # pretty-printed
    assert canonical(envelope["report"]) == json.dumps(
        envelope["report"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_reformatting_the_envelope_keeps_the_signature(tmp_path: Path, platform: Pki) -> None:
    envelope = _envelope(_write(tmp_path, platform.tester))
    compact = json.dumps(envelope, separators=(",", ":")).encode()  # ASCII escapes, no spaces
    assert verify_signed_report(compact, platform.root_pem).tester == TESTER


def test_flipping_an_outcome_breaks_the_signature(tmp_path: Path, platform: Pki) -> None:
    envelope = _envelope(_write(tmp_path, platform.tester))
    result = envelope["report"]["results"][1]
    assert result["outcome"] == "failed"
    result["outcome"] = "passed"
    with pytest.raises(ReportError, match=SIGNATURE_MESSAGE):
        verify_signed_report(_dump(envelope), platform.root_pem)


def test_a_signature_made_by_another_key_is_refused(tmp_path: Path, platform: Pki) -> None:
    envelope = _envelope(_write(tmp_path, platform.tester))
    other = _envelope(_write(tmp_path / "other", _platform().tester))
    envelope["signature"]["value"] = other["signature"]["value"]
    with pytest.raises(ReportError, match=SIGNATURE_MESSAGE):
        verify_signed_report(_dump(envelope), platform.root_pem)


def test_a_report_signed_by_an_agency_is_not_a_tester_report(tmp_path: Path, platform: Pki) -> None:
    agency_id = make_identity("350000", TD, Role.AGENCY, make_credit_code("11350000003591001"))
    agency = pki.issue_leaf(platform.province, agency_id, common_name="省公安厅")
    path = _write(tmp_path, _signer(agency, platform.province))
    with pytest.raises(ReportError, match="is not a tester identity"):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_a_chain_from_another_root_is_refused(tmp_path: Path, platform: Pki) -> None:
    path = _write(tmp_path, _platform().tester)
    with pytest.raises(ReportError, match="does not lead to the province root"):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_a_leaf_without_its_issuing_ca_is_refused(tmp_path: Path, platform: Pki) -> None:
    tester = pki.issue_leaf(platform.province, TESTER, common_name="lab")
    path = _write(tmp_path, _signer(tester))
    with pytest.raises(ReportError, match="does not lead to the province root"):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_a_chain_that_includes_the_root_is_accepted(tmp_path: Path, platform: Pki) -> None:
    tester = pki.issue_leaf(platform.province, TESTER, common_name="lab")
    path = _write(tmp_path, _signer(tester, platform.province, platform.root))
    assert verify_signed_report(path.read_bytes(), platform.root_pem).tester == TESTER


def test_an_expired_tester_certificate_is_refused(tmp_path: Path, platform: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = pki.issue_leaf(
        platform.province,
        TESTER,
        common_name="lab",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    path = _write(tmp_path, _signer(expired, platform.province))
    with pytest.raises(
        ReportError,
        match=r"certificate spiffe://350000\.fujian\.gov\.cn/tester"
        r"/lab-1 expired on",
    ):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_validity_is_checked_at_the_given_time(tmp_path: Path, platform: Pki) -> None:
    data = _write(tmp_path, platform.tester).read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2 * pki.LEAF_DAYS)
    with pytest.raises(ReportError, match="expired on"):
        verify_signed_report(data, platform.root_pem, now=later)
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(ReportError, match="is not valid yet"):
        verify_signed_report(data, platform.root_pem, now=earlier)


def test_a_tester_outside_its_cas_region_is_refused(tmp_path: Path, platform: Pki) -> None:
    # _build_leaf skips the policy checks issue_leaf applies: the province CA minting a 福州
    # tester identity its name constraint does not permit.
    now = dt.datetime.now(dt.UTC)
    stray = make_identity("350100", TD, Role.TESTER, "lab-2")
    key = pki.generate_key()
    cert = pki._build_leaf(
        platform.province,
        stray,
        key.public_key(),
        common_name="lab",
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=1),
    )
    path = _write(tmp_path, _signer(pki.KeyPair(key, cert), platform.province))
    with pytest.raises(ReportError, match="outside the region its CA may vouch for"):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_a_ca_cannot_sign_a_report(tmp_path: Path, platform: Pki) -> None:
    path = _write(tmp_path, _signer(platform.province))
    with pytest.raises(ReportError, match=r"signed by a CA \(CN=福建省 govnode CA.*\), not by a"):
        verify_signed_report(path.read_bytes(), platform.root_pem)


def test_writing_refuses_a_key_that_does_not_match_the_chain(tmp_path: Path, platform: Pki) -> None:
    other = _platform().tester
    with pytest.raises(ReportError, match="does not belong to the first certificate"):
        write_reports(_run(), tmp_path, key_pem=other.key_pem, chain_pem=platform.tester.chain_pem)
    with pytest.raises(ReportError, match="not an unencrypted PEM private key"):
        write_reports(_run(), tmp_path, key_pem=b"junk", chain_pem=platform.tester.chain_pem)
    assert not list(tmp_path.iterdir())


def _mutate(name: str, envelope: dict[str, Any]) -> bytes:
    sig = envelope["signature"]
    match name:
        case "not json":
            return b"{not json"
        case "not utf-8":
            return b'{"format": "\xff"}'
        case "array":
            return b"[]"
        case "no signature":
            del envelope["signature"]
        case "no report":
            del envelope["report"]
        case "extra field":
            envelope["approved"] = True
        case "wrong format":
            envelope["format"] = "govnode-conformance-report/2"
        case "report not object":
            envelope["report"] = "passed"
        case "signature not object":
            envelope["signature"] = "abc"
        case "no value":
            del sig["value"]
        case "value not string":
            sig["value"] = 42
        case "wrong algorithm":
            sig["algorithm"] = "RSA-SHA1"
        case "value not base64":
            sig["value"] = "!!!not base64!!!"
        case "chain garbage":
            sig["signer_chain_pem"] = (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
        case "chain empty":
            sig["signer_chain_pem"] = ""
        case "duplicate key":
            return _dump(envelope).replace(b'"format":', b'"format": "x", "format":', 1)
    return _dump(envelope)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("not json", "not valid JSON"),
        ("not utf-8", "not UTF-8"),
        ("array", "report file must be a JSON object, found list"),
        ("no signature", "envelope lacks the field.* signature"),
        ("no report", "envelope lacks the field.* report"),
        ("extra field", "unexpected field.* approved"),
        ("wrong format", "format is 'govnode-conformance-report/2'"),
        ("report not object", "'report' field must be a JSON object, found str"),
        ("signature not object", "'signature' field must be a JSON object"),
        ("no value", "'signature' object lacks the field.* value"),
        ("value not string", "signature.value must be a string"),
        ("wrong algorithm", "signature.algorithm is 'RSA-SHA1'"),
        ("value not base64", "signature.value is not base64"),
        ("chain garbage", "signer_chain_pem holds no readable certificate"),
        ("chain empty", "signer_chain_pem holds no readable certificate"),
        ("duplicate key", "repeats the key 'format'"),
    ],
)
def test_malformed_reports_name_the_problem(
    tmp_path: Path, platform: Pki, mutation: str, message: str
) -> None:
    envelope = _envelope(_write(tmp_path, platform.tester))
    with pytest.raises(ReportError, match=message):
        verify_signed_report(_mutate(mutation, envelope), platform.root_pem)


def test_an_unreadable_root_is_reported(tmp_path: Path, platform: Pki) -> None:
    data = _write(tmp_path, platform.tester).read_bytes()
    with pytest.raises(ReportError, match="province root certificate is not readable"):
        verify_signed_report(data, b"not a certificate")


# --- files --------------------------------------------------------------------------------


def test_files_are_created_and_replaced_atomically(tmp_path: Path, platform: Pki) -> None:
    out = tmp_path / "a" / "b"
    first = write_reports(
        _run(), out, key_pem=platform.tester.key_pem, chain_pem=platform.tester.chain_pem
    )
    assert (first.json, first.junit, first.html) == (
        out / "report.json",
        out / "report.xml",
        out / "report.html",
    )
    before = first.json.read_bytes()
    second = write_reports(
        _run(all_pass=True),
        out,
        key_pem=platform.tester.key_pem,
        chain_pem=platform.tester.chain_pem,
    )
    assert second == first
    assert second.json.read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.xml"]
    assert verify_signed_report(second.json.read_bytes(), platform.root_pem).report["passed"]


# --- JUnit XML ----------------------------------------------------------------------------


def test_junit_xml_counts_and_cases(tmp_path: Path, platform: Pki) -> None:
    paths = write_reports(
        _run(), tmp_path, key_pem=platform.tester.key_pem, chain_pem=platform.tester.chain_pem
    )
    root = ET.fromstring(paths.junit.read_bytes())

    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "2", "1")
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == ["connectivity", "security"]
    conn, sec = suites["connectivity"], suites["security"]
    assert (conn.get("tests"), conn.get("failures"), conn.get("skipped")) == ("3", "1", "1")
    assert (sec.get("tests"), sec.get("failures"), sec.get("skipped")) == ("2", "1", "0")

    cases = {c.get("name", "").split(" ")[0]: c for c in root.iter("testcase")}
    assert cases["CONN-01"].get("classname") == "conformance.connectivity"
    assert cases["CONN-01"].get("name") == "CONN-01 双向 TLS 握手"
    assert cases["CONN-01"].get("time") == "0.250"
    assert cases["SEC-01"].get("name") == f"SEC-01 拒绝注入 {SCRIPT} & 过滤"

    failure = cases["CONN-02"].find("failure")
    assert failure is not None
    assert failure.get("message") == "健康检查未返回 SERVING"
    assert failure.text is not None
    assert failure.text.splitlines() == ["status: NOT_SERVING", SCRIPT, "control \\x00\\x1b chars"]
    skipped = cases["CONN-03"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == "未选择 (--only)"
    assert cases["CONN-01"].find("failure") is None and cases["CONN-01"].find("skipped") is None

    props = {p.get("name"): p.get("value") for p in cases["SEC-02"].iter("property")}
    assert props == {"mandatory": "false", "article": "第三十五条"}


# --- HTML ---------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(tmp_path: Path, platform: Pki, report: RunReport) -> tuple[str, _Page]:
    paths = write_reports(
        report, tmp_path, key_pem=platform.tester.key_pem, chain_pem=platform.tester.chain_pem
    )
    text = paths.html.read_bytes().decode("utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    return text, page


def test_html_page_is_self_contained_and_escaped(tmp_path: Path, platform: Pki) -> None:
    text, page = _page(tmp_path, platform, _run())

    assert '<html lang="zh-CN">' in text
    assert '<meta charset="utf-8">' in text
    for case_id in ("CONN-01", "CONN-02", "CONN-03", "SEC-01", "SEC-02"):
        assert case_id in text
    assert "第三十一条" in text and "第三十五条" in text  # Chinese kept as UTF-8
    assert "<script" not in text.lower() and "script" not in page.tags
    assert "&lt;script&gt;" in text
    assert SCRIPT in "".join(page.text)  # shown as text, never run
    assert "http://" not in text and "https://" not in text
    assert not {"link", "img", "iframe", "object", "embed"} & set(page.tags)
    assert not [a for a in page.attrs if a[0] in ("src", "href") or a[0].startswith("on")]
    assert "\x00" not in text and "\x1b" not in text
    assert page.tags.count("table") == 3  # counts, then one per group
    assert page.tags.count("details") == 4  # every case with evidence


def test_html_verdict_names_failed_and_missing_mandatory_cases(
    tmp_path: Path, platform: Pki
) -> None:
    text, _ = _page(tmp_path, platform, _run())
    assert "Verdict: FAILED" in text and "PASSED —" not in text
    assert "mandatory cases failed): CONN-02" in text
    assert "mandatory cases not run): SEC-03" in text
    assert "spiffe://350200.fujian.gov.cn/node" in text  # target identity
    assert TESTER.uri in text


def test_html_verdict_passed(tmp_path: Path, platform: Pki) -> None:
    report = _run(all_pass=True)
    assert report.passed
    text, _ = _page(tmp_path, platform, report)
    assert "Verdict: PASSED" in text and "FAILED" not in text
