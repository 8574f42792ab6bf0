"""What a directory of backups holds, for the operator console's backups page: each backup's
time, size, whether it holds keys, the audit head its manifest names, and what its last
verification found (the report `govnode backup verify` leaves in it).

The directory is read as untrusted: only entries whose names fit :data:`NAME` are listed, a
symbolic link is never followed (not a backup directory, not a file in one), at most
:data:`MAX_SCANNED` entries are looked at and a manifest or report is read only up to
:data:`MAX_JSON_BYTES`. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.quote import quote
from node.backup._manifest import (
    MANIFEST,
    BackupError,
    check_signer,
    created_at,
    load_manifest,
    verify_signature,
)
from node.backup._verify import REPORT, REPORT_SIGNATURE, Check

#: A backup's name as the console accepts it in a URL or a form, and lists it: letters, digits,
#: ``.``, ``_``, ``-``, not starting with a dot (so no ``..``, no hidden staging directory
#: ``.NAME.partial-…``, no ``/``), at most 100 characters.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: Directory entries looked at in one listing (a directory with more is listed in part, saying
#: so).
MAX_SCANNED = 10_000
#: Files and directories counted in one backup's size (a backup has about ten).
MAX_WALK = 1_000
#: The largest manifest or report read (a manifest of a node's backup is a few KiB).
MAX_JSON_BYTES = 1 << 20


def check_name(name: str) -> str:
    """``name`` if it may name a backup, else :class:`BackupError` quoting a short prefix."""
    if not NAME.fullmatch(name):
        raise BackupError(
            f"backup name {quote(name, 40)} is not a name of letters, digits, '.', '_' and '-' "
            "(at most 100, not starting with '.')"
        )
    return name


@dataclass(frozen=True)
class LastVerification:
    """A backup's last verification, as its ``verify-report.json`` says."""

    ok: bool
    verified_at: dt.datetime | None
    #: Who signed the report, once its signature and chain checked out; "" when unsigned or
    #: the signature does not check (``signature_problem`` says why).
    verifier: str
    signature_problem: str
    #: Whether the report is about the manifest the backup holds now.
    current: bool
    checks: tuple[Check, ...]

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]


@dataclass(frozen=True)
class Summary:
    """One backup of the directory."""

    name: str
    #: Bytes of its files (symbolic links counted as links) and how many.
    size: int
    files: int
    #: Why its manifest cannot be read ("" when it can); the fields below are then empty.
    problem: str = ""
    created_at: dt.datetime | None = None
    node: str = ""
    keys: bool = False
    audit_size: int | None = None
    audit_root: str = ""
    report: LastVerification | None = None
    #: The report's problem, when it is there but unreadable.
    report_problem: str = ""


@dataclass(frozen=True)
class Listing:
    """A page of backups, newest name first."""

    backups: list[Summary]
    #: Backups in the directory (of the entries looked at).
    total: int
    #: More than :data:`MAX_SCANNED` entries: the rest were not looked at.
    truncated: bool
    #: The directory does not exist yet (no backup made).
    missing: bool = False
    #: Why the directory cannot be read ("" when it can).
    problem: str = ""


def backup_names(directory: Path) -> tuple[list[str], bool]:
    """The backups' names in ``directory``, newest first (names sort by time: the console's are
    UTC times), and whether the scan stopped at :data:`MAX_SCANNED` entries."""
    names = []
    truncated = False
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_SCANNED:
                truncated = True
                break
            if NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                names.append(entry.name)
    return sorted(names, reverse=True), truncated


def list_backups(
    directory: Path, *, offset: int, limit: int, root: x509.Certificate | None = None
) -> Listing:
    """``limit`` backups of ``directory`` from ``offset`` (newest first), each summarised;
    reports are checked against ``root`` (the province root) when given. Blocking file I/O:
    run it in a thread."""
    try:
        names, truncated = backup_names(directory)
    except FileNotFoundError:
        return Listing([], 0, False, missing=True)
    except OSError as exc:
        return Listing([], 0, False, problem=f"{directory} cannot be read: {exc.strerror}")
    shown = names[offset : offset + limit]
    return Listing([summary(directory, n, root) for n in shown], len(names), truncated)


def summary(directory: Path, name: str, root: x509.Certificate | None = None) -> Summary:
    """What the backup ``directory/name`` holds (a name checked by :func:`check_name`);
    :class:`FileNotFoundError` when it is not a backup directory there."""
    path = directory / check_name(name)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise FileNotFoundError(path)
    size, files = _size(path)
    try:
        manifest_data = _read(path / MANIFEST)
        manifest = load_manifest(manifest_data)
        when = created_at(manifest)
    except (OSError, BackupError) as exc:
        return Summary(name, size, files, problem=_problem(exc, MANIFEST))
    audit = manifest["audit"]
    tree_size = audit.get("tree_size")
    report, report_problem = None, ""
    try:
        report = _report(path, hashlib.sha256(manifest_data).hexdigest(), root)
    except FileNotFoundError:
        pass
    except (OSError, BackupError) as exc:
        report_problem = _problem(exc, REPORT)
    return Summary(
        name,
        size,
        files,
        created_at=when,
        node=str(manifest["node"].get("identity", "")),
        keys=bool(manifest.get("keys")),
        audit_size=tree_size if isinstance(tree_size, int) else None,
        audit_root=str(audit.get("tree_root", "")),
        report=report,
        report_problem=report_problem,
    )


def _problem(exc: OSError | BackupError, what: str) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no {what}: not a finished backup"
    if isinstance(exc, OSError):
        return f"{what} cannot be read: {exc.strerror}"
    return str(exc)


def _read(path: Path) -> bytes:
    """A regular file's bytes, never through a symbolic link, at most :data:`MAX_JSON_BYTES`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BackupError(f"{path.name} is not a regular file")
        if info.st_size > MAX_JSON_BYTES:
            raise BackupError(f"{path.name} is {info.st_size} bytes, over {MAX_JSON_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_JSON_BYTES + 1)
    finally:
        os.close(fd)


def _size(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path``, not following links, at most :data:`MAX_WALK`
    entries."""
    size = files = seen = 0
    pending = [path]
    while pending and seen < MAX_WALK:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_WALK:
                    break
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    size += entry.stat(follow_symlinks=False).st_size
                    files += 1
    return size, files


def _report(path: Path, manifest_sha256: str, root: x509.Certificate | None) -> LastVerification:
    data = _read(path / REPORT)
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BackupError(f"{REPORT} is not JSON") from None
    if not isinstance(parsed, dict):
        raise BackupError(f"{REPORT} is not a JSON object")
    checks = tuple(
        Check(str(c.get("name", "")), c.get("ok") is True, str(c.get("detail", "")))
        for c in parsed.get("checks") or []
        if isinstance(c, dict)
    )
    verified_at = _time(parsed.get("verified_at"))
    verifier, problem = _report_signer(path, data, parsed, verified_at, root)
    return LastVerification(
        ok=parsed.get("ok") is True,
        verified_at=verified_at,
        verifier=verifier,
        signature_problem=problem,
        current=parsed.get("manifest_sha256") == manifest_sha256,
        checks=checks,
    )


def _time(value: Any) -> dt.datetime | None:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _report_signer(
    path: Path,
    data: bytes,
    report: dict[str, Any],
    at: dt.datetime | None,
    root: x509.Certificate | None,
) -> tuple[str, str]:
    """(the verifying node, "") when the report's signature checks under its chain up to
    ``root``; ("", why not) otherwise."""
    try:
        signature = _read(path / REPORT_SIGNATURE)
    except FileNotFoundError:
        return "", "unsigned"
    except (OSError, BackupError) as exc:
        return "", _problem(exc, REPORT_SIGNATURE)
    chain = report.get("verifier_chain_pem")
    if root is None or at is None or not isinstance(chain, str):
        return "", "no root, time or chain to check the signature with"
    try:
        signer = check_signer(chain.encode(), root, at=at, what="the report's signer")
        verify_signature(signer.leaf, data, signature, f"{REPORT_SIGNATURE} over {REPORT}")
    except BackupError as exc:
        return "", str(exc)
    return signer.identity, ""
