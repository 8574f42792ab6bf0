"""Conformance reports: written for people and CI, signed for the province that approves.

A run leaves three files in its output directory:

``report.json``
    The one that counts. It is a signed envelope, UTF-8 and pretty-printed::

        {
          "format": "govnode-conformance-report/1",
          "report": { ... RunReport.to_json() ... },
          "signature": {
            "algorithm": "ECDSA-P256-SHA256",
            "signer_chain_pem": "-----BEGIN CERTIFICATE-----\\n...",
            "value": "<base64 of the DER-encoded ECDSA signature>"
          }
        }

    The signature covers :func:`canonical` of the ``report`` object: its JSON with sorted keys,
    no whitespace, non-ASCII characters kept as they are, encoded as UTF-8. So the envelope's
    layout and indentation may change without breaking it, but no value in the report can.
    ``signer_chain_pem`` is the tester's certificate chain, leaf first and then the CA that
    issued it (the province root may follow; it is ignored). The province checks the file with
    :func:`verify_signed_report`: every certificate is valid now, the chain leads to the province
    root, the leaf carries a ``tester`` identity its region's CA may vouch for
    (:func:`gateway.identity.check_chain`), and the signature verifies with the leaf's key. The
    SHA-256 of the whole file is what an approval should cite.

``report.xml``
    JUnit XML for CI: one ``<testsuite>`` per group (connectivity, security, opendata). Not signed.

``report.html``
    One self-contained page for people: no scripts, no external references. Not signed.

The approval rests on ``report.json`` alone (第三十一条); the other two are views of the same run.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import html
import json
import os
import re
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import Identity, IdentityError, Role, check_chain, identity_of

from .model import SUITE_NAME, CaseResult, Outcome, RunReport

FORMAT = "govnode-conformance-report/1"
ALGORITHM = "ECDSA-P256-SHA256"
JSON_NAME = "report.json"
JUNIT_NAME = "report.xml"
HTML_NAME = "report.html"
GROUPS = ("connectivity", "security", "opendata")

_ENVELOPE_KEYS = frozenset({"format", "report", "signature"})
_SIGNATURE_KEYS = frozenset({"algorithm", "signer_chain_pem", "value"})
_ECDSA = ec.ECDSA(hashes.SHA256())
# Characters XML 1.0 cannot carry at all (and HTML treats as parse errors): C0 controls other
# than tab, newline and carriage return, lone surrogates, and U+FFFE/U+FFFF.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class ReportError(Exception):
    """A report that cannot be written, or a signed report the province must not accept."""


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    junit: Path
    html: Path


@dataclass(frozen=True)
class VerifiedReport:
    report: dict[str, Any]  # the signed RunReport.to_json()
    tester: Identity  # who signed it, checked against the province root
    sha256: str  # hex SHA-256 of the whole report.json as received


def canonical(report: dict[str, Any]) -> bytes:
    """The bytes the signature covers: sorted keys, no whitespace, UTF-8."""
    return json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


# --- writing ------------------------------------------------------------------------------


def write_reports(
    report: RunReport, out_dir: Path, *, key_pem: bytes, chain_pem: bytes
) -> ReportPaths:
    """Write report.json (signed with the tester's key), report.xml and report.html.

    ``key_pem`` is the tester's EC P-256 private key, ``chain_pem`` its certificate chain (leaf
    first, then the issuing CA). Each file replaces any previous one atomically.
    """
    key, chain = _signer(key_pem, chain_pem)
    data = report.to_json()
    signature = key.sign(canonical(data), _ECDSA)
    envelope = {
        "format": FORMAT,
        "report": data,
        "signature": {
            "algorithm": ALGORITHM,
            "signer_chain_pem": chain,
            "value": base64.b64encode(signature).decode("ascii"),
        },
    }
    signed = (json.dumps(envelope, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out_dir / JSON_NAME, out_dir / JUNIT_NAME, out_dir / HTML_NAME)
    _write_atomic(paths.json, signed)
    _write_atomic(paths.junit, junit_xml(report))
    _write_atomic(paths.html, html_page(report, json_sha256=hashlib.sha256(signed).hexdigest()))
    return paths


def _signer(key_pem: bytes, chain_pem: bytes) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The tester's key and chain (as text), refusing a key the chain's leaf does not carry."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ReportError(f"the tester key is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ReportError("the tester key must be an ECDSA P-256 key")
    try:
        text = chain_pem.decode("ascii")
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError as exc:
        raise ReportError(f"the tester certificate chain is not PEM: {exc}") from None
    if leaf.public_key() != key.public_key():
        raise ReportError(
            "the tester key does not belong to the first certificate of the chain "
            f"({leaf.subject.rfc4514_string()})"
        )
    return key, text


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _printable(text: str) -> str:
    """``text`` with characters XML and HTML cannot carry shown as escapes (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def _by_group(report: RunReport) -> dict[str, list[CaseResult]]:
    groups: dict[str, list[CaseResult]] = {g: [] for g in GROUPS}
    for result in report.results:
        groups.setdefault(result.case.group, []).append(result)
    # A group the report has no case of (a report of an older suite) gets no table.
    return {g: results for g, results in groups.items() if results or g in GROUPS[:2]}


# --- JUnit XML ----------------------------------------------------------------------------


def junit_xml(report: RunReport) -> bytes:
    """JUnit XML: ``<testsuites>`` holding one ``<testsuite>`` per group."""
    counts = report.counts()
    root = ET.Element(
        "testsuites",
        name=SUITE_NAME,
        tests=str(len(report.results)),
        failures=str(counts[Outcome.FAILED.value]),
        errors="0",
        skipped=str(counts[Outcome.SKIPPED.value]),
        time=_seconds(sum(r.duration_s for r in report.results)),
    )
    for group, results in _by_group(report).items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=group,
            tests=str(len(results)),
            failures=str(sum(r.outcome is Outcome.FAILED for r in results)),
            errors="0",
            skipped=str(sum(r.outcome is Outcome.SKIPPED for r in results)),
            time=_seconds(sum(r.duration_s for r in results)),
            timestamp=report.started_at.isoformat(),
        )
        _properties(
            suite,
            target=report.target,
            target_identity=report.target_identity,
            tester_identity=report.tester_identity,
            passed=str(report.passed).lower(),
        )
        for result in results:
            _testcase(suite, result)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _properties(parent: ET.Element, **values: str) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values.items():
        ET.SubElement(props, "property", name=name, value=_printable(value))


def _testcase(suite: ET.Element, result: CaseResult) -> None:
    case = result.case
    element = ET.SubElement(
        suite,
        "testcase",
        classname=f"conformance.{case.group}",
        name=_printable(f"{case.id} {case.title}"),
        time=_seconds(result.duration_s),
    )
    _properties(element, mandatory=str(case.mandatory).lower(), article=case.article)
    evidence = _printable("\n".join(result.evidence))
    if result.outcome is Outcome.FAILED:
        failure = ET.SubElement(element, "failure", message=_printable(result.reason))
        failure.text = evidence
    elif result.outcome is Outcome.SKIPPED:
        ET.SubElement(element, "skipped", message=_printable(result.reason))
    else:
        out = ET.SubElement(element, "system-out")
        out.text = _printable(result.reason) + ("\n" + evidence if evidence else "")


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC",
       sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.meta dt { font-weight: bold; }
dl.meta dd { margin: 0; word-break: break-all; }
.verdict { font-size: 1.3em; font-weight: bold; padding: 0.5em 0.8em; margin: 1em 0;
           border-radius: 4px; }
.verdict .detail { font-size: 0.75em; font-weight: normal; margin-top: 0.3em; }
.verdict.passed { background: #e3f4e3; color: #1b5e20; }
.verdict.failed { background: #fde7e7; color: #b71c1c; }
.outcome { font-weight: bold; }
.outcome.passed { color: #1b5e20; }
.outcome.failed { color: #b71c1c; }
.outcome.skipped { color: #8a6d00; }
pre { white-space: pre-wrap; word-break: break-all; margin: 0.4em 0 0; }
.muted { color: #777; }
"""

_OUTCOME_LABELS = {
    Outcome.PASSED: "通过 passed",
    Outcome.FAILED: "失败 failed",
    Outcome.SKIPPED: "跳过 skipped",
}
_GROUP_LABELS = {
    "connectivity": "连通性 Connectivity",
    "security": "安全 Security",
    "opendata": "数据开放 Open data",
}


def _e(value: object) -> str:
    return html.escape(_printable(str(value)), quote=True)


def html_page(report: RunReport, *, json_sha256: str = "") -> bytes:
    """One self-contained HTML page: header, verdict, counts, then a table per group."""
    title = f"govnode 符合性测试报告 — {report.target}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        _header(report, json_sha256),
        _verdict(report),
        _counts(report),
    ]
    for group, results in _by_group(report).items():
        parts.append(_group_table(group, results))
    parts += [
        '<p class="muted">签名的报告是 report.json (signed: report.json); '
        "本页仅供阅读 (this page is a view and is not signed).</p>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts).encode("utf-8")


def _header(report: RunReport, json_sha256: str) -> str:
    finished = report.finished_at.isoformat() if report.finished_at else "—"
    rows = [
        ("被测平台 Target", report.target),
        ("被测平台身份 Target identity", report.target_identity or "— (no handshake)"),
        ("省级节点 Province", report.province),
        ("测试方 Tester", report.tester_identity),
        ("开始 Started", report.started_at.isoformat()),
        ("结束 Finished", finished),
        ("用例集 Suite", f"{SUITE_NAME} {report.to_json()['suite_version']}"),
        ("选择 Selected", ", ".join(report.selected) if report.selected else "全部 all"),
    ]
    if json_sha256:
        rows.append(("report.json SHA-256", json_sha256))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="meta">{items}</dl>'


def _verdict(report: RunReport) -> str:
    if report.passed:
        return (
            '<div class="verdict passed">结论 Verdict: PASSED — '
            "所有必测用例均已运行并通过 (every mandatory case ran and passed)</div>"
        )
    failed = [r.case.id for r in report.results if r.case.mandatory and r.outcome is Outcome.FAILED]
    not_run = list(report.missing_mandatory)
    not_run += [i for i in report.failed_mandatory if i not in failed and i not in not_run]
    details = []
    if failed:
        details.append(f"必测用例失败 (mandatory cases failed): {', '.join(failed)}")
    if not_run:
        details.append(f"必测用例未运行 (mandatory cases not run): {', '.join(not_run)}")
    lines = "".join(f'<div class="detail">{_e(d)}</div>' for d in details)
    return f'<div class="verdict failed">结论 Verdict: FAILED{lines}</div>'


def _counts(report: RunReport) -> str:
    counts = report.counts()
    cells = "".join(
        f'<td><span class="outcome {o.value}">{_e(_OUTCOME_LABELS[o])}</span>: '
        f"{counts[o.value]}</td>"
        for o in Outcome
    )
    return (
        f"<table><tr><th>用例 Cases</th>{cells}"
        f"<td>必测 Mandatory: {len(report.mandatory_ids)}</td></tr></table>"
    )


def _group_table(group: str, results: list[CaseResult]) -> str:
    head = (
        "<tr><th>编号 ID</th><th>用例 Title</th><th>类别 Kind</th><th>依据 Article</th>"
        "<th>结果 Outcome</th><th>说明 Reason</th><th>证据 Evidence</th></tr>"
    )
    rows = [_case_row(r) for r in results] or [
        '<tr><td colspan="7" class="muted">本组无用例运行 (no cases ran)</td></tr>'
    ]
    label = _GROUP_LABELS.get(group, group)
    return f"<h2>{_e(label)}</h2>\n<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def _case_row(result: CaseResult) -> str:
    case = result.case
    kind = "必测 mandatory" if case.mandatory else "选测 optional"
    if result.evidence:
        evidence = (
            f"<details><summary>{len(result.evidence)} 行 lines</summary>"
            f"<pre>{_e(chr(10).join(result.evidence))}</pre></details>"
        )
    else:
        evidence = '<span class="muted">—</span>'
    outcome = result.outcome
    return (
        f'<tr id="{_e(case.id)}"><td>{_e(case.id)}</td>'
        f'<td>{_e(case.title)}<div class="muted">{_e(case.checks)}</div></td>'
        f"<td>{_e(kind)}</td><td>{_e(case.article)}</td>"
        f'<td><span class="outcome {_e(outcome.value)}">{_e(_OUTCOME_LABELS[outcome])}</span>'
        f"</td><td>{_e(result.reason)}</td><td>{evidence}</td></tr>"
    )


# --- verifying ----------------------------------------------------------------------------


def verify_signed_report(
    data: bytes, root_pem: bytes, *, now: dt.datetime | None = None
) -> VerifiedReport:
    """Check a signed report.json against the province root; :class:`ReportError` says why not.

    ``now`` defaults to the current time; certificates must all be valid at that instant.
    """
    envelope = _envelope(data)
    report: dict[str, Any] = envelope["report"]
    signature: dict[str, str] = envelope["signature"]
    root = _load_root(root_pem)
    chain = _load_chain(signature["signer_chain_pem"], root)
    _check_validity([*chain, root], now or dt.datetime.now(dt.UTC))
    _check_links(chain, root)
    try:
        tester = check_chain(chain, identity_of(chain[0]).trust_domain)
    except IdentityError as exc:
        raise ReportError(f"the report's signer is not acceptable: {exc}") from None
    if tester.role is not Role.TESTER:
        raise ReportError(f"the report is signed by {tester}, which is not a tester identity")
    public_key = chain[0].public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ReportError("the signer certificate does not carry an ECDSA P-256 key")
    try:
        value = base64.b64decode(signature["value"], validate=True)
    except binascii.Error as exc:
        raise ReportError(f"signature.value is not base64: {exc}") from None
    try:
        public_key.verify(value, canonical(report), _ECDSA)
    except InvalidSignature:
        raise ReportError(
            "the report's signature does not verify: it was altered or signed with another key"
        ) from None
    return VerifiedReport(report=report, tester=tester, sha256=hashlib.sha256(data).hexdigest())


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # A reader would see one value and the verifier another: refuse both.
            raise ReportError(f"the report file repeats the key {key!r}")
        out[key] = value
    return out


def _envelope(data: bytes) -> dict[str, Any]:
    """The parsed envelope, with every field present and of the right type."""
    try:
        parsed: object = json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except UnicodeDecodeError as exc:
        raise ReportError(f"the report file is not UTF-8: {exc}") from None
    except ValueError as exc:  # json.JSONDecodeError, RecursionError is not expected here
        raise ReportError(f"the report file is not valid JSON: {exc}") from None
    envelope = _object(parsed, "the report file")
    _exact_keys(envelope, _ENVELOPE_KEYS, "the report envelope")
    if envelope["format"] != FORMAT:
        raise ReportError(f"the report's format is {envelope['format']!r}, expected {FORMAT!r}")
    _object(envelope["report"], "the 'report' field")
    signature = _object(envelope["signature"], "the 'signature' field")
    _exact_keys(signature, _SIGNATURE_KEYS, "the 'signature' object")
    for key in sorted(_SIGNATURE_KEYS):
        if not isinstance(signature[key], str):
            raise ReportError(f"signature.{key} must be a string")
    if signature["algorithm"] != ALGORITHM:
        raise ReportError(
            f"signature.algorithm is {signature['algorithm']!r}, expected {ALGORITHM!r}"
        )
    return envelope


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{what} must be a JSON object, found {type(value).__name__}")
    return value


def _exact_keys(obj: dict[str, Any], expected: frozenset[str], what: str) -> None:
    missing = sorted(expected - obj.keys())
    if missing:
        raise ReportError(f"{what} lacks the field(s) {', '.join(missing)}")
    extra = sorted(obj.keys() - expected)
    if extra:  # nothing unsigned may ride along looking as if it were part of the report
        raise ReportError(f"{what} has unexpected field(s) {', '.join(extra)}")


def _load_root(root_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(root_pem)
    except ValueError as exc:
        raise ReportError(f"the province root certificate is not readable PEM: {exc}") from None


def _load_chain(chain_pem: str, root: x509.Certificate) -> list[x509.Certificate]:
    """The signer chain, leaf first, without the root if the tester included it."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode("utf-8"))
    except ValueError as exc:
        raise ReportError(
            f"signature.signer_chain_pem holds no readable certificate: {exc}"
        ) from None
    chain = [c for c in certs if c != root]
    if not chain:
        raise ReportError("signature.signer_chain_pem holds only the root, no signer certificate")
    return chain


def _name(cert: x509.Certificate) -> str:
    try:
        return str(identity_of(cert))
    except IdentityError:
        return cert.subject.rfc4514_string()


def _check_validity(certs: list[x509.Certificate], now: dt.datetime) -> None:
    for cert in certs:
        if now < cert.not_valid_before_utc:
            raise ReportError(
                f"certificate {_name(cert)} is not valid yet (from "
                f"{cert.not_valid_before_utc.isoformat()})"
            )
        if now > cert.not_valid_after_utc:
            raise ReportError(
                f"certificate {_name(cert)} expired on {cert.not_valid_after_utc.isoformat()}"
            )


def _is_ca(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def _check_links(chain: list[x509.Certificate], root: x509.Certificate) -> None:
    """Each certificate is issued by the next, the last by the root; CAs where CAs belong."""
    issuers = [*chain[1:], root]
    for depth, (child, parent) in enumerate(zip(chain, issuers, strict=True)):
        try:
            child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise ReportError(
                f"the signer chain does not lead to the province root: {_name(child)} is not "
                f"issued by {parent.subject.rfc4514_string()} ({exc or 'bad signature'})"
            ) from None
        is_ca, path_length = _is_ca(parent)
        # ``depth`` CAs sit between ``parent`` and the leaf; pathlen bounds that number.
        if not is_ca or (path_length is not None and depth > path_length):
            raise ReportError(
                f"the signer chain does not lead to the province root: "
                f"{parent.subject.rfc4514_string()} may not issue {_name(child)}"
            )
    if _is_ca(chain[0])[0]:
        raise ReportError(f"the report is signed by a CA ({_name(chain[0])}), not by a tester")
