"""Project acceptance certificates (第九、二十二条) over a real province node with mutual TLS on
loopback, on SQLite and PostgreSQL: an agency whose resource is registered, aggregated, checked
and clean gets a certificate signed by the node (`govnode supervision certify`, run as the
operator runs it), which `govnode supervision check-certificate` verifies offline with the
root certificate alone; the same file altered by one byte anywhere, expired, signed by a node
of another trust domain or checked against another root is refused naming the check. Every
condition is made to fail for real (an overdue resource, a grade below the minimum, an open
rectification notice, an overdue error report) and the refusal names it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from govnode.v1 import quality_pb2, quality_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode, supervision_of
from node.audit import AuditLog
from node.config import load_config
from node.errors import FailedPrecondition
from node.pki import load_certs, load_chain_pem, load_private_key, provision_province
from node.supervision import (
    Certificate,
    CertificateError,
    CertifiedResource,
    Certifier,
    CertifySettings,
    NodeSigner,
    Supervision,
    check_certificate,
    make_certificate,
)
from tests.support.access import ACME, ITEMS, OPEN, Province, query, register, sharing, submit
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.entries import agency_code, make_entry
from tests.support.nodes import CIVIL_AFFAIRS, PROVINCE, PUBLIC_SECURITY, channel, entry_of

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TD = "fujian.gov.cn"
NODE_URI = f"spiffe://{PROVINCE}.{TD}/node"
#: Registered, never aggregated, published in 2025 on a daily cycle: overdue.
IDLE = entry_of(PROVINCE, 7)
#: Aggregated with most items empty: graded below A.
POOR = entry_of(PROVINCE, 9, items=ITEMS)
#: An agency of 福州 (350100): nothing of it is registered at the province.
CITY_AGENCY = agency_code(1, "350100")
#: Civil affairs' own resource.
CIVILS = make_entry(8, CIVIL_AFFAIRS, resource_code=f"{PROVINCE}-3-000008", provider_name="民政厅")


def _set(config: Path, key: str, value: str) -> None:
    """Change one ``[supervision]`` key of the node's config file."""
    lines = config.read_text(encoding="utf-8").splitlines()
    done = [f"{key} = {value}" if line.startswith(f"{key} = ") else line for line in lines]
    assert done != lines or f"{key} = {value}" in lines
    config.write_text("\n".join(done) + "\n", encoding="utf-8")


async def certify(config: Path, *args: str | Path) -> tuple[int, str, str]:
    return await cli(
        "supervision", "certify", "--config", config, "--agency", PUBLIC_SECURITY, *args
    )


def check(path: Path, root: Path, *args: str) -> Any:
    return govnode("supervision", "check-certificate", path, "--root", root, *args)


async def clean_agency(setup: Any, node: RunningNode) -> None:
    """PUBLIC_SECURITY with one resource, aggregated today and checked by quality."""
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME])
    code, _, errors = await cli("quality", "check", "--config", setup.config_path)
    assert code == 0, errors


async def test_a_certificate_is_issued_stored_audited_and_checked_offline(
    province: Province, tmp_path: Path
) -> None:
    setup, node = province
    await clean_agency(setup, node)
    root = setup.config.path(setup.config.tls.root)
    out = tmp_path / "cert.json"
    code, stdout, errors = await certify(
        setup.config_path,
        "--project",
        "不动产登记一网通办",
        "--resources",
        OPEN.resource_code,
        "--out",
        out,
    )
    assert code == 0, errors
    assert f"resource {OPEN.resource_code}  grade " in stdout
    document = json.loads(out.read_text(encoding="utf-8"))
    lines = document["note"]
    assert lines[:6] == [
        "govnode acceptance certificate v1",
        f"agency {PUBLIC_SECURITY}",
        "project 不动产登记一网通办",
        f"region {PROVINCE}",
        "resources 1",
        lines[5],
    ]
    assert lines[5].startswith(f"resource {OPEN.resource_code} ")
    assert lines[6:11] == [
        "registered ok",
        "aggregated ok",
        "quality ok C 7",
        "rectification ok 365",
        "corrections ok",
    ]
    assert lines[11] == f"node {NODE_URI}"
    serial = lines[15].removeprefix("serial ")
    assert serial.startswith(f"{PROVINCE}-C-")

    result = check(out, root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"certificate {serial}" in result.stdout
    assert "project 不动产登记一网通办" in result.stdout
    assert result.stdout.rstrip().endswith("certificate verified")

    # Stored with its file, and audited.
    async with node.db.engine.connect() as conn:
        row = (
            await conn.execute(sa.text("SELECT agency_code, document FROM acceptance_certificate"))
        ).one()
        assert row.agency_code == PUBLIC_SECURITY
        assert json.loads(row.document) == document
    records = [
        r for r in await AuditLog(node.db).query(limit=1000) if r.method == "supervision.certify"
    ]
    assert [r.detail["certificate"] for r in records] == [serial]

    # The agency as a whole: to standard output.
    code, stdout, errors = await certify(setup.config_path)
    assert code == 0, errors
    assert json.loads(stdout)["note"][2] == "project -"

    # Valid until 90 days on; expired after.
    until = next(x for x in lines if x.startswith("valid-until ")).removeprefix("valid-until ")
    later = dt.datetime.strptime(until, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    issued = later - dt.timedelta(days=90)
    assert abs((issued - dt.datetime.now(dt.UTC)).total_seconds()) < 3600
    result = check(out, root, "--at", (later + dt.timedelta(seconds=1)).isoformat())
    assert result.returncode == 1
    assert result.stdout.startswith("certificate INVALID (expired check): the certificate expired")

    # Altered by one byte: the note text, the signature, the chain.
    data = out.read_bytes()
    resource = f"resource {OPEN.resource_code} ".encode()
    signature = f"\u2014 {PROVINCE}.{TD}/node ".encode()
    positions = {
        "agency": data.index(f"agency {PUBLIC_SECURITY}".encode()) + len("agency ") + 17,
        "grade": data.index(resource) + len(resource),
        "condition": data.index(b"quality ok C 7") + len("quality ok "),
        "signature": data.index(signature) + len(signature) + 20,
        "chain": data.index(b"-----BEGIN CERTIFICATE-----") + 200,
        "chain tail": data.rindex(b"-----END CERTIFICATE-----") - 30,
    }
    for where, at in positions.items():
        changed = bytearray(data)
        changed[at] = ord("A") if changed[at] != ord("A") else ord("B")
        altered = tmp_path / f"altered-{where.replace(' ', '-')}.json"
        altered.write_bytes(bytes(changed))
        result = check(altered, root)
        assert result.returncode == 1, (where, result.stdout)
        assert result.stdout.startswith("certificate INVALID ("), (where, result.stdout)
        assert "certificate verified" not in result.stdout

    # Another trust domain than the node's, another root than the province's.
    result = check(out, root, "--trust-domain", "example.gov.cn")
    assert result.returncode == 1
    assert result.stdout.startswith("certificate INVALID (chain check): the node's certificate")
    other = provision_province(
        tmp_path / "other",
        region="350000",
        name="福建省",
        listen="127.0.0.1:1",
        trust_domain=TD,
        hosts=["127.0.0.1"],
    )
    other_cfg = load_config(other.config_path)
    other_root = other_cfg.path(other_cfg.tls.root)
    result = check(out, other_root)
    assert result.returncode == 1
    assert result.stdout.startswith("certificate INVALID (chain check)")
    assert_one_line_error(check(tmp_path / "missing.json", root), "missing.json")


def _sign_as(base: Path, trust_domain: str) -> tuple[bytes, Path]:
    """A well-formed certificate signed by a province node of ``trust_domain`` (its own root
    and chain), and that root."""
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen="127.0.0.1:1",
        trust_domain=trust_domain,
        hosts=["127.0.0.1"],
    )
    cfg = load_config(made.config_path)
    root = load_certs(cfg.path(cfg.tls.root))[0]
    chain = load_chain_pem(cfg.path(cfg.tls.cert), root)
    now = dt.datetime.now(dt.UTC)
    certificate = Certificate(
        agency_code=PUBLIC_SECURITY,
        project="",
        region=PROVINCE,
        resources=(CertifiedResource(OPEN.resource_code, "A", now),),
        min_grade="C",
        max_check_age_days=7,
        criticism_days=365,
        node=f"spiffe://{PROVINCE}.{trust_domain}/node",
        issued_at=now,
        valid_until=now + dt.timedelta(days=90),
        audit_size=0,
        audit_root="0" * 64,
        serial=f"{PROVINCE}-C-0123456789abcdef",
    )
    key = load_private_key(cfg.path(cfg.tls.key))
    return make_certificate(certificate, key, chain), cfg.path(cfg.tls.root)


def test_a_certificate_of_another_trust_domain_or_root_is_refused(tmp_path: Path) -> None:
    ours, root_path = _sign_as(tmp_path / "ours", TD)
    root = x509.load_pem_x509_certificate(Path(root_path).read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert check_certificate(ours, root, TD, now).agency_code == PUBLIC_SECURITY
    theirs, their_root = _sign_as(tmp_path / "theirs", "example.gov.cn")
    with pytest.raises(CertificateError) as caught:
        check_certificate(theirs, root, TD, now)
    assert caught.value.check == "chain"
    # Their root does not make it ours: the trust domain is the platform's.
    anchor = x509.load_pem_x509_certificate(Path(their_root).read_bytes())
    with pytest.raises(CertificateError) as caught:
        check_certificate(theirs, anchor, TD, now)
    assert caught.value.check == "chain"
    path = tmp_path / "theirs.json"
    path.write_bytes(theirs)
    result = check(path, Path(root_path))
    assert result.returncode == 1
    assert result.stdout.startswith("certificate INVALID (chain check)")


async def test_each_failing_condition_is_named(province: Province, tmp_path: Path) -> None:
    setup, node = province
    config = setup.config_path
    await clean_agency(setup, node)
    civil = setup.agency(CIVIL_AFFAIRS)
    await register(node, civil, CIVILS)

    # An agency with no entry of this region (e.g. a city's agency): nothing registered here.
    code, _, errors = await cli(
        "supervision", "certify", "--config", config, "--agency", CITY_AGENCY
    )
    assert code == 2
    assert (
        f"registered: agency {CITY_AGENCY} has no active catalog entry of region 350000" in errors
    )
    # A project resource that is another agency's, or not in the catalog.
    code, _, errors = await certify(
        config,
        "--project",
        "p",
        "--resources",
        f"{OPEN.resource_code},{CIVILS.resource_code},{PROVINCE}-3-000099",
    )
    assert code == 2
    assert f"registered: resource {CIVILS.resource_code} is agency {CIVIL_AFFAIRS}'s" in errors
    assert f"registered: resource '{PROVINCE}-3-000099' is not in this node's catalog" in errors
    # Bad input is refused before anything is read.
    result = govnode("supervision", "certify", "--config", config, "--agency", "bad")
    assert_one_line_error(result, "agency_code: 'bad' must be 18 characters")
    result = govnode(
        "supervision",
        "certify",
        "--config",
        config,
        "--agency",
        PUBLIC_SECURITY,
        "--resources",
        OPEN.resource_code,
    )
    assert_one_line_error(result, "--resources needs --project")

    # A grade below the minimum: a resource whose records leave most items empty.
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, POOR)
    rows = [{"tyshxydm": f"91350100MA0000{n:03d}X"} for n in range(8)]
    await submit(node, provider, POOR.resource_code, rows)
    code, _, errors = await cli("quality", "check", "--config", config)
    assert code == 0, errors
    _set(config, "certify_min_grade", '"A"')
    code, _, errors = await certify(config, "--project", "p", "--resources", POOR.resource_code)
    _set(config, "certify_min_grade", '"C"')
    assert code == 2, errors
    assert f"quality: resource {POOR.resource_code} is graded " in errors
    assert "below A" in errors

    # An overdue resource, never checked.
    await register(node, setup.agency(PUBLIC_SECURITY), IDLE)
    code, _, errors = await certify(config)
    assert code == 2
    assert f"aggregated: resource {IDLE.resource_code} is overdue since " in errors
    assert f"quality: resource {IDLE.resource_code} has no quality check" in errors
    # The project without it is still certified.
    code, _, errors = await certify(config, "--project", "p", "--resources", OPEN.resource_code)
    assert code == 0, errors

    # An open rectification notice.
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).date().isoformat()
    code, out, errors = await cli(
        "supervision",
        "notice",
        "--config",
        config,
        "--agency",
        PUBLIC_SECURITY,
        "--finding",
        "late_aggregation",
        "--deadline",
        day,
        "--note",
        "按期汇聚",
    )
    assert code == 0, errors
    notice = out.split()[0]
    code, _, errors = await certify(config, "--project", "p", "--resources", OPEN.resource_code)
    assert code == 2
    assert f"rectification: notice {notice} is open (责令限期改正, deadline " in errors
    assert errors.count("\n") == 1 and errors.startswith("error: cannot certify project 'p'")


async def _report_error(node: RunningNode, reporter: TlsFiles) -> None:
    request = quality_pb2.ReportDataErrorRequest(
        resource_code=OPEN.resource_code,
        key={"tyshxydm": ACME["tyshxydm"]},
        item="qymc",
        description="企业名称已于2026年变更",
        suggested_value="福州某某信息技术有限公司",
        evidence="市场监管局变更登记通知书",
    )
    async with channel(node, reporter) as ch:
        await quality_pb2_grpc.QualityServiceStub(ch).ReportDataError(request, timeout=5)


async def test_an_overdue_error_report_refuses_the_certificate(province: Province) -> None:
    setup, node = province
    await clean_agency(setup, node)
    civil = setup.agency(CIVIL_AFFAIRS)
    await sharing(node, civil, "Query", query(OPEN.resource_code))
    await _report_error(node, civil)
    cfg = setup.config
    root = load_certs(cfg.path(cfg.tls.root))[0]
    signer = NodeSigner(
        NODE_URI,
        load_private_key(cfg.path(cfg.tls.key)),
        load_chain_pem(cfg.path(cfg.tls.cert), root),
    )
    audit = node.audit  # the serving node's, started

    def certifier(days: float) -> Certifier:
        moment = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        base = supervision_of(cfg, node.db, audit)
        supervision = Supervision(
            node.db,
            audit,
            node_region=PROVINCE,
            trust_domain=TD,
            overdue_corrections=base.overdue_corrections,
            clock=lambda: moment,
        )
        # Checks accepted up to 30 days old, so that only the report's deadline (7 days) and
        # the daily cycle count against the agency eight days on.
        return Certifier(supervision, signer, CertifySettings(max_check_age_days=30))

    # Within its week, the report does not stand in the way.
    made, _ = await certifier(0).certify(PUBLIC_SECURITY, "", [], "test")
    assert [r.code for r in made.resources] == [OPEN.resource_code]
    with pytest.raises(FailedPrecondition) as caught:
        await certifier(8).certify(PUBLIC_SECURITY, "", [], "test")
    message = caught.value.message
    assert f"corrections: 1 error report(s) (纠错) on agency {PUBLIC_SECURITY}'s resources" in (
        message
    )
    assert f"aggregated: resource {OPEN.resource_code} is overdue since " in message
