"""An audit log with a witnessed checkpoint, written straight into a node's database: records
as old as a run needs (past the three-year retention), a checkpoint signed with the node key
and cosigned with a city's witness key, as a running federation would have left them. What
bench.audit_archive measures, and what the archive tests (tests/audit/test_archive.py) start
from."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.audit import (
    AuditEntry,
    AuditLog,
    Checkpoints,
    CosignerKeys,
    Operation,
    StoredCheckpoint,
    log_origin,
    log_signer,
    read_log_signer,
    remember_cosigner,
    request_digest,
    witness_signer,
    witness_statement,
)
from node.config import NodeConfig, load_config
from node.pki import (
    admit_city,
    load_certs,
    load_chain_pem,
    load_or_create_witness_key,
    load_private_key,
    prepare_city,
    provision_province,
)
from node.ports import free_port
from node.storage import Database
from node.tlog import cosign, open_note

SEGMENT = 256
#: Four years ago: past the retention of 1095 days.
OLD = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=4 * 365)
TRUST_DOMAIN = "fujian.gov.cn"


def audit_entry(n: int, at: dt.datetime) -> AuditEntry:
    """The ``n``-th record of a province agency's Verify calls, made at ``at``."""
    return AuditEntry(
        caller="spiffe://350000.fujian.gov.cn/agency/11350000003591001X",
        method="/govnode.v1.SharingService/Verify",
        operation=Operation.QUERY,
        outcome="OK",
        request_digest=request_digest(f"request {n}".encode()),
        resource_code="350000-1-000001",
        request_id=f"req-{n}",
        detail={"n": n},
        at=at,
    )


@dataclass(frozen=True)
class ArchivedNode:
    """A province node (the log, not running) and a city admitted by it (its witness)."""

    config: Path
    log: NodeConfig
    witness: NodeConfig
    db_url: str

    @property
    def root(self) -> Path:
        return self.log.path(self.log.tls.root)


def _use_database(config_path: Path, db_url: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )


def _loopback() -> dict[str, Any]:
    """Where a node of the run listens, and the names its certificate serves."""
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "trust_domain": TRUST_DOMAIN,
        "hosts": ["127.0.0.1", "localhost"],
    }


def make_node(base: Path, db_url: str, segment: int = SEGMENT) -> ArchivedNode:
    """A province (the log, on ``db_url``) with segments of ``segment`` records, and a city
    (its witness); PKI and configs under ``base``."""
    made = provision_province(base / "province", region="350000", name="福建省", **_loopback())
    _use_database(made.config_path, db_url)
    text = made.config_path.read_text(encoding="utf-8")
    made.config_path.write_text(
        text.replace("segment_records = 65536", f"segment_records = {segment}"), encoding="utf-8"
    )
    province = load_config(made.config_path)
    city = prepare_city(
        base / "city",
        region="350100",
        name="福州市",
        province_region="350000",
        province_endpoint=province.node.listen,
        **_loopback(),
    )
    witness = load_config(city)
    admit_city(province, witness)
    return ArchivedNode(made.config_path, province, witness, db_url)


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
                        log.append(audit_entry(i, at + dt.timedelta(seconds=i)))
                        for i in range(n, min(n + 64, head + count))
                    )
                )
        finally:
            await log.close()
    finally:
        await db.close()


async def witnessed(node: ArchivedNode) -> StoredCheckpoint:
    """Sign a checkpoint of the log as it is and have the city cosign it."""
    cfg, city = node.log, node.witness
    root = load_certs(cfg.path(cfg.tls.root))[0]
    identity, _ = read_log_signer(
        load_chain_pem(cfg.path(cfg.tls.cert), root), root, cfg.node.trust_domain
    )
    city_chain = load_chain_pem(city.path(city.tls.cert), root)
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
        if made is None:
            raise RuntimeError("no checkpoint made: the log is empty")
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
        if cosigned is None:
            raise RuntimeError(f"the cosignature of the checkpoint of {made.size} was not kept")
        return cosigned
    finally:
        await db.close()
