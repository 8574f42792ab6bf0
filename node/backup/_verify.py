"""Verifying a backup by restoring it somewhere it can do no harm (恢复验证, 第三十九条).

The checks run in order and each says what it found. The first four need nothing but the
backup: the manifest's signature, the signer's certificate chain up to the province root,
and every file's digest. If one fails, nothing of the backup is restored. Then the database
is restored into a scratch place (a temporary SQLite file, or a temporary PostgreSQL
database dropped afterwards) and checked: its integrity, its schema revision, the audit
log's hash chain from the first record, and the audit tree's root and the chain's link at
the size the manifest names. Last, the newest witnessed checkpoint the manifest names: the
node's signature on it and every cosignature it lists, each under the witness's key statement
(kept in the copy, its chain checked up to the same root), and the copy's tree at its size has
its root.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import identity_of
from node.audit import (
    AuditLog,
    KeyStatementError,
    cosigners,
    read_log_signer,
    read_witness_statement,
)
from node.backup._database import (
    Progress,
    restore_postgres,
    scratch_postgres,
    shown,
    sqlite_integrity,
)
from node.backup._manifest import (
    MANIFEST,
    SIGNATURE,
    BackupError,
    check_signer,
    created_at,
    digest_file,
    load_manifest,
    manifest_bytes,
    manifest_files,
    sign,
    verify_signature,
)
from node.pki import fingerprint
from node.storage import Database, head_revision
from node.tlog import Checkpoint, NoteError, open_note, parse_checkpoint
from node.version import software_version

REPORT_FORMAT = "govnode-backup-verify/v1"
REPORT = "verify-report.json"
REPORT_SIGNATURE = "verify-report.sig"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Verification:
    """What :func:`verify_backup` found; ``ok`` only when every check ran and passed."""

    backup: Path
    root: str = ""  # which root the chain was checked against, and its fingerprint
    manifest: dict[str, Any] | None = None
    manifest_sha256: str = ""
    checks: list[Check] = field(default_factory=list)
    complete: bool = False
    #: What the signatures in the backup are checked against, once the manifest's signer was
    #: checked up to it: the root, and the backup's node chain (PEM).
    anchor: x509.Certificate | None = field(default=None, repr=False)
    node_chain_pem: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        return self.complete and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str, progress: Progress) -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok


async def verify_backup(
    backup: Path,
    *,
    root: Path | None,
    scratch_server: str | None,
    progress: Progress,
) -> Verification:
    """Check the backup in ``backup``; the result lists every check made. ``scratch_server``
    is a PostgreSQL URL whose server gets the scratch database (default: the server the
    backup was taken from, as the manifest records it without its password)."""
    result = Verification(backup)
    if not _check_files(result, backup, root, progress):
        return result
    manifest = result.manifest
    assert manifest is not None
    database = manifest["database"]
    progress(f"restoring {database['file']} into a scratch database")
    if database.get("backend") == "postgresql":
        server = scratch_server or str(database.get("source") or "")
        if not server:
            result.add("restore", False, "no PostgreSQL server to restore into", progress)
            return result
        try:
            async with scratch_postgres(server) as url:
                try:
                    await restore_postgres(backup / database["file"], url)
                except BackupError as exc:
                    result.add("restore", False, str(exc), progress)
                    return result
                result.add(
                    "restore",
                    True,
                    f"pg_restore into a scratch database on {shown(server)} (one transaction, "
                    "stopping at the first error); dropped afterwards",
                    progress,
                )
                await _check_database(result, url, manifest, progress)
        except BackupError as exc:
            result.add("restore", False, str(exc), progress)
            return result
    else:
        with tempfile.TemporaryDirectory(prefix="govnode-verify-") as scratch:
            copy = Path(scratch) / "node.db"
            shutil.copyfile(backup / database["file"], copy)
            result.add("restore", True, "copied into a temporary SQLite file", progress)
            integrity = sqlite_integrity(copy)
            if not result.add(
                "integrity",
                integrity == "ok",
                "PRAGMA integrity_check: " + integrity,
                progress,
            ):
                return result
            await _check_database(result, f"sqlite+aiosqlite:///{copy}", manifest, progress)
    return result


def _check_files(
    result: Verification, backup: Path, root_path: Path | None, progress: Progress
) -> bool:
    """The manifest's signature, the signer's chain and every file's digest."""
    try:
        data = (backup / MANIFEST).read_bytes()
        signature = (backup / SIGNATURE).read_bytes()
    except OSError as exc:
        return result.add(
            "manifest", False, f"cannot read {exc.filename}: {exc.strerror}", progress
        )
    result.manifest_sha256 = hashlib.sha256(data).hexdigest()
    try:
        manifest = load_manifest(data)
    except BackupError as exc:
        return result.add("manifest", False, str(exc), progress)
    result.add("manifest", True, f"{MANIFEST} made {manifest['created_at']}", progress)

    chain_name = str((manifest.get("tls") or {}).get("cert", "tls/node.crt"))
    backup_root = str((manifest.get("tls") or {}).get("root", "tls/root.crt"))
    try:
        if root_path is not None:
            root_pem, source = root_path.read_bytes(), f"--root {root_path}"
        else:
            root_pem = (backup / backup_root).read_bytes()
            source = (
                f"the root certificate in the backup ({backup_root}); pass --root with the "
                "province root you hold to check the backup against it"
            )
        root = x509.load_pem_x509_certificate(root_pem)
        root.verify_directly_issued_by(root)
        result.root = f"{source}: {fingerprint(root)}"
        signer = check_signer(
            (backup / chain_name).read_bytes(),
            root,
            at=created_at(manifest),
            what=f"certificate chain {chain_name}",
        )
    except OSError as exc:
        return result.add("certificate chain", False, f"cannot read {exc.filename}", progress)
    except (ValueError, TypeError) as exc:  # unreadable or not self-signed
        return result.add("certificate chain", False, f"the root certificate: {exc}", progress)
    except BackupError as exc:
        return result.add("certificate chain", False, str(exc), progress)
    result.add(
        "certificate chain", True, f"{signer.identity}, checked against {result.root}", progress
    )

    try:
        verify_signature(signer.leaf, data, signature, f"{SIGNATURE} over {MANIFEST}")
    except BackupError as exc:
        return result.add("signature", False, str(exc), progress)
    named = manifest["node"].get("identity")
    if named != signer.identity:
        return result.add(
            "signature",
            False,
            f"the manifest names node {named!r} but is signed by {signer.identity}",
            progress,
        )
    result.manifest = manifest
    result.anchor, result.node_chain_pem = root, (backup / chain_name).read_text("utf-8")
    result.add("signature", True, f"{MANIFEST} signed by {signer.identity}", progress)

    try:
        entries = manifest_files(manifest)
    except BackupError as exc:
        return result.add("files", False, str(exc), progress)
    problems = []
    total = 0
    for entry in entries:
        path = backup / entry.name
        if not path.is_file():
            problems.append(f"{entry.name} is missing")
            continue
        size, sha = digest_file(path)
        total += size
        if (size, sha) != (entry.size, entry.sha256):
            problems.append(
                f"{entry.name} does not match the manifest (size {size}, SHA-256 {sha[:16]}..., "
                f"expected size {entry.size}, SHA-256 {entry.sha256[:16]}...): altered or damaged"
            )
    if problems:
        return result.add("files", False, "; ".join(problems), progress)
    database = manifest["database"].get("file")
    if database not in {e.name for e in entries}:
        return result.add("files", False, f"the database file {database!r} is not listed", progress)
    return result.add(
        "files",
        True,
        f"{len(entries)} files, {total:,} bytes, every SHA-256 matches the manifest",
        progress,
    )


async def _check_database(
    result: Verification, url: str, manifest: dict[str, Any], progress: Progress
) -> None:
    expected = manifest["database"].get("schema_revision")
    audit = manifest["audit"]
    size = int(audit.get("tree_size", -1))
    head = audit.get("chain_head") or {}
    db = await Database.open(url)
    try:
        revision = await db.current_revision()
        note = (
            ""
            if revision == head_revision()
            else f" (this govnode's is {head_revision()}: `govnode serve` migrates it on start)"
        )
        if not result.add(
            "schema revision",
            revision == expected,
            f"{revision}, the manifest says {expected}{note}",
            progress,
        ):
            return
        log = AuditLog(db)
        total = await log.count()
        progress(f"recomputing the audit chain over {total} records")
        chain = await log.verify_chain()
        if not result.add(
            "audit chain",
            chain.ok,
            f"{chain.checked} records intact"
            if chain.ok
            else f"broken at record #{chain.first_bad_sequence}: {chain.reason}",
            progress,
        ):
            return
        if total < size or size < 0:
            result.add(
                "audit head",
                False,
                f"the copy holds {total} records, the manifest names {size}",
                progress,
            )
            return
        tree = await log.tree_head(size)
        link = "0" * 64
        if size > 0:
            [record] = await log.query(after_sequence=size - 1, limit=1)
            link = record.hash
        problems = []
        if tree.root.hex() != audit.get("tree_root"):
            problems.append(
                f"the tree root at size {size} is {tree.root.hex()}, the manifest says "
                f"{audit.get('tree_root')}"
            )
        if head.get("sequence") != size or link != head.get("hash"):
            problems.append(f"record #{size} has hash {link}, the manifest's chain head is {head}")
        result.add(
            "audit head",
            not problems,
            "; ".join(problems)
            or (
                f"tree root at size {size} and record #{size}'s hash equal the manifest's "
                f"({total - size} records written while the copy was made)"
            ),
            progress,
        )
        result.complete = not problems
        if not problems:
            _check_checkpoint(result, manifest, chain.roots, chain.checked, progress)
            await _check_witnessed_root(result, db, log, manifest, progress)
    finally:
        await db.close()


def _check_checkpoint(
    result: Verification,
    manifest: dict[str, Any],
    roots: dict[int, bytes],
    records: int,
    progress: Progress,
) -> None:
    """The checkpoint the manifest names is a real one of this node (its signature, by the
    node key whose chain the backup holds) and not larger than the copy's log."""
    checkpoint = manifest.get("checkpoint")
    if not checkpoint:
        return
    size = int(checkpoint.get("size", -1))
    if size > records:
        result.add(
            "witnessed checkpoint",
            False,
            f"a witness cosigned {size} records, the copy holds {records}",
            progress,
        )
        result.complete = False


async def _check_witnessed_root(
    result: Verification, db: Database, log: AuditLog, manifest: dict[str, Any], progress: Progress
) -> None:
    """The witnessed checkpoint is signed by this node and cosigned by each witness it lists
    (:func:`_verified_checkpoint`), and the copy's tree at its size has its root: the backup
    holds the history the witnesses saw, not another one."""
    checkpoint = manifest.get("checkpoint")
    if not checkpoint or not result.complete:
        return
    size = int(checkpoint["size"])
    try:
        signed = await _verified_checkpoint(result, db, checkpoint)
    except BackupError as exc:
        result.add("witnessed checkpoint", False, str(exc), progress)
        result.complete = False
        return
    root = (await log.tree_head(size)).root
    ok = signed.size == size and signed.root == root and root.hex() == checkpoint.get("root")
    result.add(
        "witnessed checkpoint",
        ok,
        (
            f"the copy's tree of {size} records has the root "
            f"{', '.join(checkpoint['cosigned_by'])} cosigned (each cosignature verified under "
            "its witness key statement)"
        )
        if ok
        else (
            f"the copy's tree of {size} records has root {root.hex()[:16]}…, not the "
            f"{str(checkpoint.get('root'))[:16]}… its witnesses cosigned"
        ),
        progress,
    )
    result.complete = ok


async def _verified_checkpoint(
    result: Verification, db: Database, checkpoint: dict[str, Any]
) -> Checkpoint:
    """The checkpoint in the manifest's signed note, once the node's signature on it (its
    chain in the backup) and the cosignature of every witness it lists verify, each witness's
    key under its key statement as the copy keeps it, checked up to the same root as the rest
    (as a proof file's are, node.audit). :class:`BackupError` names the checkpoint and the
    signature that fails."""
    named = (
        f"the checkpoint of {checkpoint.get('size')} records (root "
        f"{str(checkpoint.get('root'))[:16]}…)"
    )
    root = result.anchor
    if root is None:
        raise BackupError(f"{named}: no root certificate to check its signatures against")
    note = str(checkpoint.get("note", "")).encode()
    try:
        leaf = x509.load_pem_x509_certificates(result.node_chain_pem.encode())[0]
        trust_domain = identity_of(leaf).trust_domain
        identity, log_key = read_log_signer(result.node_chain_pem, root, trust_domain, note)
        signed = parse_checkpoint(open_note(note, [log_key])[0].text)
    except (KeyStatementError, NoteError, ValueError) as exc:
        raise BackupError(f"{named}: the node's signature on it: {exc}") from None
    witnesses = [str(who) for who in checkpoint.get("cosigned_by") or []]
    if not witnesses:
        raise BackupError(f"{named} lists no witness that cosigned it")
    known = await cosigners(db)
    for who in witnesses:
        keys = known.get(who)
        if keys is None:
            raise BackupError(f"{named}: the copy holds no witness key statement of {who}")
        try:
            cosigner = read_witness_statement(keys.statement, keys.chain_pem, root, trust_domain)
            open_note(note, [cosigner.verifier])
        except (KeyStatementError, NoteError) as exc:
            raise BackupError(
                f"{named}: the cosignature of {who} does not verify under its witness key "
                f"statement: {exc}"
            ) from None
        if cosigner.identity == identity:
            raise BackupError(f"{named}: {who} is the log's own node, not a witness")
    return signed


# --- the signed report --------------------------------------------------------------------------


def report_json(
    result: Verification, *, verifier: str | None, chain_pem: str | None
) -> dict[str, Any]:
    manifest = result.manifest or {}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "verified_at": dt.datetime.now(dt.UTC).isoformat(),
        "govnode_version": software_version(),
        "backup": str(result.backup.resolve()),
        "manifest_sha256": result.manifest_sha256,
        "node": manifest.get("node"),
        "created_at": manifest.get("created_at"),
        "audit": manifest.get("audit"),
        "root": result.root,
        "ok": result.ok,
        "checks": [c.to_json() for c in result.checks],
        "verifier": verifier,
        "verifier_chain_pem": chain_pem,
    }
    if verifier is None:
        report["note"] = (
            "unsigned: no --config was given, so no node key signed this report; run verify "
            "with --config to have the verifying node sign it"
        )
    return report


def write_report(
    result: Verification,
    path: Path,
    *,
    signer: tuple[ec.EllipticCurvePrivateKey, str, str] | None,
) -> Path | None:
    """Write the report to ``path`` and, with a signer (key, identity, chain PEM), its
    detached signature beside it (``.sig``); returns the signature's path."""
    verifier, chain = (signer[1], signer[2]) if signer else (None, None)
    data = manifest_bytes(report_json(result, verifier=verifier, chain_pem=chain))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sig_path = path.with_suffix(".sig")
    if signer is None:
        sig_path.unlink(missing_ok=True)
        return None
    sig_path.write_bytes(sign(signer[0], data))
    return sig_path
