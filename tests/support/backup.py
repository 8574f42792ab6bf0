"""Backups for tests: the `govnode backup` command as a process of its own, a passphrase file,
a node with some audit records to back up, and re-signing a changed backup."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from govnode.v1 import catalog_pb2, catalog_pb2_grpc

from tests.support.cli import run_govnode
from tests.support.nodes import MARKET_REGULATION, ProvinceSetup, channel, start

PASSPHRASE = "correct horse battery staple"


def backup_cli(
    *args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`govnode backup ARGS...` as an operator runs it; ``env`` adds to the environment."""
    return run_govnode(
        ["backup", *map(str, args)],
        {**os.environ, "GOVNODE_LOG__FORMAT": "json", **(env or {})},
        timeout=timeout,
    )


def passphrase_file(directory: Path, passphrase: str = PASSPHRASE) -> Path:
    path = directory / "passphrase"
    path.write_text(passphrase + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def audited_calls(setup: ProvinceSetup, calls: int = 5) -> None:
    """Serve ``setup`` in this process for a moment and make ``calls`` catalog reads, each of
    which the node audits (so the backup has an audit log to check)."""

    async def run() -> None:
        node = await start(setup)
        try:
            files = setup.agency(MARKET_REGULATION, "福建省市场监督管理局")
            async with channel(node, files) as ch:
                stub = catalog_pb2_grpc.CatalogServiceStub(ch)
                for _ in range(calls):
                    await stub.ListResources(catalog_pb2.ListResourcesRequest())
        finally:
            await node.stop(grace=0)

    asyncio.run(run())


def resign(backup: Path, setup: ProvinceSetup) -> None:
    """Bring the manifest's digests up to date and sign it again with the node's key: what an
    insider holding the key could do after changing the database copy."""
    manifest = json.loads((backup / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (backup / entry["name"]).read_bytes()
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (backup / "manifest.json").write_text(text, encoding="utf-8")
    key = serialization.load_pem_private_key(
        setup.config.path(setup.config.tls.key).read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
    (backup / "manifest.sig").write_bytes(signature)
