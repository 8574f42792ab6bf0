"""The backup's manifest and its signature (备份恢复, 第三十九条).

A backup is a directory; ``manifest.json`` lists every other file in it (name, size, SHA-256)
and what the database held when the copy began: its schema revision and the audit log's tree
size, root and chain head. ``manifest.sig`` is the node's ECDSA P-256 signature over
SHA-256 of the manifest file's exact bytes, DER-encoded, so anyone can check it with the
node's certificate (``tls/node.crt`` in the backup) and nothing of govnode::

    openssl x509 -in tls/node.crt -pubkey -noout > node.pub
    openssl dgst -sha256 -verify node.pub -signature manifest.sig manifest.json

The certificate chain is checked up to the province root: the one the operator names, or the
root certificate in the backup (which proves only that the backup is self-consistent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import IdentityError, Role, check_chain, identity_of
from node.pki import fingerprint

FORMAT = "govnode-backup/v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_ECDSA = ec.ECDSA(hashes.SHA256())
_CHUNK = 1 << 20


class BackupError(Exception):
    """The backup cannot be made, verified or restored; the message says why and what to do."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a backup: its path inside the backup directory, size and SHA-256."""

    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


def digest_file(path: Path) -> tuple[int, str]:
    """(size, hex SHA-256) of a file, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def file_entry(base: Path, name: str) -> FileEntry:
    size, sha = digest_file(base / name)
    return FileEntry(name, size, sha)


def safe_name(name: object) -> str:
    """A manifest's file name, refused unless it is a plain relative path inside the backup
    (a restore must never write outside its directory, whoever wrote the manifest)."""
    if not isinstance(name, str) or not name:
        raise BackupError(f"{MANIFEST}: a file name is not a string: {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or name in (MANIFEST, SIGNATURE):
        raise BackupError(f"{MANIFEST}: file name {name!r} is not a path inside the backup")
    return name


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: sorted keys, indented, UTF-8, newline at the end. The
    signature covers these bytes, not a re-serialisation, so the file is what is checked."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """DER ECDSA P-256 signature over SHA-256 of ``data``."""
    return key.sign(data, _ECDSA)


def load_manifest(data: bytes) -> dict[str, Any]:
    """The parsed manifest, its fields of the types expected."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BackupError(f"{MANIFEST} is not a JSON object")
    if parsed.get("format") != FORMAT:
        raise BackupError(
            f"{MANIFEST}: format {parsed.get('format')!r} is not {FORMAT!r} (made by another "
            "version of govnode?)"
        )
    for key, kind in (
        ("node", dict),
        ("database", dict),
        ("audit", dict),
        ("files", list),
        ("created_at", str),
        ("config", str),
    ):
        if not isinstance(parsed.get(key), kind):
            raise BackupError(f"{MANIFEST}: {key} is missing or not a {kind.__name__}")
    return parsed


def manifest_files(manifest: dict[str, Any]) -> list[FileEntry]:
    out = []
    for item in manifest["files"]:
        if not isinstance(item, dict):
            raise BackupError(f"{MANIFEST}: files holds a {type(item).__name__}, not an object")
        size, sha = item.get("size"), item.get("sha256")
        if not isinstance(size, int) or not isinstance(sha, str):
            raise BackupError(f"{MANIFEST}: file {item.get('name')!r} lacks its size or sha256")
        out.append(FileEntry(safe_name(item.get("name")), size, sha))
    return out


def created_at(manifest: dict[str, Any]) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(manifest["created_at"])
    except ValueError:
        raise BackupError(
            f"{MANIFEST}: created_at {manifest['created_at']!r} is not a time"
        ) from None
    if when.tzinfo is None:
        raise BackupError(f"{MANIFEST}: created_at has no time zone")
    return when


@dataclass(frozen=True)
class Signer:
    """Who signed a manifest (or a report), checked up to a root."""

    identity: str
    leaf: x509.Certificate
    root_fingerprint: str


def check_signer(chain_pem: bytes, root: x509.Certificate, *, at: dt.datetime, what: str) -> Signer:
    """The node identity of ``chain_pem`` (leaf first), its chain checked up to ``root``: every
    link's signature, validity at ``at`` (when the signature was made), and the identity rules
    the node applies to its callers (the region's CA vouches for the identity)."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise BackupError(f"{what}: no readable certificate: {exc}") from None
    chain = [c for c in certs if c != root]
    if not chain:
        raise BackupError(f"{what}: holds only the root certificate, no node certificate")
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:  # InvalidSignature, ValueError, TypeError
            raise BackupError(
                f"{what}: the chain does not lead to the root certificate (fingerprint "
                f"{fingerprint(root)}): {child.subject.rfc4514_string()} is not signed by "
                f"{parent.subject.rfc4514_string()}"
            ) from None
    for cert in [*chain, root]:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise BackupError(
                f"{what}: {cert.subject.rfc4514_string()} was not valid at {at.isoformat()} "
                f"(valid {cert.not_valid_before_utc.isoformat()} to "
                f"{cert.not_valid_after_utc.isoformat()})"
            )
    try:
        identity = check_chain(chain, identity_of(chain[0]).trust_domain)
    except IdentityError as exc:
        raise BackupError(f"{what}: {exc}") from None
    if identity.role is not Role.NODE:
        raise BackupError(f"{what}: signed by {identity}, which is not a node identity")
    return Signer(identity.uri, chain[0], fingerprint(root))


def verify_signature(leaf: x509.Certificate, data: bytes, signature: bytes, what: str) -> None:
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise BackupError(f"{what}: the signer's certificate does not carry an ECDSA key")
    try:
        public_key.verify(signature, data, _ECDSA)
    except InvalidSignature:
        raise BackupError(
            f"{what}: the signature does not verify: the file was altered, or signed with "
            "another key"
        ) from None
