"""An audit log with a witnessed checkpoint, written straight into a node's database: records
as old as a test needs (past the three-year retention), a checkpoint signed with the node key
and cosigned with a city's witness key, as a running federation would have left them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from node.audit import (
    AuditLog,
    Checkpoints,
    CosignerKeys,
    StoredCheckpoint,
    log_origin,
    log_signer,
    read_log_signer,
    remember_cosigner,
    witness_signer,
    witness_statement,
)
from node.config import load_config
from node.pki import load_certs, load_or_create_witness_key, load_private_key
from node.storage import Database
from node.tlog import open_note
from node.tlog._witness import cosign
from tests.support.audit import entry
from tests.support.nodes import ProvinceSetup, make_city, make_province

SEGMENT = 256
#: Four years ago: past the retention of 1095 days.
OLD = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=4 * 365)


@dataclass
class ArchivedNode:
    province: ProvinceSetup
    witness: ProvinceSetup
    db_url: str

    @property
    def config(self) -> Path:
        return self.province.config_path

    @property
    def root(self) -> Path:
        return self.province.config.path(self.province.config.tls.root)


def make_node(base: Path, db_url: str, segment: int = SEGMENT) -> ArchivedNode:
    """A province (the log) with segments of ``segment`` records, and a city (its witness)."""
    province = make_province(base / "province", db_url)
    text = province.config_path.read_text(encoding="utf-8")
    province.config_path.write_text(
        text.replace("segment_records = 65536", f"segment_records = {segment}"), encoding="utf-8"
    )
    province = ProvinceSetup(province.base, province.config_path, load_config(province.config_path))
    witness = make_city(base / "city", "sqlite+aiosqlite:///unused.db", province)
    return ArchivedNode(province, witness, db_url)


async def append(node: ArchivedNode, count: int, at: dt.datetime) -> None:
    """``count`` records at ``at`` (a second apart), appended by the log itself."""
    db = await Database.open(node.db_url)
    try:
        await db.migrate()
        log = AuditLog(db)
        await log.start()
        try:
            head, _ = await log.head()
            for n in range(head, head + count, 64):
                await asyncio.gather(
                    *(
                        log.append(dataclasses.replace(entry(i), at=at + dt.timedelta(seconds=i)))
                        for i in range(n, min(n + 64, head + count))
                    )
                )
        finally:
            await log.close()
    finally:
        await db.close()


def _chain_pem(setup: ProvinceSetup) -> str:
    cfg = setup.config
    root = load_certs(cfg.path(cfg.tls.root))[0]
    return "".join(
        c.public_bytes(serialization.Encoding.PEM).decode()
        for c in load_certs(cfg.path(cfg.tls.cert))
        if c != root
    )


async def witnessed(node: ArchivedNode) -> StoredCheckpoint:
    """Sign a checkpoint of the log as it is and have the city cosign it."""
    cfg, city = node.province.config, node.witness.config
    root = load_certs(cfg.path(cfg.tls.root))[0]
    identity, _ = read_log_signer(_chain_pem(node.province), root, cfg.node.trust_domain)
    city_chain = _chain_pem(node.witness)
    city_identity, _ = read_log_signer(city_chain, root, cfg.node.trust_domain)
    witness_key = load_or_create_witness_key(city.path(city.tls.witness_key))
    statement = witness_statement(
        city_identity, load_private_key(city.path(city.tls.key)), witness_key.public_key()
    )
    db = await Database.open(node.db_url)
    try:
        await db.migrate()
        log = AuditLog(db)
        checkpoints = Checkpoints(
            db,
            log,
            log_origin(identity.host),
            log_signer(identity.host, load_private_key(cfg.path(cfg.tls.key))),
        )
        made = await checkpoints.make()
        assert made is not None
        signer = witness_signer(city_identity.host, witness_key)
        line = cosign(made.note, signer)
        _, verified = open_note(made.note + line, [signer.verifier()])
        await remember_cosigner(
            db,
            CosignerKeys(
                city_identity.uri, signer.name, city_chain, statement, dt.datetime.now(dt.UTC)
            ),
        )
        cosigned = await checkpoints.add_cosignatures(
            made.size, [(city_identity.uri, s) for s in verified]
        )
        assert cosigned is not None
        return cosigned
    finally:
        await db.close()
