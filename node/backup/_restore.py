"""Restoring a verified backup as a node directory that ``govnode serve`` runs (恢复, 第三十九条).

The backup is verified first, scratch restore included (:func:`verify_backup`); nothing is
written unless every check passed. The node directory then gets the config (its ``[tls]``
paths pointed at ``tls/`` in the new directory and its ``[storage] url`` at the restored
database), the certificates, the keys (decrypted, mode 0600) when the backup holds them and
the passphrase is given, and the database: ``node.db`` beside the config for SQLite, or the
PostgreSQL database ``--database-url`` names.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from node.audit import mark_restored
from node.backup._database import (
    Progress,
    is_sqlite,
    read_state,
    restore_postgres,
    shown,
    table_count,
)
from node.backup._keys import decrypt_key, key_pem, write_secret
from node.backup._manifest import MANIFEST, BackupError, load_manifest, safe_name
from node.backup._verify import Verification, verify_backup
from node.config import ConfigError, load_config
from node.storage import Database

RESTORED_DB = "node.db"
# Where the restored config finds its files, relative to the config (node.config).
_TLS_PATHS = {
    "cert": "tls/node.crt",
    "key": "tls/node.key",
    "root": "tls/root.crt",
    "ca_cert": "tls/ca.crt",
    "ca_key": "tls/ca.key",
    "root_key": "tls/root.key",
}


@dataclass
class Restored:
    config_path: Path
    database: str  # where the database went (password hidden)
    verification: Verification
    keys_restored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _check_target(new_dir: Path, *, force: bool) -> None:
    if new_dir.exists() and not new_dir.is_dir():
        raise BackupError(f"--dir {new_dir} is a file, not a directory")
    if new_dir.exists() and any(new_dir.iterdir()) and not force:
        raise BackupError(
            f"--dir {new_dir} is not empty; restore into a new directory, or pass --force to "
            "overwrite the files a restore writes there"
        )


async def restore_backup(
    backup: Path,
    new_dir: Path,
    *,
    force: bool,
    root: Path | None,
    database_url: str | None,
    passphrase: bytes | None,
    progress: Progress,
) -> Restored:
    _check_target(new_dir, force=force)
    try:
        manifest = load_manifest((backup / MANIFEST).read_bytes())
    except OSError as exc:
        raise BackupError(f"{backup / MANIFEST}: {exc.strerror}") from None
    postgres = manifest["database"].get("backend") == "postgresql"
    if postgres and database_url is None:
        raise BackupError(
            "the backup is of a node on PostgreSQL: name the database to restore into with "
            "--database-url postgresql+asyncpg://USER@HOST:PORT/DB (an empty database)"
        )
    if not postgres and database_url is not None:
        raise BackupError(
            "the backup is of a node on SQLite, restored as node.db beside the config; "
            "--database-url is for PostgreSQL backups"
        )
    if database_url is not None:
        if is_sqlite(database_url) or not database_url.startswith("postgresql+asyncpg://"):
            raise BackupError("--database-url must be postgresql+asyncpg://USER@HOST:PORT/DB")
        tables = await table_count(database_url)
        if tables and not force:
            raise BackupError(
                f"--database-url {shown(database_url)} holds {tables} tables; restore into an "
                "empty database, or pass --force to replace what the backup holds there"
            )

    keys = _decrypt_keys(backup, manifest, passphrase)

    verification = await verify_backup(
        backup, root=root, scratch_server=database_url, progress=progress
    )
    if not verification.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in verification.failures)
        raise BackupError(
            f"the backup did not verify, nothing was restored: {failed or 'checks incomplete'}"
        )
    manifest = verification.manifest or manifest

    restored_keys = _write_tls(backup, new_dir, manifest, keys, force=force)

    database_file = backup / safe_name(manifest["database"]["file"])
    if postgres:
        assert database_url is not None
        progress(f"restoring the database into {shown(database_url)} with pg_restore")
        await restore_postgres(database_file, database_url, clean=force)
        url = database_url
        where = shown(database_url)
    else:
        target = new_dir / RESTORED_DB
        for stale in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
            # A WAL left from another database would be applied to the restored one.
            stale.unlink(missing_ok=True)
        progress(f"copying the database to {target}")
        shutil.copyfile(database_file, target)
        url = f"sqlite+aiosqlite:///{RESTORED_DB}"
        where = str(target)

    config_name = Path(safe_name(manifest["config"])).name
    config_path = new_dir / config_name
    text = (backup / safe_name(manifest["config"])).read_text(encoding="utf-8")
    original = tomllib.loads(text)
    paths = {
        k: v
        for k, v in _TLS_PATHS.items()
        if k != "root_key" or original.get("tls", {}).get("root_key") is not None
    }
    text = set_keys(text, "tls", paths)
    text = set_keys(text, "storage", {"url": url})
    config_path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise BackupError(f"the restored config does not load: {exc}") from None

    revision, audit = await read_state(cfg.database_url)
    size = int(manifest["audit"]["tree_size"])
    if revision != manifest["database"]["schema_revision"] or audit.size < size:
        raise BackupError(
            f"the restored database at {where} is not what was verified: schema {revision}, "
            f"{audit.size} audit records (expected {manifest['database']['schema_revision']}, "
            f"at least {size})"
        )
    # The node asks its witnesses what they cosigned before it signs a checkpoint again: a
    # log shorter than that goes on under a new origin naming the gap (node.audit._restart).
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        await mark_restored(db, audit.size)
    finally:
        await db.close()
    notes = []
    if manifest.get("keys") and passphrase is None:
        notes.append(
            "the backup holds the private keys, encrypted: they were not restored (give the "
            "passphrase with --passphrase-file or GOVNODE_BACKUP_PASSPHRASE to restore them)"
        )
    missing = [
        f"{p} (tls.{k})"
        for k, p in paths.items()
        if k in ("key", "ca_key", "root_key") and not (new_dir / p).exists()
    ]
    if missing:
        notes.append(
            "put these private keys in place before `govnode serve`: " + ", ".join(missing)
        )
    return Restored(config_path, where, verification, restored_keys, notes)


def _write_tls(
    backup: Path,
    new_dir: Path,
    manifest: dict[str, Any],
    keys: dict[str, ec.EllipticCurvePrivateKey],
    *,
    force: bool,
) -> list[str]:
    """The certificates (0644) and keys (0600) in ``new_dir/tls``; the keys' paths."""
    (new_dir / "tls").mkdir(mode=0o700, parents=True, exist_ok=True)
    tls: dict[str, str] = manifest.get("tls") or {}
    for field_name, name in tls.items():
        if field_name not in ("cert", "root", "ca_cert"):
            raise BackupError(f"{MANIFEST}: unknown certificate {field_name!r} in tls")
        target = new_dir / _TLS_PATHS[field_name]
        shutil.copyfile(backup / safe_name(name), target)
        os.chmod(target, 0o644)
    written = []
    for field_name, key in keys.items():
        write_secret(new_dir / _TLS_PATHS[field_name], key_pem(key), overwrite=force)
        written.append(_TLS_PATHS[field_name])
    return written


def _decrypt_keys(
    backup: Path, manifest: dict[str, Any], passphrase: bytes | None
) -> dict[str, ec.EllipticCurvePrivateKey]:
    """Every key of the backup, decrypted before anything is written: a wrong passphrase
    stops the restore at once."""
    listed = manifest.get("keys") or {}
    if passphrase is None or not listed:
        return {}
    out = {}
    for field_name, name in listed.items():
        if field_name not in ("key", "ca_key", "root_key"):
            raise BackupError(f"{MANIFEST}: unknown key {field_name!r}")
        path = backup / safe_name(name)
        out[field_name] = decrypt_key(path.read_bytes(), passphrase, name)
    return out


# --- editing the config in place -----------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_keys(text: str, section: str, values: dict[str, str]) -> str:
    """``text`` (TOML) with ``values`` set as strings in ``[section]``, its comments and the
    rest of the file kept: a key's line is replaced where it is, a missing key is added at
    the top of its section (and a missing section at the end of the file)."""
    lines = text.splitlines()
    current = None
    header = None
    pending = dict(values)
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            if current == section:
                header = i
            continue
        if current != section:
            continue
        for key in list(pending):
            if re.match(rf"^\s*{re.escape(key)}\s*=", line):
                lines[i] = f"{key} = {_toml_string(pending.pop(key))}"
    added = [f"{k} = {_toml_string(v)}" for k, v in pending.items()]
    if added and header is None:
        lines += ["", f"[{section}]", *added]
    elif added:
        assert header is not None
        lines[header + 1 : header + 1] = added
    out = "\n".join(lines) + "\n"
    parsed = tomllib.loads(out).get(section, {})
    for key, value in values.items():
        if parsed.get(key) != value:
            raise BackupError(f"could not set {section}.{key} in the restored config")
    return out
