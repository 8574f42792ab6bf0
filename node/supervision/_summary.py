"""The supervision summary a node signs for its province (issue 15 item 6, 第八、十五条): per
resource it owns the newest quality check, per agency of its region the compliance figures of
the period, the period and the audit log's head.

A summary travels as one JSON document (at most :data:`MAX_SUMMARY_BYTES`):

- ``format``: ``govnode supervision summary v1``;
- ``note``: the lines of a C2SP signed note by the node key (node.audit.sign_node_note, as
  download receipts), whose text is, line by line::

      govnode supervision summary v1
      region <the node's region>
      node <the signing node's SPIFFE ID>
      generated <when it was computed, UTC: YYYY-MM-DDTHH:MM:SSZ>
      sha256 <hex SHA-256 of the body's UTF-8 bytes>

- ``chain_pem``: the node's certificate chain without the root;
- ``body``: the summary itself as a JSON text (canonical: sorted keys, no spaces), whose bytes
  the note's ``sha256`` names; see :func:`body_json` for its fields.

Nothing outside the signed note is believed: the body counts only if its SHA-256 is the one
the node signed, and its region, node and time equal the note's.

Pure: no grpc, no storage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import Identity
from gateway.quote import quote
from node.audit import NodeNoteError, open_node_note, sign_node_note
from node.codes import credit_code_problem, region_problem
from node.supervision._types import UNMEASURED, Figure, Kind

__all__ = [
    "MAX_RESOURCES",
    "MAX_SUMMARY_BYTES",
    "SUMMARY_FORMAT",
    "AgencyFigures",
    "ResourceQuality",
    "Summary",
    "SummaryError",
    "check_summary",
    "sign_summary",
]

SUMMARY_FORMAT = "govnode supervision summary v1"
#: A signed summary's bytes, at most (500 agencies and 5,000 resources take well under 1 MiB).
MAX_SUMMARY_BYTES = 2 * 1024 * 1024
#: Resources a summary lists, at most (the rest are counted in ``resources_total``).
MAX_RESOURCES = 5000
#: Agencies a summary may list, at most, whatever the configuration says.
MAX_AGENCIES = 5000
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_RESOURCE_CODE_RE = re.compile(r"^\d{6}-[123]-\d{6}$")
_HEX_RE = re.compile(r"^[0-9a-f]{0,64}$")
_GRADES = frozenset({"", "A", "B", "C", "D", "E"})
_MAX_INT = 2**63 - 1
_NOTE_KEYS = ("region", "node", "generated", "sha256")


class SummaryError(ValueError):
    """A summary that is malformed or does not verify; ``check`` names what failed: ``size``,
    ``format``, ``chain``, ``signature``, ``fields`` (or ``signing`` when making one)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class ResourceQuality:
    """A resource of the node and its newest quality check (数据质量, 第十五条)."""

    code: str
    agency_code: str
    score: float | None  # overall 0-100; None when unchecked or unmeasurable
    grade: str  # A-E, "" when unchecked
    checked_at: dt.datetime | None
    open_errors: int  # error reports (纠错) open or awaiting a correction


@dataclass(frozen=True)
class AgencyFigures:
    """One agency's compliance figures over the period (node.supervision counts them), with
    the audit sequence range they were read from."""

    agency_code: str
    first: int
    last: int
    figures: list[Figure]

    def figure(self, kind: Kind) -> Figure | None:
        return next((f for f in self.figures if f.kind is kind), None)


@dataclass(frozen=True)
class Summary:
    """A node's summary for its province."""

    region: str
    node: str  # the SPIFFE ID of the node that computed and signs it
    generated_at: dt.datetime  # UTC, whole seconds
    period_start: dt.datetime
    period_end: dt.datetime
    head_size: int
    head_hash: str
    resources: list[ResourceQuality]
    resources_total: int  # resources of the node; more than listed when past MAX_RESOURCES
    agencies: list[AgencyFigures]
    agencies_total: int  # agencies that qualified; more than listed past the configured limit

    def note_text(self, digest: str) -> str:
        values = (self.region, self.node, _time(self.generated_at), digest)
        lines = [SUMMARY_FORMAT, *(f"{k} {v}" for k, v in zip(_NOTE_KEYS, values, strict=True))]
        return "\n".join(lines) + "\n"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def whole_seconds(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(microsecond=0)


def _figure_json(f: Figure) -> list[Any]:
    return [f.kind.value, f.numerator, f.denominator, f.first, f.last, f.noted, f.value]


def body_json(summary: Summary) -> str:
    """The canonical body: sorted keys, no spaces, UTF-8. Times are UTC to the second;
    a figure is ``[kind, numerator, denominator, first, last, noted, value]``."""
    body = {
        "region": summary.region,
        "node": summary.node,
        "generated_at": _time(summary.generated_at),
        "period_start": _time(summary.period_start),
        "period_end": _time(summary.period_end),
        "audit_head_size": summary.head_size,
        "audit_head_hash": summary.head_hash,
        "resources_total": summary.resources_total,
        "resources": [
            {
                "code": r.code,
                "agency": r.agency_code,
                "score": None if r.score is None else round(r.score, 2),
                "grade": r.grade,
                "checked_at": None if r.checked_at is None else _time(r.checked_at),
                "open_errors": r.open_errors,
            }
            for r in summary.resources
        ],
        "agencies_total": summary.agencies_total,
        "agencies": [
            {
                "code": a.agency_code,
                "first": a.first,
                "last": a.last,
                "figures": [_figure_json(f) for f in a.figures],
            }
            for a in summary.agencies
        ],
    }
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sign_summary(summary: Summary, key: ec.EllipticCurvePrivateKey, chain_pem: str) -> bytes:
    """The signed summary document (see the module's docstring)."""
    body = body_json(summary)
    digest = hashlib.sha256(body.encode()).hexdigest()
    try:
        _, note = sign_node_note(summary.note_text(digest), key, chain_pem)
    except NodeNoteError as exc:
        raise SummaryError(exc.check, str(exc)) from None
    document = {
        "format": SUMMARY_FORMAT,
        "note": note.decode().removesuffix("\n").split("\n"),
        "chain_pem": chain_pem,
        "body": body,
    }
    data = json.dumps(document, ensure_ascii=False).encode()
    if len(data) > MAX_SUMMARY_BYTES:
        raise SummaryError("signing", f"the summary would be {len(data)} bytes, too large")
    return data


# --- reading one --------------------------------------------------------------------------


def _fields(message: str) -> SummaryError:
    return SummaryError("fields", message)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise _fields(f"{what} is not a count")
    return value


def _str(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fields(f"{what} is not a text of at most {limit} characters")
    return value


def _moment(value: Any, what: str) -> dt.datetime:
    text = _str(value, what, 20)
    if not _TIME_RE.match(text):
        raise _fields(f"{what} {quote(text)} is not UTC time (YYYY-MM-DDTHH:MM:SSZ)")
    try:
        return dt.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise _fields(f"{what} {quote(text)} is not a real time") from None


def _agency_code(value: Any, what: str) -> str:
    code = _str(value, what, 18)
    problem = credit_code_problem(code)
    if problem is not None:
        raise _fields(f"{what} {quote(code)} {problem}")
    return code


_KINDS = {k.value: k for k in Kind}


def _figure(value: Any, what: str) -> Figure:
    if not isinstance(value, list) or len(value) != 7:
        raise _fields(f"{what} is not [kind, numerator, denominator, first, last, noted, value]")
    kind = _KINDS.get(value[0]) if isinstance(value[0], str) else None
    if kind is None:
        raise _fields(f"{what}: {quote(str(value[0]))} is not a kind of figure")
    grade = _str(value[6], f"{what}.value", 16)
    if grade not in _GRADES and grade != UNMEASURED:
        raise _fields(f"{what}.value {quote(grade)} is neither a grade nor {UNMEASURED!r}")
    n = [_int(v, f"{what}[{i}]") for i, v in enumerate(value[1:6], start=1)]
    return Figure(kind, n[0], n[1], first=n[2], last=n[3], noted=n[4], value=grade)


def _resource(value: Any, what: str) -> ResourceQuality:
    if not isinstance(value, dict):
        raise _fields(f"{what} is not an object")
    code = _str(value.get("code"), f"{what}.code", 15)
    if not _RESOURCE_CODE_RE.match(code):
        raise _fields(f"{what}.code {quote(code)} is not a resource code")
    score = value.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 100
    ):
        raise _fields(f"{what}.score is not a score from 0 to 100")
    grade = _str(value.get("grade"), f"{what}.grade", 1)
    if grade not in _GRADES:
        raise _fields(f"{what}.grade {quote(grade)} is not a grade A-E")
    checked = value.get("checked_at")
    return ResourceQuality(
        code=code,
        agency_code=_agency_code(value.get("agency"), f"{what}.agency"),
        score=None if score is None else float(score),
        grade=grade,
        checked_at=None if checked is None else _moment(checked, f"{what}.checked_at"),
        open_errors=_int(value.get("open_errors"), f"{what}.open_errors"),
    )


def _agency(value: Any, what: str) -> AgencyFigures:
    if not isinstance(value, dict):
        raise _fields(f"{what} is not an object")
    figures = value.get("figures")
    if not isinstance(figures, list) or len(figures) > len(Kind):
        raise _fields(f"{what}.figures is not a list of at most {len(Kind)} figures")
    return AgencyFigures(
        agency_code=_agency_code(value.get("code"), f"{what}.code"),
        first=_int(value.get("first"), f"{what}.first"),
        last=_int(value.get("last"), f"{what}.last"),
        figures=[_figure(f, f"{what}.figures[{i}]") for i, f in enumerate(figures)],
    )


def parse_body(body: str) -> Summary:
    """The summary a body states, every field checked and bounded (check ``fields``)."""
    try:
        value: Any = json.loads(body)
    except ValueError as exc:
        raise _fields(f"the body is not JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise _fields("the body is not a JSON object")
    region = _str(value.get("region"), "region", 6)
    problem = region_problem(region)
    if problem is not None:
        raise _fields(f"region: {problem}")
    resources, agencies = value.get("resources"), value.get("agencies")
    if not isinstance(resources, list) or len(resources) > MAX_RESOURCES:
        raise _fields(f"resources is not a list of at most {MAX_RESOURCES}")
    if not isinstance(agencies, list) or len(agencies) > MAX_AGENCIES:
        raise _fields(f"agencies is not a list of at most {MAX_AGENCIES}")
    head_hash = _str(value.get("audit_head_hash"), "audit_head_hash", 64)
    if not _HEX_RE.match(head_hash):
        raise _fields("audit_head_hash is not lower-case hex")
    start = _moment(value.get("period_start"), "period_start")
    end = _moment(value.get("period_end"), "period_end")
    if end < start:
        raise _fields("period_end is before period_start")
    return Summary(
        region=region,
        node=_str(value.get("node"), "node", 300),
        generated_at=_moment(value.get("generated_at"), "generated_at"),
        period_start=start,
        period_end=end,
        head_size=_int(value.get("audit_head_size"), "audit_head_size"),
        head_hash=head_hash,
        resources=[_resource(r, f"resources[{i}]") for i, r in enumerate(resources)],
        resources_total=_int(value.get("resources_total"), "resources_total"),
        agencies=[_agency(a, f"agencies[{i}]") for i, a in enumerate(agencies)],
        agencies_total=_int(value.get("agencies_total"), "agencies_total"),
    )


def check_summary(
    data: bytes, root: x509.Certificate, trust_domain: str
) -> tuple[Summary, Identity]:
    """The summary a document states and the node that signed it, once the chain verifies up
    to ``root``, the note carries that node's signature, the body is the one it signed and
    states the note's region, node and time. Raises :class:`SummaryError`."""
    if len(data) > MAX_SUMMARY_BYTES:
        raise SummaryError(
            "size", f"{len(data)} bytes; a summary is at most {MAX_SUMMARY_BYTES}, refused unread"
        )
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SummaryError("format", f"not a supervision summary: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != SUMMARY_FORMAT:
        raise SummaryError("format", f"not a supervision summary (format {SUMMARY_FORMAT!r})")
    lines, chain_pem, body = document.get("note"), document.get("chain_pem"), document.get("body")
    if (
        not isinstance(lines, list)
        or not all(isinstance(line, str) and "\n" not in line for line in lines)
        or not isinstance(chain_pem, str)
        or not isinstance(body, str)
    ):
        raise SummaryError(
            "format", "a summary has 'note' (the signed note's lines), 'chain_pem' and 'body'"
        )
    note = ("\n".join(lines) + "\n").encode()
    try:
        identity, text = open_node_note(note, chain_pem, root, trust_domain)
    except NodeNoteError as exc:
        raise SummaryError(exc.check, str(exc)) from None
    stated = text.split("\n")
    if len(stated) != len(_NOTE_KEYS) + 2 or stated[0] != SUMMARY_FORMAT or stated[-1] != "":
        raise _fields(f"the signed note is not a {SUMMARY_FORMAT!r} text")
    said: dict[str, str] = {}
    for key, line in zip(_NOTE_KEYS, stated[1:-1], strict=True):
        found, _, value = line.partition(" ")
        if found != key:
            raise _fields(f"the signed note's line should be '{key} ...', got {quote(line)}")
        said[key] = value
    digest = hashlib.sha256(body.encode()).hexdigest()
    if digest != said["sha256"]:
        raise SummaryError(
            "signature",
            f"the body's SHA-256 is {digest[:16]}…, the node signed {said['sha256'][:16]}…: "
            "the body is not the one the node signed",
        )
    summary = parse_body(body)
    if (summary.region, summary.node, _time(summary.generated_at)) != (
        said["region"],
        said["node"],
        said["generated"],
    ):
        raise _fields("the body's region, node or time differ from the signed note's")
    if summary.node != identity.uri:
        raise SummaryError(
            "signature",
            f"the summary names the node {quote(summary.node)}, but {identity} signed it",
        )
    return summary, identity
