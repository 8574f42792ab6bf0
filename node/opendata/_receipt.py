"""Download receipts: what a download was, signed by the node (注明来源和获取日期, 第三十五条).

A data product must state the source and the date of the government data it uses. A receipt
lets its maker prove that statement to anyone, offline, years later: the node that served the
download signs which file it was (SHA-256 and size), of which dataset and version, from which
provider and publishing authority, when, and to whom.

A receipt is a JSON file holding:

- ``format``: ``govnode download receipt v1``;
- ``note``: a C2SP signed note by the node key (key name ``<host>/node``, as the witness key
  statement and the usage statements of node.audit), given as its lines so that a person can
  read it in the file. Its text is, line by line, in this order::

      govnode download receipt v1
      dataset <the dataset's IRI>
      resource <the resource code, e.g. 350000-1-000001>
      name <the resource's name>
      provider <the providing agency's 统一社会信用代码> <its name>
      authority <the publishing authority's division code> <its name>
      version <the dataset version, a positive integer>
      format <csv, jsonl, ...>
      sha256 <hex SHA-256 of the file's bytes>
      size <the file's size in bytes>
      obtained <the time of the download, UTC: YYYY-MM-DDTHH:MM:SSZ>
      recipient <an address or an API key id>
      node <the signing node's SPIFFE ID>

- ``chain_pem``: the node's certificate chain without the root.

The note's bytes are the lines joined with newlines plus a final newline. Nothing outside the
signed note is believed: :func:`check_receipt` checks the chain up to the province root, the
signature, every field, that the signer is the node the receipt names and that its certificate
was valid at the receipt's time, and, given the downloaded file, its SHA-256 and size.
Revocation is not checked offline: a node whose key was revoked is named in the province's CRL.

Pure: no grpc, no storage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import IdentityError, Role, identity_of, parse_spiffe
from gateway.quote import quote
from node.audit import NodeNoteError, open_node_note, sign_node_note
from node.codes import credit_code_problem, region_problem
from node.pki import PkiError, verify_chain

HEADER = "govnode download receipt v1"
#: A receipt is a note of a few hundred bytes and a chain of a few kilobytes; anything larger
#: is refused before it is parsed.
MAX_RECEIPT_BYTES = 64 * 1024
#: Characters of each text field.
MAX_IRI = 500
MAX_NAME = 200
MAX_RECIPIENT = 128
MAX_VERSION = 999_999_999
MAX_SIZE = 2**63 - 1
_CHUNK = 1024 * 1024

# The lines of the note's text after the header, in their fixed order.
_KEYS = (
    "dataset",
    "resource",
    "name",
    "provider",
    "authority",
    "version",
    "format",
    "sha256",
    "size",
    "obtained",
    "recipient",
    "node",
)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_IRI_RE = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")
# As node.catalog's RESOURCE_CODE_RE: division code, share type, sequence.
_RESOURCE_CODE_RE = re.compile(r"^\d{6}-[123]-\d{6}$")
_FORMAT_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,15}$")
_HEX_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DECIMAL_RE = re.compile(r"^(0|[1-9][0-9]{0,18})$")


class ReceiptError(ValueError):
    """A receipt that is malformed or does not verify. ``check`` names the check that failed:
    ``size``, ``format``, ``chain``, ``signature``, ``fields``, ``node``, ``time`` or ``data``
    (and ``signing`` when making one)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


def _text_problem(value: str, limit: int) -> str | None:
    if not value:
        return "is empty"
    if len(value) > limit:
        return f"is {len(value)} characters, at most {limit}"
    if not value.isprintable() or value != value.strip():
        return f"{quote(value)} has control characters, line breaks or surrounding spaces"
    return None


@dataclass(frozen=True)
class Receipt:
    """What a download was (decoded from a receipt, or about to be signed)."""

    dataset: str  # the dataset's IRI (DCAT), cited as its source
    resource_code: str
    resource_name: str
    provider_code: str  # 统一社会信用代码 of the providing agency (数据生产应用单位)
    provider_name: str
    authority_region: str  # the publishing 数据管理机构: the province or a 设区市
    authority_name: str
    version: int
    format: str
    sha256: str  # hex, of the file's bytes
    size: int
    obtained_at: dt.datetime  # UTC, whole seconds (获取日期)
    recipient: str  # an address or an API key id
    node: str  # the SPIFFE ID of the node that served and signs it

    def __post_init__(self) -> None:
        if self.obtained_at.tzinfo is None:
            raise ReceiptError("fields", "obtained_at: needs a time zone (UTC)")
        # A receipt states the time to the second; normalise so that a receipt read back
        # equals the one that was signed.
        at = self.obtained_at.astimezone(dt.UTC).replace(microsecond=0)
        object.__setattr__(self, "obtained_at", at)
        problem = self._problem()
        if problem is not None:
            raise ReceiptError("fields", problem)

    def _problem(self) -> str | None:
        checks: list[tuple[str, str | None]] = [
            ("dataset", _text_problem(self.dataset, MAX_IRI)),
            ("resource_name", _text_problem(self.resource_name, MAX_NAME)),
            ("provider_name", _text_problem(self.provider_name, MAX_NAME)),
            ("authority_name", _text_problem(self.authority_name, MAX_NAME)),
            ("recipient", _text_problem(self.recipient, MAX_RECIPIENT)),
        ]
        for name, problem in checks:
            if problem is not None:
                return f"{name} {problem}"
        if not _IRI_RE.match(self.dataset):
            return f"dataset {quote(self.dataset)} is not an absolute IRI"
        if not _RESOURCE_CODE_RE.match(self.resource_code):
            return f"resource_code {quote(self.resource_code)} is not a resource code"
        problem = credit_code_problem(self.provider_code)
        if problem is not None:
            return f"provider_code {quote(self.provider_code)} {problem}"
        problem = region_problem(self.authority_region)
        if problem is not None:
            return f"authority_region: {problem}"
        if not 0 < self.version <= MAX_VERSION:
            return f"version {self.version} is not between 1 and {MAX_VERSION}"
        if not _FORMAT_RE.match(self.format):
            return f"format {quote(self.format)} is not a format name such as csv or jsonl"
        if not _HEX_SHA256_RE.match(self.sha256):
            return "sha256 is not a lower-case hex SHA-256"
        if not 0 <= self.size <= MAX_SIZE:
            return f"size {self.size} is out of range"
        try:
            node = parse_spiffe(self.node)
        except IdentityError as exc:
            return f"node: {exc}"
        if node.role is not Role.NODE:
            return f"node {quote(self.node)} is not a node's identity"
        return None

    def text(self) -> str:
        """The text the node signs."""
        values = (
            self.dataset,
            self.resource_code,
            self.resource_name,
            f"{self.provider_code} {self.provider_name}",
            f"{self.authority_region} {self.authority_name}",
            str(self.version),
            self.format,
            self.sha256,
            str(self.size),
            self.obtained_at.strftime(_TIME_FORMAT),
            self.recipient,
            self.node,
        )
        lines = [HEADER, *(f"{key} {value}" for key, value in zip(_KEYS, values, strict=True))]
        return "\n".join(lines) + "\n"


def parse_receipt_text(text: str) -> Receipt:
    """The fields of a receipt's note text; raises :class:`ReceiptError` (check ``fields``)
    naming the line that is wrong."""
    lines = text.split("\n")
    if len(lines) != len(_KEYS) + 2 or lines[0] != HEADER or lines[-1] != "":
        raise ReceiptError(
            "fields", f"not a {HEADER!r} text of {len(_KEYS)} fields: {quote(lines[0])}"
        )
    values: dict[str, str] = {}
    for n, (key, line) in enumerate(zip(_KEYS, lines[1:-1], strict=True), start=2):
        found, space, value = line.partition(" ")
        if found != key or not space:
            raise ReceiptError("fields", f"line {n} should be '{key} ...', got {quote(line)}")
        values[key] = value
    provider_code, _, provider_name = values["provider"].partition(" ")
    authority_region, _, authority_name = values["authority"].partition(" ")
    for key in ("version", "size"):
        if not _DECIMAL_RE.match(values[key]):
            raise ReceiptError("fields", f"{key} {quote(values[key])} is not a decimal number")
    if not _TIME_RE.match(values["obtained"]):
        raise ReceiptError("fields", f"obtained {quote(values['obtained'])} is not UTC time")
    try:
        obtained = dt.datetime.strptime(values["obtained"], _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise ReceiptError("fields", f"obtained {values['obtained']} is not a real time") from None
    return Receipt(
        dataset=values["dataset"],
        resource_code=values["resource"],
        resource_name=values["name"],
        provider_code=provider_code,
        provider_name=provider_name,
        authority_region=authority_region,
        authority_name=authority_name,
        version=int(values["version"]),
        format=values["format"],
        sha256=values["sha256"],
        size=int(values["size"]),
        obtained_at=obtained,
        recipient=values["recipient"],
        node=values["node"],
    )


def make_receipt(receipt: Receipt, key: ec.EllipticCurvePrivateKey, chain_pem: str) -> bytes:
    """The receipt file of ``receipt``, signed by the node key ``key`` whose chain (leaf
    first, without the root: node.pki.load_chain_pem) is ``chain_pem``. Refuses (check
    ``signing``) a key or chain that is not the node's the receipt names: such a receipt
    would never verify."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        identity = identity_of(leaf)
    except (ValueError, IndexError, IdentityError) as exc:
        raise ReceiptError("signing", f"the node's chain: {exc}") from None
    if identity.uri != receipt.node:
        raise ReceiptError(
            "signing", f"the receipt names {receipt.node}, but the chain is {identity}'s"
        )
    try:
        _, note = sign_node_note(receipt.text(), key, chain_pem)
    except NodeNoteError as exc:
        raise ReceiptError(exc.check, str(exc)) from None
    document = {
        "format": HEADER,
        "note": note.decode().removesuffix("\n").split("\n"),
        "chain_pem": chain_pem,
    }
    data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError("signing", f"the receipt would be {len(data)} bytes, too large")
    return data


@dataclass(frozen=True)
class FileDigest:
    """The SHA-256 (hex) and size of a file's bytes."""

    sha256: str
    size: int


def digest_of(data: bytes) -> FileDigest:
    return FileDigest(hashlib.sha256(data).hexdigest(), len(data))


def sha256_of(path: str | os.PathLike[str]) -> FileDigest:
    """The digest of the file at ``path``, read in chunks (a download may be gigabytes)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileDigest(digest.hexdigest(), size)


def _read_document(data: bytes) -> tuple[bytes, str]:
    """The note bytes and chain PEM of a receipt file (check ``format``)."""
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReceiptError("format", f"not a govnode download receipt: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != HEADER:
        raise ReceiptError("format", f"not a govnode download receipt (format {HEADER!r})")
    lines, chain_pem = document.get("note"), document.get("chain_pem")
    if (
        not isinstance(lines, list)
        or not all(isinstance(line, str) and "\n" not in line for line in lines)
        or not isinstance(chain_pem, str)
    ):
        raise ReceiptError(
            "format", "a receipt has 'note' (the signed note's lines) and 'chain_pem' (text)"
        )
    return ("\n".join(lines) + "\n").encode(), chain_pem


def check_receipt(
    data: bytes,
    root: x509.Certificate,
    trust_domain: str,
    *,
    file_bytes: bytes | None = None,
    file_digest: FileDigest | None = None,
) -> Receipt:
    """What a receipt says, once everything in it is checked against ``root``: the node's
    chain, its signature, the fields, that the signer is the node named and that its
    certificate was valid at the receipt's time. With ``file_bytes`` or ``file_digest``
    (:func:`sha256_of` for a large file), the file must be the one the receipt describes.
    Raises :class:`ReceiptError` whose ``check`` names the check that failed."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(
            "size", f"{len(data)} bytes; a receipt is at most {MAX_RECEIPT_BYTES}, refused unread"
        )
    note, chain_pem = _read_document(data)
    try:
        identity, text = open_node_note(note, chain_pem, root, trust_domain)
    except NodeNoteError as exc:
        raise ReceiptError(exc.check, str(exc)) from None
    receipt = parse_receipt_text(text)
    if receipt.node != identity.uri:
        raise ReceiptError(
            "node", f"the receipt names the node {receipt.node}, but {identity} signed it"
        )
    try:
        verify_chain(chain_pem, root, trust_domain, at=receipt.obtained_at)
    except PkiError as exc:
        raise ReceiptError("time", f"at the receipt's time: {exc}") from None
    if file_bytes is not None:
        file_digest = digest_of(file_bytes)
    if file_digest is not None:
        if file_digest.size != receipt.size:
            raise ReceiptError(
                "data",
                f"the file is {file_digest.size} bytes; the receipt is for {receipt.size}",
            )
        if file_digest.sha256 != receipt.sha256:
            raise ReceiptError(
                "data",
                f"the file's SHA-256 is {file_digest.sha256[:16]}…; the receipt is for "
                f"{receipt.sha256[:16]}…: not the file the node served",
            )
    return receipt
