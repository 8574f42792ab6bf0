"""What `govnode backup verify` and `restore` refuse: a damaged, altered or incomplete backup, a
signer from another province, an occupied directory, keys without the right passphrase; and
what `create` refuses: an occupied --out, --with-keys without a passphrase, PostgreSQL without
pg_dump."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import make_url

from bench.databases import fresh_postgres_database, postgres_url
from tests.support.backup import audited_calls, backup_cli, passphrase_file, resign
from tests.support.cli import assert_one_line_error
from tests.support.databases import POSTGRES_SKIP
from tests.support.nodes import ProvinceSetup, make_province

CALLS = 5


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProvinceSetup, Path, Path]]:
    """A province on SQLite with audited calls, and one backup of it with its keys (made once;
    each test works on its own copy)."""
    base = tmp_path_factory.mktemp("made")
    setup = make_province(base / "province", f"sqlite+aiosqlite:///{base / 'province.db'}")
    audited_calls(setup, CALLS)
    secret = passphrase_file(base)
    out = base / "backup"
    result = backup_cli(
        "create", "--config", setup.config_path, "--out", out, "--with-keys",
        "--passphrase-file", secret,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield setup, out, secret


@pytest.fixture
def backup(made: tuple[ProvinceSetup, Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "backup"
    shutil.copytree(made[1], copy)
    return copy


def verify(backup: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return backup_cli("verify", backup, *args)


def failed_check(result: subprocess.CompletedProcess[str], name: str) -> str:
    """The detail of the failed check ``name`` in verify's output (which exited 1)."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"FAIL  {name}: ")]
    assert lines, result.stdout
    return lines[0]


def checks_run(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The names of the checks verify made, in order (its lines "ok    NAME: ..." and
    "FAIL  NAME: ...")."""
    return [
        line[6:].split(":")[0]
        for line in result.stdout.splitlines()
        if line.startswith(("ok    ", "FAIL  "))
    ]


# --- what verify checks -------------------------------------------------------------------


def test_a_whole_backup_verifies_and_the_report_says_what_was_checked(
    made: tuple[ProvinceSetup, Path, Path], backup: Path
) -> None:
    setup = made[0]
    result = verify(backup, "--root", setup.config.path(setup.config.tls.root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert checks_run(result) == [
        "manifest", "certificate chain", "signature", "files", "restore", "integrity",
        "schema revision", "audit chain", "audit head",
    ]  # fmt: skip
    assert "PRAGMA integrity_check: ok" in result.stdout
    assert "backup verified" in result.stdout
    # The audit log the manifest names: every call audited before the backup began.
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["audit"]["tree_size"] >= CALLS
    assert manifest["checkpoint"] is None
    report = json.loads((backup / "verify-report.json").read_text())
    assert report["ok"] is True
    assert report["verifier"] is None and "unsigned" in report["note"]
    assert not (backup / "verify-report.sig").exists()
    assert "unsigned" in result.stdout


def test_a_flipped_byte_in_the_database_copy_is_refused_naming_the_file(backup: Path) -> None:
    database = backup / "database" / "node.db"
    data = bytearray(database.read_bytes())
    data[len(data) // 2] ^= 0x01
    database.write_bytes(bytes(data))
    result = verify(backup)
    assert "database/node.db does not match the manifest" in failed_check(result, "files")
    # Nothing of a damaged backup is restored.
    assert "restore" not in checks_run(result)
    assert "backup NOT verified: files" in result.stdout
    assert json.loads((backup / "verify-report.json").read_text())["ok"] is False


def test_a_missing_file_is_refused_naming_it(backup: Path) -> None:
    (backup / "tls" / "ca.crt").unlink()
    result = verify(backup)
    assert "tls/ca.crt is missing" in failed_check(result, "files")


def test_a_tampered_manifest_is_refused_by_its_signature(backup: Path) -> None:
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["audit"]["tree_size"] -= 1  # claim a shorter log: what an intruder would hide
    (backup / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    result = verify(backup)
    assert "the signature does not verify" in failed_check(result, "signature")
    assert "files" not in checks_run(result)


@pytest.mark.parametrize(
    ("change", "check", "says"),
    [
        (
            "UPDATE audit_record SET caller = 'spiffe://350000.fujian.gov.cn/agency/x' "
            "WHERE sequence = 2",
            "audit chain",
            "broken at record #2",
        ),
        (
            "DELETE FROM audit_record WHERE sequence = (SELECT max(sequence) FROM audit_record)",
            "audit head",
            "records, the manifest names",
        ),
    ],
    ids=["altered-record", "records-cut-from-the-end"],
)
def test_an_audit_log_changed_in_the_copy_fails_even_when_signed_again(
    made: tuple[ProvinceSetup, Path, Path], backup: Path, change: str, check: str, says: str
) -> None:
    database = sqlite3.connect(backup / "database" / "node.db")
    with database:
        database.execute(change)
    database.close()
    resign(backup, made[0])
    result = verify(backup)
    assert says in failed_check(result, check)
    assert checks_run(result)[:4] == ["manifest", "certificate chain", "signature", "files"]


def test_a_backup_signed_under_another_province_is_refused_against_our_root(
    backup: Path, tmp_path: Path
) -> None:
    other = make_province(tmp_path / "other", f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    result = verify(backup, "--root", other.config.path(other.config.tls.root))
    detail = failed_check(result, "certificate chain")
    assert "does not lead to the root certificate" in detail


def test_a_report_verified_with_a_config_is_signed_by_that_node(
    made: tuple[ProvinceSetup, Path, Path], backup: Path
) -> None:
    setup = made[0]
    result = verify(backup, "--config", setup.config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    data = (backup / "verify-report.json").read_bytes()
    report = json.loads(data)
    assert report["verifier"] == "spiffe://350000.fujian.gov.cn/node"
    leaf = x509.load_pem_x509_certificates(report["verifier_chain_pem"].encode())[0]
    public_key = leaf.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify((backup / "verify-report.sig").read_bytes(), data, ec.ECDSA(hashes.SHA256()))


# --- restore ------------------------------------------------------------------------------


def test_restore_refuses_a_non_empty_directory_without_force(
    made: tuple[ProvinceSetup, Path, Path], backup: Path, tmp_path: Path
) -> None:
    target = tmp_path / "node"
    target.mkdir()
    (target / "notes.txt").write_text("someone's files")
    result = backup_cli("restore", backup, "--dir", target)
    assert_one_line_error(result, "--dir", "is not empty", "--force")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]

    forced = backup_cli("restore", backup, "--dir", target, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (target / "notes.txt").exists() and (target / "node.db").exists()
    # Without the passphrase the keys stay in the backup, and restore says what to do.
    assert "not restored" in forced.stdout and "tls/node.key" in forced.stdout
    assert not (target / "tls" / "node.key").exists()


def test_keys_are_restored_only_with_the_right_passphrase(
    made: tuple[ProvinceSetup, Path, Path], backup: Path, tmp_path: Path
) -> None:
    setup, _, secret = made
    wrong = passphrase_file(tmp_path, "not the passphrase at all")
    refused = backup_cli("restore", backup, "--dir", tmp_path / "a", "--passphrase-file", wrong)
    assert_one_line_error(refused, "cannot decrypt", "wrong passphrase")
    assert not (tmp_path / "a").exists()  # nothing written

    restored = backup_cli("restore", backup, "--dir", tmp_path / "b", "--passphrase-file", secret)
    assert restored.returncode == 0, restored.stderr
    tls = tmp_path / "b" / "tls"
    for name in ("node.key", "ca.key", "root.key"):
        assert stat.S_IMODE((tls / name).stat().st_mode) == 0o600
        original = setup.config.base_dir / "tls" / name
        # The key as the node had it (the backup's copy is encrypted, this one is not).
        assert (tls / name).read_bytes() == original.read_bytes()
    encrypted = (backup / "keys" / "node.key").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in encrypted
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(encrypted, password=b"not the passphrase at all")
    # The restored config points at the restored files, relative to itself.
    config = (tmp_path / "b" / "govnode.toml").read_text()
    assert 'url = "sqlite+aiosqlite:///node.db"' in config
    assert 'key = "tls/node.key"' in config


# --- what create refuses ------------------------------------------------------------------


def test_with_keys_needs_a_passphrase(
    made: tuple[ProvinceSetup, Path, Path], tmp_path: Path
) -> None:
    setup = made[0]
    result = backup_cli(
        "create", "--config", setup.config_path, "--out", tmp_path / "b", "--with-keys",
        env={"GOVNODE_BACKUP_PASSPHRASE": ""},
    )  # fmt: skip
    assert_one_line_error(result, "--with-keys needs a passphrase", "GOVNODE_BACKUP_PASSPHRASE")
    assert not (tmp_path / "b").exists()
    short = backup_cli(
        "create", "--config", setup.config_path, "--out", tmp_path / "b", "--with-keys",
        env={"GOVNODE_BACKUP_PASSPHRASE": "short"},
    )  # fmt: skip
    assert_one_line_error(short, "at least 12")
    assert "short" not in short.stderr  # the passphrase is never echoed


def test_create_refuses_an_occupied_out_directory(
    made: tuple[ProvinceSetup, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "old").write_text("")
    result = backup_cli("create", "--config", made[0].config_path, "--out", out)
    assert_one_line_error(result, "--out", "is not empty")


def test_a_postgresql_node_without_pg_dump_is_told_what_to_install(tmp_path: Path) -> None:
    # No server is needed: the tool is looked for before anything else.
    setup = make_province(tmp_path / "pg", "postgresql+asyncpg://govnode@127.0.0.1:1/govnode")
    empty = tmp_path / "bin"
    empty.mkdir()
    result = backup_cli(
        "create", "--config", setup.config_path, "--out", tmp_path / "b", env={"PATH": str(empty)}
    )
    assert_one_line_error(result, "pg_dump not found on PATH", "postgresql-client")
    assert not (tmp_path / "b").exists()


async def scratch_databases() -> set[str]:
    url = postgres_url()
    assert url is not None
    connection = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(False)
    )
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'govnode_verify_%'"
        )
    finally:
        await connection.close()
    return {row["datname"] for row in rows}


async def test_the_scratch_postgresql_database_is_dropped_when_the_restore_fails(
    tmp_path: Path,
) -> None:
    base = postgres_url()
    if base is None:
        pytest.skip(POSTGRES_SKIP)
    async with fresh_postgres_database(base) as url:
        setup = make_province(tmp_path / "province", url)
        await asyncio.to_thread(audited_calls, setup, 2)
        out = tmp_path / "backup"
        created = await asyncio.to_thread(
            backup_cli, "create", "--config", setup.config_path, "--out", out
        )
        assert created.returncode == 0, created.stderr
        # A dump cut short, re-signed: every digest matches, but it does not restore.
        dump = out / "database" / "node.dump"
        dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])
        resign(out, setup)
        before = await scratch_databases()
        result = await asyncio.to_thread(verify, out)
        assert "pg_restore failed" in failed_check(result, "restore")
        assert await scratch_databases() == before
