"""Open data cases (OPEN-01..04 here, 05..07 in :mod:`conformance.cases.opendata_access`): the
city's public portal, as the public meets it (第二十九至三十七条).

They run only when the tester names the portal (``--portal https://...``); without it each is
skipped, saying so, and the verdict is as before (they are optional in this suite version:
a city that opens no data yet runs no portal). A city not yet approved serves open data in
trial mode, only testers' probes, so the cases publish their own: two probe resources at the
target, one 普遍开放 and one 授权开放, each with records that hold a valid citizen ID, a
mobile number and a name under de-identifying treatments (masked, pseudonymised; a level-3
item dropped). The probes are unpublished and withdrawn at the end with the others.

The suite reaches the portal only over HTTPS, never the node behind it, and judges what comes
back: statuses, headers, bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import ssl
from typing import Any
from urllib.parse import unquote

import aiohttp
from yarl import URL

from conformance.cases import Case, Failed, NotRunnable, case
from conformance.open_portal import (
    JsonLd,
    OpenProbes,
    api,
    fetch,
    open_probes,
    portal_url,
)
from conformance.open_portal import short as _short
from conformance.probes import (
    LEVEL3_ITEM,
    OPEN_PROBE_ITEMS,
    OPENED_ITEMS,
    citizen_id_check,
)
from conformance.session import Session
from conformance.web import (
    certificate_problem,
    client,
    https_probe,
    verifies_with_system_roots,
)

CASES: list[Case] = []
ARTICLE = "第三十一条"
ACCESS_RIGHT = "http://publications.europa.eu/resource/authority/access-right/"
DCAT = "http://www.w3.org/ns/dcat#"
DCT = "http://purl.org/dc/terms/"
DCATAP = "http://data.europa.eu/r5r/"
HYDRA = "http://www.w3.org/ns/hydra/core#"
MAX_CATALOG_PAGES = 20

# Direct identifiers in clear (第三十七条): an 18-character citizen ID (its check character is
# verified, so that dates and other long numbers do not count) and a mainland mobile number.
CITIZEN_ID_RE = re.compile(r"(?<![0-9])([0-9]{17}[0-9Xx])(?![0-9Xx])")
MOBILE_RE = re.compile(r"(?<![0-9])(1[3-9][0-9]{9})(?![0-9])")
_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^,;]+)*)")
_DIGEST_RE = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")


# --- OPEN-01 -------------------------------------------------------------------------------


@case(
    CASES,
    "OPEN-01",
    "The portal's TLS: 1.2+, no client certificate",
    mandatory=False,
    article="第三十一条, 第三十七条",
    checks=(
        "The portal completes a TLS 1.2 or 1.3 handshake with a client that has no "
        "certificate, presents a certificate valid now, does not ask for a client certificate "
        "(no CertificateRequest) and answers HTTP over it; a client offering only TLS 1.0 "
        "and 1.1 is refused."
    ),
)
async def portal_tls(s: Session, ev: list[str]) -> str:
    url = portal_url(s)
    timeout = s.options.call_timeout_s
    out = await asyncio.to_thread(https_probe, url, timeout=timeout)
    if not out.handshake_ok:
        raise Failed(f"no TLS handshake with the portal: {out.error}")
    ev.append(f"negotiated {out.version}, cipher {out.cipher}")
    if out.version not in ("TLSv1.2", "TLSv1.3"):
        raise Failed(f"the portal negotiated {out.version}; TLS 1.2 or newer is required")
    if not out.chain:
        raise Failed("the portal presented no certificate")
    leaf = out.chain[0]
    ev.append(
        f"certificate {leaf.subject.rfc4514_string()}, until {leaf.not_valid_after_utc:%Y-%m-%d}"
    )
    problem = certificate_problem(leaf)
    if problem:
        raise Failed(f"the portal's certificate cannot serve: {problem}")
    untrusted = await asyncio.to_thread(verifies_with_system_roots, url, timeout)
    ev.append(
        "verifies against this machine's trust store"
        if not untrusted
        else f"does not verify against this machine's trust store (a trial portal's "
        f"self-signed certificate is accepted): {untrusted}"
    )
    if out.client_cert_requested:
        raise Failed("the portal asks the public for a client certificate (CertificateRequest)")
    if out.client_cert_requested is None:
        ev.append("this Python cannot see a CertificateRequest; checked only that none is needed")
    async with client(timeout) as http:
        health = await fetch(http, f"{url}/healthz")
    ev.append(f"GET /healthz without a client certificate: {health.status}")
    old = await asyncio.to_thread(
        https_probe, url, max_version=ssl.TLSVersion.TLSv1_1, timeout=timeout
    )
    if "NO_PROTOCOLS_AVAILABLE" in old.error.upper():
        raise NotRunnable("this machine's TLS library cannot offer TLS 1.1")
    ev.append(
        f"TLS 1.0/1.1 only: {'completed with ' + old.version if old.handshake_ok else 'refused'}"
        f"{'; ' + old.error if old.error else ''}"
    )
    if old.handshake_ok and old.version in ("TLSv1", "TLSv1.1"):
        raise Failed(f"the portal completed a {old.version} handshake")
    return f"{out.version}, certificate valid, none asked of the client; TLS 1.0/1.1 refused"


# --- OPEN-02: the DCAT-AP catalog ----------------------------------------------------------


def _dataset(doc: JsonLd, code: str) -> dict[str, Any] | None:
    for node in doc.of_type(DCAT + "Dataset"):
        if code in doc.values(node, DCT + "identifier") or str(node.get("@id", "")).endswith(
            f"/dataset/{code}"
        ):
            return node
    return None


@case(
    CASES,
    "OPEN-02",
    "The DCAT-AP catalog lists the probe",
    mandatory=False,
    article="第三十条, 第三十五条",
    checks=(
        "/catalog.jsonld is JSON-LD holding a dcat:Catalog and, on one of its pages (Hydra "
        "next, at most 20), the 普遍开放 probe as a dcat:Dataset listed by the catalog, with "
        "dct:accessRights PUBLIC and dcatap:applicableLegislation; the 授权开放 probe with "
        "accessRights RESTRICTED."
    ),
)
async def dcat_catalog(s: Session, ev: list[str]) -> str:
    url = portal_url(s)
    probes = await open_probes(s)
    wanted = {probes.universal: "PUBLIC", probes.authorized: "RESTRICTED"}
    found: dict[str, tuple[JsonLd, dict[str, Any]]] = {}
    catalogs = 0
    page_url: str = f"{url}/catalog.jsonld"
    async with client(s.options.call_timeout_s) as http:
        for page in range(1, MAX_CATALOG_PAGES + 1):
            got = await fetch(http, page_url)
            if got.status != 200:
                raise Failed(f"GET {page_url} answered {got.status}: {_short(got.body)}")
            if "json" not in got.header("content-type"):
                raise Failed(f"{page_url} is {got.header('content-type')!r}, not JSON-LD")
            try:
                doc = JsonLd(json.loads(got.body))
            except ValueError as exc:
                raise Failed(f"{page_url} is not JSON-LD: {exc}") from None
            catalog_nodes = doc.of_type(DCAT + "Catalog")
            catalogs += len(catalog_nodes)
            for code in wanted:
                node = _dataset(doc, code)
                if node is not None and code not in found:
                    listed = {v for c in catalog_nodes for v in doc.values(c, DCAT + "dataset")}
                    if str(node.get("@id", "")) not in listed:
                        raise Failed(
                            f"dataset {code} is on page {page} but no dcat:Catalog lists it"
                        )
                    found[code] = (doc, node)
            ev.append(f"page {page}: {len(doc.nodes)} nodes, {len(catalog_nodes)} dcat:Catalog")
            nexts = [v for n in doc.nodes for v in doc.values(n, HYDRA + "next")]
            if len(found) == len(wanted) or not nexts:
                break
            page_url = nexts[0]
    if not catalogs:
        raise Failed("no dcat:Catalog in the catalog document")
    for code, right in wanted.items():
        if code not in found:
            raise Failed(f"the probe dataset {code} is not a dcat:Dataset of the catalog")
        doc, node = found[code]
        rights = doc.values(node, DCT + "accessRights")
        laws = doc.values(node, DCATAP + "applicableLegislation")
        ev.append(f"{code}: accessRights {rights}, applicableLegislation {laws}")
        if ACCESS_RIGHT + right not in rights:
            raise Failed(f"dataset {code} has dct:accessRights {rights}, not {right}")
        if not laws:
            raise Failed(f"dataset {code} names no dcatap:applicableLegislation")
    return "dcat:Catalog with both probes, access rights and legislation"


# --- OPEN-03: provenance and the receipt ---------------------------------------------------


def cite_as(link: str) -> str:
    """The target of the ``rel="cite-as"`` link in a Link header, or ""."""
    for match in _LINK_RE.finditer(link):
        params = match.group(2).lower().replace(" ", "")
        if 'rel="cite-as"' in params or "rel=cite-as" in params:
            return match.group(1)
    return ""


def decode_receipt(header: str) -> bytes:
    text = header.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@case(
    CASES,
    "OPEN-03",
    "A 普遍开放 download carries its provenance and a valid receipt",
    mandatory=False,
    article="第三十二条, 第三十五条",
    checks=(
        "data.csv of the 普遍开放 probe comes with Link rel=cite-as, Govnode-Source, "
        "Govnode-Version and a Repr-Digest equal to the SHA-256 of the body; its "
        "Govnode-Receipt verifies offline against the province root (the node's signature and "
        "chain) and names this file (digest, size), the dataset cited and the version. The "
        "portal's POST /api/v1/receipts/check agrees, and refuses the receipt for another "
        "digest."
    ),
)
async def provenance(s: Session, ev: list[str]) -> str:
    """Why offline: the receipt is the node's signature over the file, and the point of a
    receipt is that anyone can check it with nothing but the province root. The portal's
    POST /api/v1/receipts/check is run by the system under test, so its "valid" proves only
    that the portal says so; a portal that forged receipts would also vouch for them. The
    suite cannot import the node's checker (layers), so ``govnode conformance run`` passes it
    in (``Options.check_receipt``) and the case is not runnable without one. The portal's
    check is still called, as a second opinion that must agree."""
    url = portal_url(s)
    check = s.options.check_receipt
    if check is None:
        raise NotRunnable(
            "no offline receipt checker (Options.check_receipt; `govnode conformance run` "
            "passes the node's)"
        )
    probes = await open_probes(s)
    code = probes.universal
    async with client(s.options.call_timeout_s) as http:
        got = await fetch(http, api(url, code, "/data.csv"))
        if got.status != 200:
            raise Failed(
                f"data.csv of the 普遍开放 probe answered {got.status}: {_short(got.body)}"
            )
        sha = hashlib.sha256(got.body).hexdigest()
        ev.append(f"{len(got.body)} bytes, sha256 {sha}")
        cited = cite_as(got.header("link"))
        source = unquote(got.header("govnode-source"))
        version = got.header("govnode-version")
        ev.append(f"cite-as {cited or '(none)'}; version {version or '(none)'}; source {source}")
        if not cited:
            raise Failed('the download has no Link rel="cite-as"')
        if not source:
            raise Failed("the download has no Govnode-Source")
        if not version.isdigit() or int(version) < 1:
            raise Failed(f"Govnode-Version is {version!r}, not a version number")
        digest = _DIGEST_RE.search(got.header("repr-digest"))
        if digest is None:
            raise Failed(f"no sha-256 Repr-Digest: {got.header('repr-digest')!r}")
        try:
            declared = base64.b64decode(digest.group(1), validate=True).hex()
        except (binascii.Error, ValueError):
            raise Failed(f"Repr-Digest is not base64: {digest.group(1)!r}") from None
        if declared != sha:
            raise Failed(f"Repr-Digest says {declared}, the body's SHA-256 is {sha}")
        header = got.header("govnode-receipt")
        if not header:
            raise Failed("the download has no Govnode-Receipt")
        try:
            receipt = decode_receipt(header)
        except (binascii.Error, ValueError):
            raise Failed("Govnode-Receipt is not base64url") from None
        try:
            stated = check(receipt, sha, len(got.body))
        except ValueError as exc:
            raise Failed(f"the receipt does not verify against the province root: {exc}") from None
        ev.append(
            f"receipt verified offline: {stated.get('resource_code')} v{stated.get('version')} "
            f"{stated.get('format')}, for {stated.get('recipient')}, signed by {stated.get('node')}"
        )
        expected = {
            "resource_code": code,
            "dataset": cited,
            "version": int(version),
            "format": "csv",
        }
        for name, value in expected.items():
            if stated.get(name) != value:
                raise Failed(f"the receipt states {name} {stated.get(name)!r}, not {value!r}")
        await _portal_check(http, url, header, sha, len(got.body), ev)
    return "provenance headers, digest and receipt (verified offline against the root)"


async def _portal_check(
    http: aiohttp.ClientSession, url: str, receipt: str, sha: str, size: int, ev: list[str]
) -> None:
    other = f"{int(sha[0], 16) ^ 1:x}{sha[1:]}"
    for digest, valid in ((sha, True), (other, False)):
        answer = await fetch(
            http,
            URL(f"{url}/api/v1/receipts/check").with_query(sha256=digest, size=str(size)),
            method="POST",
            data=receipt.encode(),
            headers={"Content-Type": "text/plain"},
        )
        try:
            said = json.loads(answer.body).get("valid")
        except (ValueError, AttributeError):
            said = None
        ev.append(
            f"portal receipt check, {'right' if valid else 'wrong'} digest: {answer.status} {said}"
        )
        if said is not valid:
            raise Failed(
                f"the portal's receipt check says valid={said} ({answer.status}) for the "
                f"{'file' if valid else 'wrong digest'}, the offline check says {valid}"
            )


# --- OPEN-04: no direct identifier in clear -------------------------------------------------


def clear_identifiers(text: str) -> list[str]:
    """The kinds of direct identifier found in clear in ``text`` (never the values)."""
    found = []
    for match in CITIZEN_ID_RE.finditer(text):
        value = match.group(1).upper()
        if citizen_id_check(value[:17]) == value[17]:
            found.append("an 18-digit citizen ID with a valid check character")
            break
    if MOBILE_RE.search(text):
        found.append("an 11-digit mobile number")
    return found


def _columns(fmt: str, body: bytes) -> tuple[list[str], int]:
    """The columns of a csv or jsonl download and its number of rows."""
    text = body.decode("utf-8-sig")
    if fmt == "csv":
        lines = [line for line in text.split("\r\n") if line]
        return (lines[0].split(",") if lines else []), max(0, len(lines) - 1)
    keys: list[str] = []
    rows = 0
    for line in text.splitlines():
        if line.strip():
            rows += 1
            for key in json.loads(line):
                if key not in keys:
                    keys.append(key)
    return keys, rows


LEVELS = {i.name: i.sensitivity_level for i in (*OPEN_PROBE_ITEMS, LEVEL3_ITEM)}


@case(
    CASES,
    "OPEN-04",
    "No level-3/4 item or direct identifier in 普遍开放 data",
    mandatory=False,
    article="第二十九条, 第三十七条",
    checks=(
        "The 普遍开放 probe's records hold valid citizen IDs, mobile numbers and names under "
        "treatments (masked, pseudonymised, dropped). Its csv and jsonl downloads and its "
        "rows hold every record, only the items declared open (none of level 3 or 4), none "
        "of the submitted identifiers, no 18-digit citizen ID with a valid check character "
        "and no mobile number 1[3-9]xxxxxxxxx."
    ),
)
async def de_identified(s: Session, ev: list[str]) -> str:
    url = portal_url(s)
    probes = await open_probes(s)
    code = probes.universal
    problems: list[str] = []
    async with client(s.options.call_timeout_s) as http:
        for fmt in ("csv", "jsonl"):
            got = await fetch(http, api(url, code, f"/data.{fmt}"))
            if got.status != 200:
                raise Failed(f"data.{fmt} of the 普遍开放 probe answered {got.status}")
            try:
                columns, rows = _columns(fmt, got.body)
            except (UnicodeDecodeError, ValueError) as exc:
                raise Failed(f"data.{fmt} cannot be read: {exc}") from None
            ev.append(f"data.{fmt}: {rows} rows, items {', '.join(columns)}")
            problems += _judge(f"data.{fmt}", got.body.decode("utf-8-sig"), columns, rows, probes)
        got = await fetch(http, api(url, code, "/rows"))
        if got.status != 200:
            raise Failed(f"the rows of the 普遍开放 probe answered {got.status}")
        try:
            answer = json.loads(got.body)
            values = [r["values"] for r in answer["rows"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise Failed(f"the rows API's answer cannot be read: {exc}") from None
        columns = sorted({k for v in values for k in v})
        ev.append(f"rows: {len(values)} rows, items {', '.join(columns)}")
        problems += _judge("rows", got.body.decode(), columns, len(values), probes)
    if problems:
        ev.extend(problems)
        raise Failed(problems[0])
    return f"{len(probes.records)} records in each; only opened items, no identifier in clear"


def _judge(where: str, text: str, columns: list[str], rows: int, probes: OpenProbes) -> list[str]:
    problems = []
    if rows != len(probes.records):
        problems.append(f"{where} holds {rows} rows, the probe has {len(probes.records)}")
    for column in columns:
        level = LEVELS.get(column)
        if level is None:
            problems.append(f"{where} holds item {column!r}, which the probe does not declare")
        elif level >= 3:
            problems.append(f"{where} holds item {column}, of sensitivity level {level}")
        elif column not in OPENED_ITEMS:
            problems.append(f"{where} holds item {column}, which is not declared open")
    for record in probes.records:
        for label, value in zip(
            ("citizen ID", "mobile number", "name"), record.secrets(), strict=True
        ):
            if value in text:
                problems.append(f"{where} holds a submitted {label} in clear")
    problems += [f"{where} holds {kind} in clear" for kind in clear_identifiers(text)]
    return list(dict.fromkeys(problems))
