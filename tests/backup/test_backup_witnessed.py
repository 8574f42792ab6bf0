"""A backup of a city whose log its province has witnessed (第三十九条): the manifest names the
newest cosigned checkpoint, and verify checks that its cosignature verifies under the witness's
key statement and that the copy's log is the history the witness saw, even after an insider
forged the cosignature or rewrote the copy, rebuilt its tree and signed the manifest again."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from pathlib import Path

from node.audit import AuditLog
from node.storage import Database
from tests.support.audit import rewrite
from tests.support.backup import backup_cli, resign
from tests.support.databases import sqlite_urls
from tests.support.nodes import federation

WAIT_S = 20.0


async def test_verify_checks_the_copy_against_the_witnessed_checkpoint(tmp_path: Path) -> None:
    async with federation(tmp_path / "fed", sqlite_urls(tmp_path), checkpoint_seconds=0.3) as fed:
        for _ in range(20):
            await fed.fuzhou.digest()
        assert fed.fuzhou.running.checkpoints is not None
        for _ in range(int(WAIT_S / 0.1)):
            cosigned = await fed.fuzhou.running.checkpoints.newest_cosigned()
            if cosigned is not None and cosigned.size >= 20:
                break
            await asyncio.sleep(0.1)
        backup = tmp_path / "backup"
        made = await asyncio.to_thread(
            backup_cli, "create", "--config", fed.fuzhou.setup.config_path, "--out", backup
        )
        assert made.returncode == 0, made.stderr
        setup = fed.fuzhou.setup
        root = setup.config.path(setup.config.tls.root)

    manifest = json.loads((backup / "manifest.json").read_text())
    checkpoint = manifest["checkpoint"]
    assert checkpoint["size"] >= 20
    assert checkpoint["cosigned_by"] == ["spiffe://350000.fujian.gov.cn/node"]
    result = await asyncio.to_thread(backup_cli, "verify", backup, "--root", root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "witnessed checkpoint" in result.stdout + result.stderr
    assert "each cosignature verified under its witness key statement" in result.stdout

    # An insider who holds the node key (not the witness's) alters the province's cosignature
    # in a copy of the manifest and signs the manifest again: the cosignature does not verify.
    forged = tmp_path / "forged"
    shutil.copytree(backup, forged)
    lines = checkpoint["note"].split("\n")
    [n] = [i for i, line in enumerate(lines) if line.startswith("— 350000.fujian.gov.cn/witness ")]
    name, signature = lines[n].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 0x01  # the key hash stays: the line is still the witness's, its signature not
    lines[n] = f"{name} {base64.b64encode(raw).decode()}"
    altered = json.loads((forged / "manifest.json").read_text())
    altered["checkpoint"]["note"] = "\n".join(lines)
    (forged / "manifest.json").write_text(json.dumps(altered, indent=2, sort_keys=True) + "\n")
    resign(forged, setup)
    result = await asyncio.to_thread(backup_cli, "verify", forged, "--root", root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"the checkpoint of {checkpoint['size']} records (root {checkpoint['root'][:16]}…): the "
        "cosignature of spiffe://350000.fujian.gov.cn/node does not verify under its witness "
        "key statement"
    ) in result.stdout + result.stderr

    # An insider rewrites record 5 in the copy, recomputes the chain, rebuilds the tree,
    # brings the manifest's audit head up to date and signs it again with the node key.
    copy = backup / "database" / "node.db"
    db = await Database.open(f"sqlite+aiosqlite:///{copy}")
    try:
        await rewrite(db, 5, "nothing to see")
        log = AuditLog(db)
        await log.start()  # takes the records into a new tree
        await log.close()
        head = await log.tree_head(manifest["audit"]["tree_size"])
        [last] = await log.query(after_sequence=head.size - 1, limit=1)
    finally:
        await db.close()
    manifest["audit"]["tree_root"] = head.root.hex()
    manifest["audit"]["chain_head"]["hash"] = last.hash
    (backup / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    resign(backup, setup)
    result = await asyncio.to_thread(backup_cli, "verify", backup, "--root", root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not the" in result.stdout + result.stderr
    assert "its witnesses cosigned" in result.stdout + result.stderr
