"""`govnode demo` runs start to finish and shows what it promises, from the package as a user
installs it: a wheel built from this checkout, installed into a fresh virtualenv, run from a
directory outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

#: A structlog event line, as rendered for a terminal or as JSON.
LOG_EVENT = re.compile(r"\[(debug|info|warning) *\]|\"level\": \"(debug|info|warning)\"")


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding govnode installed from a freshly built wheel; its bin/ directory.

    The wheel is built offline (hatchling, the build backend, is a dev dependency) and
    installed without dependencies; the venv finds those through this interpreter's
    site-packages, added as a plain path, so that the editable install's pointer to this
    checkout (a .pth file there) is not followed: every govnode file comes from the wheel.
    """
    base = tmp_path_factory.mktemp("wheel")
    dist, venv = base / "dist", base / "venv"
    pip = [sys.executable, "-m", "pip", "--quiet"]
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", dist, REPOSITORY)
    [wheel] = dist.glob("govnode-*.whl")
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel)
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    where = _run(python, "-c", "import node; print(node.__file__)", cwd=base)
    assert Path(where.strip()).is_relative_to(site), where  # not the checkout's node/
    return venv / "bin"


def test_the_demo_registers_the_example_catalog_and_shows_each_refusal(
    installed: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GOVNODE_EXAMPLES")}
    result = subprocess.run(
        [installed / "govnode", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    text = result.stdout
    # What the demo prints is the demo: no node log events among it, on either stream.
    for stream in (result.stdout, result.stderr):
        assert not LOG_EVENT.search(stream), stream
    assert "health SERVING" in text
    assert "reflection lists 9 govnode.v1 services" in text
    assert text.count("  ✓ 3500") == 4  # four registrations
    # An update is a change request until the province's authority approves it (第四十一条).
    assert "is pending; the entry stays v1" in text
    assert "the 福建省 authority approved it: 350000-1-000001 is now v2" in text
    assert "4 accepted, 2 refused" in text
    assert "GB 11643 requires" in text and "not declared in the catalog entry" in text
    assert "duplicate=True" in text
    assert "dwmc 一致" in text and "djzt 不一致" in text
    assert "王*" in text and "(masked: fddbr)" in text
    assert "needs an approved application" in text
    assert "hash chain intact" in text
    # The federation: two cities join, catalogs converge, a routed call, a catch-up, status.
    assert text.count("joined with a one-time invitation") == 2
    assert "all three nodes report catalog digest" in text
    assert "Verify: all_match=True" in text
    assert "forwarded by spiffe://350000.fujian.gov.cn/node" in text
    assert "caught up from its last applied version" in text
    assert text.count("HEALTHY") == 2
    # Governance: an application across cities, its narrowed grant, its scope and revocation.
    assert "lives at 福州" in text and "approved it narrowed" in text
    assert "returns only the granted items" in text and "(masked: fddbr)" in text
    assert "越权使用, 第三十七条" in text
    assert "the next Query: PERMISSION_DENIED" in text and "was revoked" in text
    assert "1 held as change request 350100-C-" in text  # 第四十一条
    assert "the record still reads 陈十一" in text
    assert "the record is now version 2 (林十二)" in text
    assert "every version stays readable: v1 陈十一 → v2 林十二" in text
    # Conformance: the whole suite passes against 福州, which is then approved.
    assert "29 passed, 0 failed" in text
    assert "approved_sub_platform = true" in text
    # Audit evidence (第三十九条): 福州's checkpoint cosigned by the province, a proof of the
    # routed Verify checked offline, an altered one refused.
    assert "— 350000.fujian.gov.cn/witness (witness)" in text
    assert "checked offline with the root certificate alone" in text
    assert "cosigned by spiffe://350000.fujian.gov.cn/node at " in text
    assert "outcome changed is refused: the record's fields do not hash" in text
    assert "— 350100.fujian.gov.cn/audit (the log's node key)" in text
    # ... and the agency that provides the resource receives the record of that Verify on its
    # usage log stream, with its proof and 福州's signed statement, and checks them (第三十九条).
    evidence = text.split("\n[17] ", 1)[1].split("\n[18] ", 1)[0]
    assert "✗" not in evidence, evidence
    verify = re.search(r"proof that 福州's record #(\d+) \(the routed Verify", evidence)
    assert verify, evidence
    assert (
        "✓ 福州市市场监督管理局 (11350100003592001G), the provider of 350100-1-000001, called "
        "AuditService.StreamUsageLog on 福州 over mutual TLS with its own agency certificate"
    ) in evidence
    assert (
        f"✓ it received record #{verify[1]} (比对 Verify by "
        "spiffe://350200.fujian.gov.cn/agency/11350200003593001W) with its proof" in evidence
    )
    listed = re.search(
        r"✓ with 福州's signed statement: of sequences 1\.\.\d+ of 350100\.fujian\.gov\.cn/audit, "
        r"exactly (\d+) records concern 350100-1-000001, and it received each of them",
        evidence,
    )
    assert listed, evidence
    assert (
        "✓ checked with the root certificate alone (govnode audit check-usage): "
        f"{listed[1]} proofs and 1 statement(s) for "
        "spiffe://350100.fujian.gov.cn/agency/11350100003592001G"
    ) in evidence
    # Open data (第二十九至三十五条): the authority publishes 法人单位基础信息, de-identified as
    # its items say; the public portal, a process of its own, serves it over HTTPS with no
    # client certificate, with its source and date, and the receipt checks offline.
    opened = text.split("\n[18] ", 1)[1].split("\n[19] ", 1)[0]
    assert "✗" not in opened, opened
    assert "✓ version 1: 4 rows published, 0 left out" in opened, opened
    assert "fddbr 法定代表人: masked, keeping 1 first and 0 last characters" in opened
    assert "header tyshxydm,dwmc,fddbr,djzt" in opened and ",王*," in opened
    assert "来源：福建省市场监督管理局（统一社会信用代码 113500000035910027）" in opened
    assert "✓ the public portal runs as a process of its own (govnode portal serve)" in opened
    assert "as spiffe://350000.fujian.gov.cn/portal/demo" in opened
    assert "GET /api/v1/datasets?q=法人 (HTTPS, no client certificate): 法人单位基础信息" in opened
    assert "GET /api/v1/datasets/350000-1-000002/data.csv → 4 rows" in opened
    assert 'Link: <https://opendata.fujian.gov.cn/dataset/350000-1-000002>; rel="cite-as"' in opened
    assert (
        "✓ receipt (header Govnode-Receipt) checked offline with the root certificate alone "
        "(govnode opendata check-receipt): https://opendata.fujian.gov.cn/dataset/"
        "350000-1-000002 version 1"
    ) in opened
    assert "by ip:127.0.0.1" in opened
    # 授权开放: a university refused for commercial use, approved for research narrowed, its
    # key downloading only the approved items with a receipt naming the key.
    authorized = text.split("\n[19] ", 1)[1].split("\n[20] ", 1)[0]
    assert "✗ for commercial use: 403 PERMISSION_DENIED: 第三十三条: a 高校 may use" in authorized
    assert re.search(r"✓ for research: application 350000-OA-\w+ is pending", authorized)
    key_id = re.search(r"the key \(key id (\w+)\) is shown once", authorized)
    assert key_id, authorized
    assert (
        "✓ with its key (header X-API-Key) the portal serves only the approved items "
        f"(csrq,ffje), receipt for key:{key_id[1]} checked offline"
    ) in authorized
    # Quality (第十五、十六条): 人口基础信息 checked and read by its provider, graded, with the
    # refusals of step [7] as 规范性's A/B.
    quality = text.split("\n[20] ", 1)[1].split("\n[21] ", 1)[0]
    assert "✗" not in quality, quality
    assert re.search(
        r"✓ 人口基础信息 \(350000-1-000001\): grade [A-E] \(.\), overall \d+\.\d\d, "
        r"(ok|warn|critical) \(warn below 80, critical below 60\); 4 records",
        quality,
    ), quality
    assert "规范性 66.67 D" in quality and "可访问性 100.00 A" in quality
    assert "010400 规范性 · 业务规则: 4/6 = 66.67: records accepted by every item's rule" in quality
    # 纠错 across cities: reported at 厦门, made at 福州, the mark seen through the province
    # and at 厦门.
    error = text.split("\n[21] ", 1)[1].split("\n[22] ", 1)[0]
    assert "✗" not in error, error
    made = re.search(r"ReportDataError at 厦门, made at 福州: report (350100-E-\w+) \(OPEN", error)
    assert made, error
    report_id = made[1]
    assert (
        f"福建省市场监督管理局 verifies it through the province: all_match=True, DataDispute: "
        f"report {report_id}, items dwmc"
    ) in error
    assert (
        f"厦门市民政局's Query at 厦门 carries the same mark: 福州某某信息技术有限公司 disputed by "
        f"{report_id} (items dwmc)"
    ) in error
    # The correction: a change request approved by 福州's authority, the notices read at 厦门.
    corrected = text.split("\n[22] ", 1)[1].split("\n[23] ", 1)[0]
    assert "✗" not in corrected, corrected
    assert re.search(rf"resolves {report_id} CORRECTED .*: change request 350100-C-\w+", corrected)
    assert "the record is now version 2; the report is CORRECTED (version 2)" in corrected
    assert "at 厦门, 厦门市民政局's ListNotifications, delivered from 福州" in corrected
    assert (
        f"DATA_CORRECTED (from 350100, report {report_id}): 您获取的资源 350100-1-000001 的一条记录"
        in corrected
    )
    assert f"DATA_ERROR_RESOLVED (from 350100, report {report_id}): 纠错单 {report_id}" in corrected
    assert "next Verify of the new name: all_match=True, disputed=False" in corrected
    # Supervision (第八、四十二条): 民政厅's refused calls of step [8] as findings, with their
    # audit sequences; a rectification notice it reads in its notifications.
    supervised = text.split("\n[23] ", 1)[1].split("\n[24] ", 1)[0]
    assert "✗" not in supervised, supervised
    assert re.search(r"✓ report 350000-R-\w+: audit records #1-#\d+ \(head #\d+ ", supervised)
    assert re.search(r"未按照规定使用共享数据 2/5 #\d+-#\d+", supervised), supervised
    assert re.search(r"重复采集数据 1/\d+ #\d+-#\d+", supervised), supervised
    assert supervised.count("finding #") == 2
    notice = re.search(
        r"IssueRectificationNotice: (350000-N-\w+) on 未按照规定使用共享数据, deadline .* OPEN",
        supervised,
    )
    assert notice, supervised
    assert (
        "福建省民政厅's ListNotifications: RECTIFICATION_NOTICE: 责令限期改正 (第四十二条): "
        "未按照规定使用共享数据"
    ) in supervised
    assert f"通知 {notice[1]}" in supervised
    # A project acceptance certificate (第九、二十二条), checked offline; one altered character
    # breaks its signature.
    certified = text.split("\n[24] ", 1)[1]
    assert "✗" not in certified, certified
    assert re.search(r"govnode supervision certify: 350000-C-\w+, valid until ", certified)
    assert (
        "checked offline with the root certificate only: signed by "
        "spiffe://350000.fujian.gov.cn/node; 350000-1-000001 grade B;"
    ) in certified
    assert "one character of the project's name altered: refused (signature check" in certified
    # A stream the demo (or a stopping city) cancels leaves no unretrieved task behind.
    assert "Task exception was never retrieved" not in result.stderr, result.stderr
    for refusal in (
        "FAILED_PRECONDITION: entry.items[0].standard_element",
        "INVALID_ARGUMENT: entry.legal_basis",
        "only its provider agency 113500000035910014 may, and the authority approves",
        "INVALID_ARGUMENT: entry.provider_code",
        "UNAUTHENTICATED: certificate",
    ):
        assert refusal in text
    assert "history: v1 → v2" in text
    assert "(4 entries)" in text
    assert "暂不共享" in text
    assert lines[-1].startswith("Demo finished")
