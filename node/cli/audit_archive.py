"""``govnode audit archive | verify-archive | prune``: retention and archive of the audit log
(第三十九条: kept at least three years). Registered under the ``audit`` group."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.audit import (
    ArchiveError,
    AuditLog,
    Checkpoints,
    PruneRefused,
    SegmentCheck,
    StoredCheckpoint,
    archived_segments,
    check_archive,
    cosigners,
    log_origin,
    log_signer,
    node_key_name,
    prune,
    read_log_signer,
    seal_closed,
)
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.config import NodeConfig
from node.pki import load_certs, load_chain_pem, load_private_key
from node.storage import Database
from node.terminal import safe_text
from node.tlog import EcdsaSigner


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class _Node:
    host: str
    origin: str
    chain_pem: str  # the node's chain without the root
    root_pem: bytes


def _node(cfg: NodeConfig) -> _Node:
    root = load_certs(cfg.path(cfg.tls.root))[0]
    chain_pem = load_chain_pem(cfg.path(cfg.tls.cert), root)
    identity, _ = read_log_signer(chain_pem, root, cfg.node.trust_domain)
    return _Node(
        identity.host,
        log_origin(identity.host),
        chain_pem,
        root.public_bytes(serialization.Encoding.PEM),
    )


async def _witnessed(
    cfg: NodeConfig, db: Database, audit: AuditLog, node: _Node
) -> StoredCheckpoint:
    signer = log_signer(node.host, load_private_key(cfg.path(cfg.tls.key)))
    witnessed = await Checkpoints(db, audit, node.origin, signer).newest_cosigned()
    if witnessed is None:
        raise UserError(
            "no witness has cosigned a checkpoint of this node's audit log yet: no segment is "
            "closed (a segment is sealed once a cosigned checkpoint covers it)"
        )
    return witnessed


async def _archive(cfg: NodeConfig, out: Path) -> list[int]:
    node = _node(cfg)
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        witnessed = await _witnessed(cfg, db, audit, node)
        segment_records = cfg.audit.segment_records
        _say(
            f"the newest witnessed checkpoint covers {witnessed.size} records: segments 0 to "
            f"{witnessed.size // segment_records - 1} of {segment_records} are closed"
        )
        try:
            return await seal_closed(
                db=db,
                audit=audit,
                segment_records=segment_records,
                origin=node.origin,
                checkpoint=witnessed,
                node_signer=EcdsaSigner(
                    node_key_name(node.host), load_private_key(cfg.path(cfg.tls.key))
                ),
                log_chain_pem=node.chain_pem,
                cosigners=list((await cosigners(db)).values()),
                out=out,
                progress=_say,
            )
        except ArchiveError as exc:
            raise UserError(f"--out {out}: {exc}") from None
    finally:
        await db.close()


def archive(
    config: Path = CONFIG_OPTION,
    out: Path = typer.Option(..., "--out", help="The archive directory (made if need be)."),
) -> None:
    """Seal every closed segment of the audit log not yet in OUT: its records, its Merkle root,
    the witnessed checkpoint that covers it with the proof that the segment is in it, and the
    signers' certificates, under a manifest signed by the node key. Run it again at will: what
    is sealed already is left as it is. Progress on stderr."""
    sealed = asyncio.run(_archive(load(config), out))
    echo(
        f"sealed {len(sealed)} segment(s) into {out}"
        + (f": {sealed[0]} to {sealed[-1]}" if sealed else "")
    )


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the checking pool)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _report(result: SegmentCheck) -> None:
    if result.ok:
        _say(
            f"segment {result.segment} OK: records #{result.first} to #{result.last}, in the "
            f"checkpoint of {result.checkpoint_size} cosigned by {', '.join(result.witnesses)}"
        )
    else:
        _say(f"segment {result.segment} FAILED ({result.check})")


def verify_archive(
    directory: Path = typer.Argument(..., help="An archive written by `govnode audit archive`."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (PEM)."),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="The platform's SPIFFE trust domain."
    ),
    jobs: int = typer.Option(
        0, "--jobs", "-j", min=0, help="Processes checking segments at once (0: one per CPU)."
    ),
) -> None:
    """Check an archive offline, segments in parallel: each segment's hash chain and Merkle
    root from its records, its link to its neighbours, the proof that it is in the witnessed
    checkpoint, the node's and a witness's signatures, and the signed manifest. Needs only the
    root certificate. Exit 1 naming each segment and check that fails."""
    try:
        root_pem = root.read_bytes()
        x509.load_pem_x509_certificate(root_pem)
    except (OSError, ValueError) as exc:
        raise UserError(f"--root {root}: not a PEM certificate ({exc})") from None
    if not directory.is_dir():
        raise UserError(f"{directory}: not a directory")
    segments = archived_segments(directory)
    if not segments:
        raise UserError(f"{directory}: holds no sealed segment")
    started, cpu = time.perf_counter(), _cpu_s()
    processes = min(jobs or multiprocessing.cpu_count(), len(segments))
    results = check_archive(
        directory,
        segments,
        root_pem,
        trust_domain,
        workers=jobs or None,
        # This command runs no other thread and holds no connection: fork is safe, and spares
        # each worker importing govnode again.
        start_method="fork",
        done=_report,
    )
    elapsed = time.perf_counter() - started
    failed = [r for r in results if not r.ok]
    for result in failed:
        echo(f"segment {result.segment} FAILED ({result.check}): {safe_text(result.message)}")
    gaps = [k for k in range(segments[0], segments[-1] + 1) if k not in set(segments)]
    if gaps:
        echo(f"note: segments {', '.join(map(str, gaps))} are not in this archive")
    if failed:
        raise typer.Exit(1)
    echo(
        f"archive OK: {len(results)} segment(s), records #{results[0].first} to "
        f"#{results[-1].last}, checked in {elapsed:.1f} s"
        f" ({_cpu_s() - cpu:.1f} s CPU in {processes} processes)"
    )


async def _prune(cfg: NodeConfig, before: int, directory: Path) -> str:
    node = _node(cfg)
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        witnessed = await _witnessed(cfg, db, audit, node)
        try:
            done = await prune(
                db=db,
                audit=audit,
                before=before,
                segment_records=cfg.audit.segment_records,
                retention_days=cfg.audit.retention_days,
                witnessed_size=witnessed.size,
                archive=directory,
                root_pem=node.root_pem,
                trust_domain=cfg.node.trust_domain,
                now=dt.datetime.now(dt.UTC),
                progress=_say,
            )
        except PruneRefused as exc:
            raise UserError(f"prune refused: {exc}") from None
        return (
            f"pruned segments {done.segments.start} to {done.segments.stop - 1} "
            f"({done.records} records); the live log starts at #{done.mark.first_live}, "
            f"linked to {done.mark.anchor_hash[:16]}…"
        )
    finally:
        await db.close()


def prune_command(
    config: Path = CONFIG_OPTION,
    before_segment: int = typer.Option(
        ..., "--before-segment", min=1, help="Remove segments 0 to this - 1 (K: records up to K·S)."
    ),
    directory: Path = typer.Option(
        ..., "--archive", help="The archive directory that holds those segments."
    ),
) -> None:
    """Remove archived segments from the live database, past their retention. Refused unless
    every segment's newest record is older than retention_days of the audit section (at least
    1095, 第三十九条), it is sealed in ARCHIVE and verifies there, and a witness cosigned a
    checkpoint past it.
    The Merkle tree is kept, so old checkpoints and proofs still verify; reading a pruned
    record names the segment to fetch from the archive."""
    echo(asyncio.run(_prune(load(config), before_segment, directory)))


def register(app: typer.Typer) -> None:
    app.command("archive")(archive)
    app.command("verify-archive")(verify_archive)
    app.command("prune")(prune_command)
