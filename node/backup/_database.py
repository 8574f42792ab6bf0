"""Copying a node's database while it serves, restoring a copy, and checking what a copy holds.

- SQLite: the online backup API (``sqlite3.Connection.backup`` with every page in one step,
  in a worker thread). One step holds a read snapshot for the whole copy, so the copy is one
  consistent state; in WAL mode that blocks no writer. The copy is switched to
  ``journal_mode=DELETE`` so it is one file with no ``-wal``/``-shm`` beside it.
- PostgreSQL: ``pg_dump --format=custom`` (one consistent snapshot, taken online) and
  ``pg_restore`` into an empty database. Both are found on PATH; the password of the node's
  URL goes to them in ``PGPASSWORD``, never on a command line others can read.

What a copy holds is read through the node's own code (node.storage, node.audit): the
schema revision, the audit chain recomputed from the first record, and the audit tree's root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import URL, make_url

from node.audit import AuditLog, newest_cosigned
from node.backup._manifest import BackupError
from node.storage import Database

Progress = Callable[[str], None]

GENESIS_HASH = "0" * 64
_INSTALL = (
    "install PostgreSQL's client tools, the same major version as the server or newer "
    "(Debian/Ubuntu: apt-get install postgresql-client; RHEL: dnf install postgresql), or "
    "put their directory on PATH"
)


# --- URLs and tools -------------------------------------------------------------------------


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise BackupError(f"storage url {url!r} names no SQLite file")
    return Path(database)


def shown(url: str) -> str:
    """The URL with its password hidden (safe to print and to record)."""
    return make_url(url).render_as_string(hide_password=True)


def libpq(url: str | URL) -> tuple[str, dict[str, str]]:
    """A node's ``postgresql+asyncpg://`` URL as a libpq URL for pg_dump/pg_restore (without
    the password) and the environment carrying the password."""
    parsed = make_url(url)
    env = {**os.environ}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def asyncpg_dsn(url: str | URL) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def tool(name: str, why: str) -> str:
    """The path of a PostgreSQL client tool, or a refusal naming it and how to get it."""
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found on PATH: {why} needs it; {_INSTALL}")
    return found


def _run(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BackupError(
            f"{what} failed (exit {result.returncode}): {' / '.join(detail[-3:]) or 'no output'}"
        )


# --- reading what a database holds ------------------------------------------------------------


@dataclass(frozen=True)
class AuditState:
    """The audit log of a database: its Merkle tree over the first ``size`` records and the
    chain's link at record ``size`` (sequence, hash)."""

    size: int
    root: str
    head_hash: str

    def to_json(self) -> dict[str, object]:
        return {
            "tree_size": self.size,
            "tree_root": self.root,
            "chain_head": {"sequence": self.size, "hash": self.head_hash},
        }


async def audit_state(db: Database) -> AuditState:
    """The tree head as it stands and the record at its size, read tree first so both name
    the same record even while the node appends."""
    log = AuditLog(db)
    head = await log.tree_head()
    if head.size == 0:
        return AuditState(0, head.root.hex(), GENESIS_HASH)
    [record] = await log.query(after_sequence=head.size - 1, limit=1)
    return AuditState(head.size, head.root.hex(), record.hash)


async def read_state(url: str) -> tuple[str | None, AuditState]:
    """(schema revision, audit state) of the database at ``url``."""
    db = await Database.open(url)
    try:
        return await db.current_revision(), await audit_state(db)
    finally:
        await db.close()


async def witnessed_checkpoint(url: str) -> dict[str, object] | None:
    """The newest checkpoint of the node's log a witness cosigned, as the manifest names it
    (the signed note whole, so a verifier checks its signatures), or None."""
    db = await Database.open(url)
    try:
        if await db.current_revision() is None:
            return None
        stored = await newest_cosigned(db)
    finally:
        await db.close()
    if stored is None:
        return None
    return {
        "size": stored.size,
        "root": stored.root.hex(),
        "cosigned_by": list(stored.cosigned_by),
        "note": stored.note.decode(),
    }


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"the node's SQLite database {source} does not exist")
    # Read-write, though it only reads: a read-only connection cannot open a WAL database
    # whose -shm file is missing (a node that is not running).
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            # pages=-1: everything in one step, under one read snapshot (a copy in several
            # steps restarts whenever the serving node writes, and might never finish).
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode = DELETE")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()


async def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a (possibly serving) SQLite database, as one file."""
    try:
        await asyncio.to_thread(_sqlite_copy, source, target)
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source}: {exc}") from None


def sqlite_integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a file: "ok" or SQLite's list of problems."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return "; ".join(str(r[0]) for r in rows[:5])


# --- PostgreSQL -------------------------------------------------------------------------------


async def dump_postgres(url: str, target: Path) -> None:
    """``pg_dump --format=custom`` of the database at ``url`` into ``target``."""
    pg_dump = tool("pg_dump", "backing up a node on PostgreSQL (storage.url)")
    dsn, env = libpq(url)
    command = [pg_dump, "--format=custom", "--no-password", f"--file={target}", f"--dbname={dsn}"]
    await asyncio.to_thread(_run, command, env, "pg_dump")


async def restore_postgres(dump: Path, url: str, *, clean: bool = False) -> None:
    """``pg_restore`` of a custom-format dump into the database at ``url``, in one
    transaction, stopping at the first error."""
    pg_restore = tool("pg_restore", "restoring a PostgreSQL backup")
    dsn, env = libpq(url)
    command = [
        pg_restore,
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--no-password",
        f"--dbname={dsn}",
    ]
    if clean:
        command += ["--clean", "--if-exists"]
    await asyncio.to_thread(_run, [*command, str(dump)], env, "pg_restore")


async def table_count(url: str) -> int:
    """How many tables the database at ``url`` holds outside the system schemas."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await connection.close()
    return int(count)


@contextlib.asynccontextmanager
async def scratch_postgres(server_url: str) -> AsyncIterator[str]:
    """An empty database ``govnode_verify_<hex>`` on the server of ``server_url``; its URL.
    Dropped afterwards, also when what ran in it failed."""
    server = make_url(server_url)
    name = f"govnode_verify_{uuid.uuid4().hex[:16]}"
    try:
        admin = await asyncpg.connect(asyncpg_dsn(server))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupError(
            f"cannot reach PostgreSQL at {shown(server_url)} for a scratch database: {exc}"
        ) from None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise BackupError(
            f"cannot create a scratch database on {shown(server_url)}: {exc} (the user needs "
            "CREATEDB)"
        ) from None
    finally:
        await admin.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(asyncpg_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
