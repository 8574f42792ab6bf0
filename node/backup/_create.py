"""Making a backup of a node, while it may be serving (备份, 第三十九条).

The directory is written under a temporary name beside ``out`` and renamed into place once
the signed manifest is in it, so a directory called ``out`` is always a whole backup.

The audit log's tree head and chain head are read *before* the database is copied: the log
only grows, so the copy holds every record the manifest names (and perhaps a few written
while it ran), and every record acknowledged before the backup began.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.identity import identity_of
from node.backup._database import (
    Progress,
    copy_sqlite,
    dump_postgres,
    is_sqlite,
    read_state,
    shown,
    sqlite_path,
    tool,
    witnessed_checkpoint,
)
from node.backup._keys import encrypt_key, write_secret
from node.backup._manifest import (
    FORMAT,
    MANIFEST,
    SIGNATURE,
    BackupError,
    file_entry,
    manifest_bytes,
    sign,
)
from node.config import NodeConfig
from node.pki import PkiError, load_certs, load_private_key
from node.version import software_version

# Where each file goes in a backup (and, for certificates and keys, in a restored node dir).
SQLITE_COPY = "database/node.db"
POSTGRES_DUMP = "database/node.dump"
CERTS = {"cert": "tls/node.crt", "root": "tls/root.crt", "ca_cert": "tls/ca.crt"}
KEYS = {"key": "keys/node.key", "ca_key": "keys/ca.key", "root_key": "keys/root.key"}


def check_new_dir(path: Path, option: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{option} {path} exists and is not empty; name a new directory")


@dataclass(frozen=True)
class Created:
    path: Path
    manifest: dict[str, Any]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


async def create_backup(
    cfg: NodeConfig,
    config_path: Path,
    out: Path,
    *,
    passphrase: bytes | None,
    progress: Progress,
) -> Created:
    """Write a signed backup of the node ``cfg`` describes into the new directory ``out``;
    its private keys go in too, encrypted, when a ``passphrase`` is given."""
    check_new_dir(out, "--out")
    postgres = not is_sqlite(cfg.database_url)
    if postgres:
        tool("pg_dump", "backing up a node on PostgreSQL (storage.url)")
    try:
        signing_key = load_private_key(cfg.path(cfg.tls.key))
        node_cert = load_certs(cfg.path(cfg.tls.cert))[0]
    except (PkiError, OSError) as exc:
        raise BackupError(f"the node's key or certificate (tls.key, tls.cert): {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=0o700)
    try:
        identity = identity_of(node_cert).uri
        manifest = await _write(cfg, config_path, staging, identity, passphrase, progress)
        manifest_data = manifest_bytes(manifest)
        _publish(staging, out, manifest_data, sign(signing_key, manifest_data))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Created(out, manifest)


def _fsync(path: Path) -> None:
    """On disk before the backup is called finished (a file, or a directory's entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(staging: Path, out: Path, manifest: bytes, signature: bytes) -> None:
    """The manifest and its signature written last, then the whole directory renamed into
    place: a directory named ``out`` is a finished backup."""
    for name, data in ((MANIFEST, manifest), (SIGNATURE, signature)):
        (staging / name).write_bytes(data)
        _fsync(staging / name)
    for directory in {staging, *(p.parent for p in staging.rglob("*") if p.is_file())}:
        _fsync(directory)
    if out.exists():
        out.rmdir()  # empty: checked before anything was written
    os.rename(staging, out)


async def _write(
    cfg: NodeConfig,
    config_path: Path,
    staging: Path,
    identity: str,
    passphrase: bytes | None,
    progress: Progress,
) -> dict[str, Any]:
    url = cfg.database_url
    postgres = not is_sqlite(url)
    names: list[str] = []

    progress(f"reading the schema revision and the audit log's head from {shown(url)}")
    revision, audit = await read_state(url)
    if revision is None:
        raise BackupError(f"the database at {shown(url)} has no schema: nothing to back up")
    progress(f"audit log: {audit.size} records, tree root {audit.root[:16]}...")
    # Read before the copy too: the copy holds every record up to it.
    checkpoint = await witnessed_checkpoint(url)
    began = time.monotonic()
    (staging / "database").mkdir()
    if postgres:
        progress("dumping the database with pg_dump (custom format, one snapshot)...")
        await dump_postgres(url, staging / POSTGRES_DUMP)
        database_file = POSTGRES_DUMP
    else:
        source = sqlite_path(url)
        size = source.stat().st_size if source.exists() else 0
        progress(f"copying the database with SQLite's online backup ({_mib(size)})...")
        await copy_sqlite(source, staging / SQLITE_COPY)
        database_file = SQLITE_COPY
    names.append(database_file)
    size = (staging / database_file).stat().st_size
    progress(f"database copied: {_mib(size)} in {time.monotonic() - began:.1f} s")

    config_name = f"config/{config_path.name}"
    (staging / "config").mkdir()
    shutil.copyfile(config_path, staging / config_name)
    names.append(config_name)

    (staging / "tls").mkdir()
    tls: dict[str, str] = {}
    for field, name in CERTS.items():
        source_path = cfg.path(getattr(cfg.tls, field))
        if not source_path.exists() and field == "ca_cert":
            continue
        shutil.copyfile(source_path, staging / name)
        tls[field] = name
        names.append(name)

    keys: dict[str, str] | None = None
    if passphrase is not None:
        keys = {}
        (staging / "keys").mkdir(mode=0o700)
        for field, name in KEYS.items():
            configured = getattr(cfg.tls, field)
            if configured is None or not cfg.path(configured).exists():
                continue  # a city holds no root key; a node may keep its CA key elsewhere
            key = load_private_key(cfg.path(configured))
            write_secret(staging / name, encrypt_key(key, passphrase))
            keys[field] = name
            names.append(name)
        progress(f"private keys encrypted under the passphrase: {', '.join(sorted(keys))}")

    progress("computing SHA-256 digests")
    files = [file_entry(staging, name).to_json() for name in names]
    for name in names:
        _fsync(staging / name)
    return {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "govnode_version": software_version(),
        "node": {
            "identity": identity,
            "region": cfg.node.region,
            "name": cfg.node.name,
            "mode": cfg.node.mode.value,
            "trust_domain": cfg.node.trust_domain,
        },
        "database": {
            "backend": "postgresql" if postgres else "sqlite",
            "file": database_file,
            "source": shown(url),
            "schema_revision": revision,
        },
        "audit": audit.to_json(),
        # The newest checkpoint a witness cosigned (None before any): verify checks that the
        # copy's log extends it.
        "checkpoint": checkpoint,
        "config": config_name,
        "tls": tls,
        "keys": keys,
        "files": files,
    }
