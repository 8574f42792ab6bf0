"""Project acceptance certificates (第九、二十二条): the file, signed by the node, that an approval
or finance department relies on, and its offline check against the province root.

A certificate is a signed file of node.signed (``format``, ``note``, ``chain_pem``). Its note's
text is, line by line, in this order::

    govnode acceptance certificate v1
    agency <the agency's 统一社会信用代码>
    project <the project's name, or ->
    region <the region of the node and of every resource>
    resources <n, 1..MAX_RESOURCES>
    resource <code> <grade A-E> <its newest quality check, UTC YYYY-MM-DDTHH:MM:SSZ>   (n lines)
    registered ok
    aggregated ok
    quality ok <the lowest grade accepted> <the oldest check accepted, in days>
    rectification ok <days without a published criticism>
    corrections ok
    node <the signing node's SPIFFE ID>
    issued <UTC time>
    valid-until <UTC time>
    audit <the audit log's size> <its Merkle root, hex>
    serial <the serial, <region>-C-<16 hex>>

Each condition is evaluated by the node at the issue time over its own tables; a certificate
is issued only when every one holds, so each condition line says ``ok`` and the lines before
and after it carry its evidence (the resources, their grades and check times, the thresholds,
the audit head that a later checkpoint of the node proves the log extends).

Pure: no grpc, no storage.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import IdentityError, Role, parse_spiffe
from gateway.quote import quote
from node.codes import credit_code_problem, region_problem
from node.signed import SignedError, open_signed, sign_statement, valid_at

__all__ = [
    "CERTIFICATE_HEADER",
    "MAX_CERTIFICATE_BYTES",
    "MAX_PROJECT",
    "MAX_RESOURCES",
    "Certificate",
    "CertificateError",
    "CertifiedResource",
    "check_certificate",
    "make_certificate",
    "parse_certificate_text",
]

CERTIFICATE_HEADER = "govnode acceptance certificate v1"
#: A certificate of MAX_RESOURCES resources is about 10 KB with its chain; larger is refused
#: unread.
MAX_CERTIFICATE_BYTES = 64 * 1024
#: Resources one certificate names (a larger agency certifies project by project).
MAX_RESOURCES = 200
#: Characters of a project's name.
MAX_PROJECT = 200
#: The longest validity and check age, in days.
MAX_DAYS = 3660

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_RESOURCE_CODE_RE = re.compile(r"^\d{6}-[123]-\d{6}$")
_GRADES = ("A", "B", "C", "D", "E")
_HEX_ROOT_RE = re.compile(r"^[0-9a-f]{64}$")
_SERIAL_RE = re.compile(r"^\d{6}-C-[0-9a-f]{16}$")
_DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")
_CONDITIONS = ("registered", "aggregated", "quality", "rectification", "corrections")


class CertificateError(ValueError):
    """A certificate that is malformed or does not verify; ``check`` names the check that
    failed: ``size``, ``format``, ``chain``, ``signature``, ``fields``, ``node``, ``time`` or
    ``expired`` (``signing`` when making one)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class CertifiedResource:
    """One resource a certificate names: its code, the grade of its newest quality check and
    when that check ran."""

    code: str
    grade: str
    checked_at: dt.datetime


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def _utc(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None:
        raise CertificateError("fields", f"{name}: needs a time zone (UTC)")
    return moment.astimezone(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Certificate:
    """What a certificate states (decoded from one, or about to be signed)."""

    agency_code: str
    project: str  # "" for the agency as a whole
    region: str
    resources: tuple[CertifiedResource, ...]
    min_grade: str
    max_check_age_days: int
    criticism_days: int
    node: str  # the SPIFFE ID of the node that signs it
    issued_at: dt.datetime
    valid_until: dt.datetime
    audit_size: int
    audit_root: str  # hex Merkle root of the audit log's first audit_size records
    serial: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "issued_at", _utc(self.issued_at, "issued_at"))
        object.__setattr__(self, "valid_until", _utc(self.valid_until, "valid_until"))
        resources = tuple(
            CertifiedResource(r.code, r.grade, _utc(r.checked_at, "checked_at"))
            for r in self.resources
        )
        object.__setattr__(self, "resources", resources)
        problem = self._problem()
        if problem is not None:
            raise CertificateError("fields", problem)

    def _problem(self) -> str | None:
        problem = credit_code_problem(self.agency_code)
        if problem is not None:
            return f"agency {quote(self.agency_code)} {problem}"
        if self.project == "-" or len(self.project) > MAX_PROJECT:
            return f"project: a name of 1 to {MAX_PROJECT} characters other than '-'"
        if self.project and (
            not self.project.isprintable() or self.project != self.project.strip()
        ):
            return f"project {quote(self.project)} has control characters or surrounding spaces"
        problem = region_problem(self.region)
        if problem is not None:
            return f"region: {problem}"
        if not 0 < len(self.resources) <= MAX_RESOURCES:
            return f"resources: 1 to {MAX_RESOURCES}, got {len(self.resources)}"
        codes = [r.code for r in self.resources]
        if len(set(codes)) != len(codes):
            return "resources: a resource is named twice"
        for r in self.resources:
            if not _RESOURCE_CODE_RE.match(r.code):
                return f"resource {quote(r.code)} is not a resource code"
            if r.grade not in _GRADES:
                return f"resource {r.code}: grade {quote(r.grade)} is not one of A-E"
        if self.min_grade not in _GRADES:
            return f"quality: grade {quote(self.min_grade)} is not one of A-E"
        for name, days in (
            ("quality check age", self.max_check_age_days),
            ("rectification days", self.criticism_days),
        ):
            if not 0 < days <= MAX_DAYS:
                return f"{name}: {days} is not between 1 and {MAX_DAYS} days"
        try:
            node = parse_spiffe(self.node)
        except IdentityError as exc:
            return f"node: {exc}"
        if node.role is not Role.NODE:
            return f"node {quote(self.node)} is not a node's identity"
        if not self.issued_at < self.valid_until:
            return "valid-until is not after issued"
        if not 0 <= self.audit_size < 2**63 or not _HEX_ROOT_RE.match(self.audit_root):
            return "audit: a size and a lower-case hex SHA-256 root"
        if not _SERIAL_RE.match(self.serial) or not self.serial.startswith(self.region):
            return f"serial {quote(self.serial)} is not a serial of region {self.region}"
        return None

    def text(self) -> str:
        """The text the node signs."""
        lines = [
            CERTIFICATE_HEADER,
            f"agency {self.agency_code}",
            f"project {self.project or '-'}",
            f"region {self.region}",
            f"resources {len(self.resources)}",
            *(f"resource {r.code} {r.grade} {_time(r.checked_at)}" for r in self.resources),
            "registered ok",
            "aggregated ok",
            f"quality ok {self.min_grade} {self.max_check_age_days}",
            f"rectification ok {self.criticism_days}",
            "corrections ok",
            f"node {self.node}",
            f"issued {_time(self.issued_at)}",
            f"valid-until {_time(self.valid_until)}",
            f"audit {self.audit_size} {self.audit_root}",
            f"serial {self.serial}",
        ]
        return "\n".join(lines) + "\n"


def _parse_time(value: str, key: str) -> dt.datetime:
    if not _TIME_RE.match(value):
        raise CertificateError("fields", f"{key} {quote(value)} is not UTC time")
    try:
        return dt.datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise CertificateError("fields", f"{key} {quote(value)} is not a real time") from None


def _decimal(value: str, key: str) -> int:
    if not _DECIMAL_RE.match(value):
        raise CertificateError("fields", f"{key} {quote(value)} is not a decimal number")
    return int(value)


class _Lines:
    """The note's lines read in order, each ``<key> <value>``."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self._n = 0

    def take(self, key: str) -> str:
        if self._n >= len(self._lines):
            raise CertificateError("fields", f"line {self._n + 1} should be '{key} ...': missing")
        line = self._lines[self._n]
        self._n += 1
        found, space, value = line.partition(" ")
        if found != key or not space:
            raise CertificateError(
                "fields", f"line {self._n} should be '{key} ...', got {quote(line)}"
            )
        return value

    def done(self) -> None:
        if self._n != len(self._lines):
            raise CertificateError(
                "fields", f"line {self._n + 1}: {quote(self._lines[self._n])} after the serial"
            )


def parse_certificate_text(text: str) -> Certificate:
    """The fields of a certificate's note text; raises :class:`CertificateError` (check
    ``fields``) naming the line that is wrong."""
    if not text.endswith("\n"):
        raise CertificateError("fields", "the text does not end with a line break")
    lines = text[:-1].split("\n")
    if lines[0] != CERTIFICATE_HEADER:
        raise CertificateError("fields", f"not a {CERTIFICATE_HEADER!r} text: {quote(lines[0])}")
    read = _Lines(lines[1:])
    agency = read.take("agency")
    project = read.take("project")
    region = read.take("region")
    count = _decimal(read.take("resources"), "resources")
    if not 0 < count <= MAX_RESOURCES:
        raise CertificateError("fields", f"resources: 1 to {MAX_RESOURCES}, got {count}")
    resources = []
    for _ in range(count):
        code, _, rest = read.take("resource").partition(" ")
        grade, _, checked = rest.partition(" ")
        resources.append(CertifiedResource(code, grade, _parse_time(checked, "resource check")))
    values: dict[str, str] = {}
    for condition in _CONDITIONS:
        value = read.take(condition)
        state, _, evidence = value.partition(" ")
        if state != "ok":
            raise CertificateError("fields", f"condition {condition} is {quote(state)}, not ok")
        values[condition] = evidence
    for condition in ("registered", "aggregated", "corrections"):
        if values[condition]:
            raise CertificateError("fields", f"{condition} ok {quote(values[condition])}: extra")
    min_grade, _, age = values["quality"].partition(" ")
    node = read.take("node")
    issued = _parse_time(read.take("issued"), "issued")
    until = _parse_time(read.take("valid-until"), "valid-until")
    size, _, root = read.take("audit").partition(" ")
    serial = read.take("serial")
    read.done()
    return Certificate(
        agency_code=agency,
        project="" if project == "-" else project,
        region=region,
        resources=tuple(resources),
        min_grade=min_grade,
        max_check_age_days=_decimal(age, "quality check age"),
        criticism_days=_decimal(values["rectification"], "rectification days"),
        node=node,
        issued_at=issued,
        valid_until=until,
        audit_size=_decimal(size, "audit size"),
        audit_root=root,
        serial=serial,
    )


def make_certificate(
    certificate: Certificate, key: ec.EllipticCurvePrivateKey, chain_pem: str
) -> bytes:
    """The certificate file, signed by the node key ``key`` whose chain (leaf first, without
    the root) is ``chain_pem``; refuses (check ``signing``) a key or chain not of the node
    the certificate names."""
    try:
        return sign_statement(
            certificate.text(),
            certificate.node,
            key,
            chain_pem,
            what="certificate",
            max_bytes=MAX_CERTIFICATE_BYTES,
        )
    except SignedError as exc:
        raise CertificateError(exc.check, str(exc)) from None


def check_certificate(
    data: bytes, root: x509.Certificate, trust_domain: str, at: dt.datetime
) -> Certificate:
    """What a certificate states, once everything in it is checked against ``root``: the
    node's chain, its signature, every field, that the signer is the node named, that its
    certificate was valid at the issue time, and that the certificate has not expired at
    ``at``. Raises :class:`CertificateError` naming the check that failed."""
    try:
        signed = open_signed(
            data,
            root,
            trust_domain,
            header=CERTIFICATE_HEADER,
            what="acceptance certificate",
            max_bytes=MAX_CERTIFICATE_BYTES,
        )
        certificate = parse_certificate_text(signed.text)
        if certificate.node != signed.signer.uri:
            raise CertificateError(
                "node",
                f"the certificate names the node {certificate.node}, but {signed.signer} signed it",
            )
        valid_at(signed, root, trust_domain, certificate.issued_at, "the certificate's issue time")
    except SignedError as exc:
        raise CertificateError(exc.check, str(exc)) from None
    if at >= certificate.valid_until:
        raise CertificateError(
            "expired",
            f"the certificate expired at {_time(certificate.valid_until)}; checked at {_time(at)}",
        )
    if at < certificate.issued_at:
        raise CertificateError(
            "time",
            f"the certificate is issued at {_time(certificate.issued_at)}, after {_time(at)}",
        )
    return certificate
