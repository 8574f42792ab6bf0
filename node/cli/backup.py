"""``govnode backup``: back a node up while it serves, verify a backup by restoring it into a
scratch database, and restore one as a node directory (备份恢复机制, 第三十九条)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import typer

from gateway.identity import identity_of
from node.backup import (
    REPORT,
    BackupError,
    Verification,
    check_passphrase,
    create_backup,
    restore_backup,
    verify_backup,
    write_report,
)
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.pki import load_certs, load_private_key

PASSPHRASE_ENV = "GOVNODE_BACKUP_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

app = typer.Typer(
    help=(
        "Back up a node while it serves, verify a backup by restoring it into a scratch "
        "database, and restore one (备份恢复, 第三十九条). A backup is a directory: the "
        "database, the config, the certificates, a manifest of every file's SHA-256 and of "
        "the audit log's head, signed with the node's key."
    ),
    no_args_is_help=True,
)

PASSPHRASE_FILE_OPTION = typer.Option(
    None,
    "--passphrase-file",
    help=(
        "A file whose first line is the passphrase the private keys are encrypted under "
        f"(at least 12 bytes). Or set {PASSPHRASE_ENV}. The passphrase is never printed."
    ),
)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _passphrase(path: Path | None) -> bytes | None:
    if path is not None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"--passphrase-file {path}: {exc.strerror}") from None
        first = data.split(b"\n", 1)[0].removesuffix(b"\r")
        return check_passphrase(first, f"--passphrase-file {path}")
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return check_passphrase(value.encode("utf-8"), PASSPHRASE_ENV)
    return None


@app.command("create")
def create(
    config: Path = CONFIG_OPTION,
    out: Path = typer.Option(
        ..., "--out", help="A new (or empty) directory to write the backup into."
    ),
    with_keys: bool = typer.Option(
        False,
        "--with-keys",
        help=(
            "Also back up the private keys (node, CA, and the root CA's at the province), "
            "encrypted under a passphrase (--passphrase-file or "
            f"{PASSPHRASE_ENV}). Without it the backup holds no private key."
        ),
    ),
    passphrase_file: Path | None = PASSPHRASE_FILE_OPTION,
) -> None:
    """Back up this node while it may be serving: a consistent copy of its database (SQLite's
    online backup, or pg_dump), its config and certificates, and a signed manifest."""
    cfg = load(config)
    passphrase = _passphrase(passphrase_file)
    if with_keys and passphrase is None:
        raise UserError(
            f"--with-keys needs a passphrase to encrypt the keys under: --passphrase-file FILE "
            f"or the environment variable {PASSPHRASE_ENV}"
        )
    if passphrase_file is not None and not with_keys:
        raise UserError("--passphrase-file is for --with-keys: without it no key is backed up")
    created = asyncio.run(
        create_backup(
            cfg, config, out, passphrase=passphrase if with_keys else None, progress=_progress
        )
    )
    manifest = created.manifest
    audit = manifest["audit"]
    echo(f"backup written to {created.path}")
    echo(f"  node        {manifest['node']['identity']} ({manifest['node']['name']})")
    echo(
        f"  database    {manifest['database']['backend']}, schema "
        f"{manifest['database']['schema_revision']}"
    )
    echo(f"  audit log   {audit['tree_size']} records, tree root {audit['tree_root']}")
    keys = "encrypted" if manifest["keys"] else "none"
    echo(f"  files       {len(manifest['files'])}, private keys: {keys}")
    echo(f"check it with: govnode backup verify {created.path} --root ROOT.pem")


def _print(result: Verification) -> None:
    for check in result.checks:
        echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")


@app.command("verify")
def verify(
    backup: Path = typer.Argument(..., help="The backup directory."),
    root: Path | None = typer.Option(
        None,
        "--root",
        help=(
            "The province root certificate to check the backup's signer against. Without it "
            "the root certificate in the backup is used, which shows the backup is whole but "
            "not whose it is."
        ),
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help=(
            "The config of the node doing the check: its key signs the report. Without it the "
            "report is written unsigned, saying so."
        ),
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help=(
            "PostgreSQL backups: a URL on the server to create the scratch database on (the "
            "user needs CREATEDB; default: the server of --config's storage.url, else the "
            "server the backup was taken from)."
        ),
    ),
    report: Path | None = typer.Option(
        None, "--report", help=f"Where to write the report (default: BACKUP/{REPORT})."
    ),
) -> None:
    """Check a backup: the manifest's signature and certificate chain, every file's SHA-256,
    then restore the database into a scratch place and check its integrity, schema revision
    and audit log (chain, tree root). Exit 1 naming what failed."""
    signer = None
    scratch = database_url
    if config is not None:
        cfg = load(config)
        chain_path = cfg.path(cfg.tls.cert)
        signer = (
            load_private_key(cfg.path(cfg.tls.key)),
            identity_of(load_certs(chain_path)[0]).uri,
            chain_path.read_text(encoding="ascii"),
        )
        if scratch is None and cfg.database_url.startswith("postgresql"):
            scratch = cfg.database_url
    result = asyncio.run(
        verify_backup(backup, root=root, scratch_server=scratch, progress=_progress)
    )
    _print(result)
    report_path = report or backup / REPORT
    try:
        signature = write_report(result, report_path, signer=signer)
    except OSError as exc:
        raise BackupError(f"cannot write the report {report_path}: {exc.strerror}") from None
    if signature is None:
        echo(f"report: {report_path} (unsigned: give --config to have this node sign it)")
    else:
        echo(f"report: {report_path}, signed by {signer[1] if signer else ''} ({signature.name})")
    if not result.ok:
        failed = ", ".join(c.name for c in result.failures) or "checks incomplete"
        echo(f"backup NOT verified: {failed}")
        raise typer.Exit(1)
    echo("backup verified")


@app.command("restore")
def restore(
    backup: Path = typer.Argument(..., help="The backup directory."),
    new_dir: Path = typer.Option(
        ..., "--dir", help="The node directory to restore into (new or empty)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help=(
            "Restore into a non-empty --dir (overwriting the files a restore writes), or into "
            "a PostgreSQL database that has tables (the backup's replace them)."
        ),
    ),
    root: Path | None = typer.Option(
        None, "--root", help="The province root certificate to verify the backup against."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help=(
            "PostgreSQL backups: the database to restore into, "
            "postgresql+asyncpg://USER@HOST:PORT/DB (empty unless --force)."
        ),
    ),
    passphrase_file: Path | None = PASSPHRASE_FILE_OPTION,
) -> None:
    """Verify a backup (as `backup verify` does), then write a node directory from it that
    `govnode serve --config DIR/govnode.toml` runs."""
    passphrase = _passphrase(passphrase_file)
    restored = asyncio.run(
        restore_backup(
            backup,
            new_dir,
            force=force,
            root=root,
            database_url=database_url,
            passphrase=passphrase,
            progress=_progress,
        )
    )
    _print(restored.verification)
    echo(f"restored into {new_dir}: database {restored.database}")
    if restored.keys_restored:
        echo(f"  keys (0600): {', '.join(restored.keys_restored)}")
    for note in restored.notes:
        echo(f"  note: {note}")
    echo(f"start it with: govnode serve --config {restored.config_path}")
