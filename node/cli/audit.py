"""``govnode audit``: read the audit log (第三十九条) and check that it is intact."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import typer
from cryptography import x509

from node.audit import (
    MAX_PROOF_BYTES,
    MAX_QUERY_LIMIT,
    AuditLog,
    AuditRecord,
    CannotProve,
    ChainCheck,
    KeyStatementError,
    ProofFileError,
    RecordsPruned,
    Witnessed,
    WitnessedError,
    check_proof_file,
    cosigners,
    epochs,
    log_origin,
    newest_cosigned,
    problems,
    prove_record,
    read_log_signer,
    read_witness_statement,
    sizes_to_check,
    stored_witnessed,
)
from node.cli import audit_usage
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_checkpoints
from node.config import NodeConfig
from node.pki import load_certs
from node.storage import Database
from node.terminal import format_record, safe_text
from node.times import CST
from node.tlog import EcdsaVerifier

app = typer.Typer(
    help=(
        "Read the audit log: every call to this node, accepted or refused (汇聚, 共享, 查询, "
        "比对, 下载, 分析, 访问, 更新维护; 第三十九条). Records are hash-chained and kept at "
        "least three years; no command changes them, and only `audit prune` removes whole "
        "archived segments past that retention."
    ),
    no_args_is_help=True,
)

_POLL_S = 0.5


def _open_config(config: Path) -> NodeConfig:
    # Logs go to stderr and only when they matter (load): stdout is the records (and --json's).
    return load(config)


def record_json(record: AuditRecord) -> str:
    """One JSON line with every field; ``at`` in UTC, ISO 8601."""
    data: dict[str, Any] = {
        "sequence": record.sequence,
        "at": record.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "caller": record.caller,
        "origin_node": record.origin_node,
        "method": record.method,
        "operation": record.operation.value,
        "resource_code": record.resource_code,
        "outcome": record.outcome,
        "message": record.message,
        "request_digest": record.request_digest,
        "request_id": record.request_id,
        "detail": record.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
    return json.dumps(data, ensure_ascii=False)


async def _tail(
    cfg: NodeConfig, n: int, follow: bool, as_json: bool, caller: str | None, resource: str | None
) -> None:
    show = record_json if as_json else format_record
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        # Following starts after the head as it was before the tail was read: every record
        # up to it that matches is in the tail or older than what the tail shows.
        cursor, _ = await audit.head()
        records = await audit.tail(n, caller=caller, resource_code=resource)
        for record in records:
            echo(show(record))
        if not follow:
            return
        cursor = max(cursor, records[-1].sequence if records else 0)
        while True:
            # The head is read first: every record up to it that matches is in the query
            # below, so the cursor can skip the ones that do not match.
            head, _ = await audit.head()
            batch = await audit.query(
                caller=caller, resource_code=resource, after_sequence=cursor, limit=MAX_QUERY_LIMIT
            )
            for record in batch:
                echo(show(record))
            if len(batch) == MAX_QUERY_LIMIT:
                cursor = batch[-1].sequence
                continue
            cursor = max(cursor, head, batch[-1].sequence if batch else 0)
            await asyncio.sleep(_POLL_S)
    finally:
        await db.close()


@app.command("tail")
def tail(
    config: Path = CONFIG_OPTION,
    lines: int = typer.Option(20, "-n", "--lines", help="How many of the last records to show."),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing new records as they are written (Ctrl-C)."
    ),
    caller: str | None = typer.Option(
        None, "--caller", help="Only this caller's records (an identity, spiffe://...)."
    ),
    resource: str | None = typer.Option(
        None, "--resource", help="Only records on this resource code, e.g. 350000-1-000001."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, times in UTC."),
) -> None:
    """Show the last records of the audit log, times in China Standard Time."""
    if not 0 <= lines <= MAX_QUERY_LIMIT:
        raise UserError(f"-n/--lines: must be 0 to {MAX_QUERY_LIMIT}, got {lines}")
    cfg = _open_config(config)
    try:
        asyncio.run(_tail(cfg, lines, follow, as_json, caller, resource))
    except KeyboardInterrupt:
        return


@dataclass
class _Verified:
    check: ChainCheck
    witnessed: list[Witnessed] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why
    problems: list[str] = field(default_factory=list)


async def _witnessed(
    cfg: NodeConfig, db: Database, audit: AuditLog, offline: bool, found: _Verified
) -> None:
    """Gather the witnessed checkpoints of this log: this node's own newest cosigned one (its
    cosignature checked), and unless ``offline`` what each witness says it cosigned."""
    from node.app import node_tls_files
    from node.clients import newest_witnessed, witness_endpoints

    root = load_certs(cfg.path(cfg.tls.root))[0]
    chain_pem = cfg.path(cfg.tls.cert).read_text(encoding="utf-8")
    trust_domain = cfg.node.trust_domain
    identity, log_key = read_log_signer(chain_pem, root, trust_domain)
    # After a restart (a restore that lost witnessed records) only the current origin is
    # compared: the records the old one's witnesses cosigned past the gap are not here.
    restarts = await epochs(db)
    epoch = restarts[-1].epoch if restarts else 0
    origin = log_origin(identity.host, epoch)
    for restarted in restarts:
        found.notes.append(
            f"the log went on as {restarted.origin} at record #{restarted.first_sequence} on "
            f"{restarted.opened_at.date().isoformat()}: {restarted.gap}"
        )
    here = EcdsaVerifier(origin, log_key.public_key)
    stored = await newest_cosigned(db)
    if stored is not None and stored.checkpoint.origin == origin:
        known = []
        for keys in (await cosigners(db)).values():
            try:
                known.append(
                    read_witness_statement(keys.statement, keys.chain_pem, root, trust_domain)
                )
            except KeyStatementError as exc:
                found.notes.append(f"witness {keys.identity}'s key statement: {exc}")
        try:
            found.witnessed.append(stored_witnessed(stored, origin, here, known))
        except WitnessedError as exc:
            found.problems.append(f"this node's checkpoints table: {exc}")
    if offline:
        return
    for endpoint, region in await witness_endpoints(cfg, db)():
        try:
            witnessed = await newest_witnessed(
                endpoint=endpoint,
                region=region,
                identity=identity,
                tls=node_tls_files(cfg),
                root=root,
                log=log_key,
                from_epoch=epoch,
            )
        except grpc.aio.AioRpcError as exc:
            found.notes.append(
                f"witness {region} at {endpoint} could not be asked: {exc.code().name}: "
                f"{safe_text(exc.details() or '')}"
            )
            continue
        except WitnessedError as exc:
            found.problems.append(str(exc))
            continue
        if witnessed is None:
            found.notes.append(f"witness {region} has cosigned nothing of {origin} yet")
        elif witnessed.origin != origin:
            found.problems.append(
                f"witness {region} cosigned {witnessed.size} records of {witnessed.origin}, an "
                f"origin this database does not know: it is older than the log (restored, and "
                "not yet checked with the witnesses)"
            )
        else:
            found.witnessed.append(witnessed)


async def _verify(cfg: NodeConfig, offline: bool = False) -> _Verified:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        found = _Verified(ChainCheck(True, 0))
        await _witnessed(cfg, db, audit, offline, found)
        sizes = sizes_to_check(found.witnessed)
        # After a prune the live chain is checked from the last pruned record's hash, and the
        # tree from the kept subtrees over the pruned records (verify-archive checks those
        # against the archived records themselves).
        mark = await audit.pruned()
        start: dict[str, Any] = {}
        if mark is not None:
            after = mark.first_live - 1
            start = {
                "after": after,
                "anchor": mark.anchor_hash,
                "frontier": await audit.kept_frontier(after),
            }
            found.notes.append(
                f"records #1 to #{after} were pruned into archive segments 0 to "
                f"{mark.segments - 1} on {mark.pruned_at.date().isoformat()}: the chain is "
                f"checked from #{after}'s hash {mark.anchor_hash[:16]}…, the Merkle root over "
                "them taken from the kept subtrees (govnode audit verify-archive checks the "
                "archive)"
            )
        if not sys.stderr.isatty():
            check = await audit.verify_chain(roots_at=sizes, **start)
        else:
            total = await audit.count()
            with typer.progressbar(length=total, label="checking", file=sys.stderr) as bar:
                done = 0

                def advance(checked: int) -> None:
                    nonlocal done
                    bar.update(checked - done)
                    done = checked

                check = await audit.verify_chain(progress=advance, roots_at=sizes, **start)
        found.check = check
        if check.ok:
            found.problems.extend(problems(check, found.witnessed))
            # At the size checked: a serving node may have appended since the check read.
            stored = await audit.tree_head(check.size)
            if (stored.size, stored.root) != (check.size, check.roots.get(check.size)):
                found.problems.append(
                    f"the database's stored Merkle tree ({stored.size} records) does not match "
                    f"the {check.size} records themselves"
                )
    finally:
        await db.close()
    return found


@app.command("verify")
def verify(
    config: Path = CONFIG_OPTION,
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Do not ask the witnesses; compare with this node's own cosigned checkpoint only.",
    ),
) -> None:
    """Recompute the hash chain and the Merkle tree from the records, and compare them with the
    newest checkpoints this node's witnesses cosigned (asked over mutual TLS, and this node's
    own table); exit 1 naming the first bad record, or what is missing or altered."""
    found = asyncio.run(_verify(_open_config(config), offline))
    check = found.check
    if not check.ok:
        echo(
            f"audit chain BROKEN at record #{check.first_bad_sequence}: "
            f"{safe_text(check.reason)} ({check.checked} records intact before it)"
        )
        raise typer.Exit(1)
    echo(
        f"audit chain intact: {check.checked} records"
        + (f" (#{check.after + 1} to #{check.size})" if check.after else "")
    )
    for note in found.notes:
        echo(f"note: {note}")
    if found.problems:
        for problem in found.problems:
            echo(f"audit log NOT WHOLE: {safe_text(problem)}")
        raise typer.Exit(1)
    if not found.witnessed:
        echo("no witnessed checkpoint to compare with yet")
        return
    for w in sorted(found.witnessed, key=lambda w: -w.size):
        when = f" at {w.at.isoformat(timespec='seconds')}" if w.at else ""
        echo(f"witnessed: {w.by} cosigned {w.size} records{when}; the log extends it")


async def _prove(cfg: NodeConfig, sequence: int) -> bytes:
    from node.clients import witness_rule

    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        checkpoints, identity, chain_pem = node_checkpoints(cfg, db, audit)
        try:
            rule = await witness_rule(cfg, identity, db)()
            return await prove_record(db, audit, checkpoints, sequence, chain_pem, rule)
        except CannotProve as exc:
            raise UserError(
                f"--sequence {sequence}: {exc} ([audit] checkpoint_seconds = "
                f"{cfg.audit.checkpoint_seconds:g})"
            ) from None
        except RecordsPruned as exc:
            raise UserError(f"--sequence {sequence}: {exc.message}") from None
    finally:
        await db.close()


@app.command("prove")
def prove(
    config: Path = CONFIG_OPTION,
    sequence: int = typer.Option(..., "--sequence", min=1, help="The record's sequence."),
    out: Path = typer.Option(..., "--out", help="Where to write the proof (.tlog-proof)."),
) -> None:
    """Write a self-contained proof that record SEQUENCE is in this node's audit log: the
    record, its inclusion proof and the newest witnessed checkpoint (C2SP tlog-proof), which
    `govnode audit check-proof` verifies offline with the province root certificate alone."""
    data = asyncio.run(_prove(_open_config(config), sequence))
    if out.exists():
        raise UserError(f"--out {out}: exists already; choose another file")
    out.write_bytes(data)
    echo(f"wrote {out} ({len(data)} bytes): record #{sequence}")


@app.command("check-proof")
def check_proof(
    file: Path = typer.Argument(..., help="A proof written by `govnode audit prove`."),
    root: Path = typer.Option(..., "--root", help="The province root certificate (PEM)."),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="The platform's SPIFFE trust domain."
    ),
) -> None:
    """Check a proof file offline: the record hashes to its chain hash, the log's node signed
    the checkpoint, a witness cosigned it, and the record is in the tree it signs. Needs no
    node and no network: only the root certificate. Exit 1 saying which check failed."""
    try:
        anchor = x509.load_pem_x509_certificate(root.read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"--root {root}: not a PEM certificate ({exc})") from None
    try:
        data = file.read_bytes()[: MAX_PROOF_BYTES + 1]
    except OSError as exc:
        raise UserError(f"{file}: {exc.strerror}") from None
    try:
        checked = check_proof_file(data, anchor, trust_domain)
    except ProofFileError as exc:
        echo(f"proof INVALID: {safe_text(str(exc))}")
        raise typer.Exit(1) from None
    record = checked.record
    echo(
        f"proof OK: record #{checked.sequence} is in the audit log {checked.origin} of "
        f"{checked.size} records, signed by {checked.log_identity}"
    )
    for witness, at in checked.cosigned_by:
        echo(f"  cosigned by {witness} at {at.astimezone(CST):%Y-%m-%d %H:%M:%S} CST")
    echo(
        f"  record: {safe_text(str(record.get('at')))} {safe_text(str(record.get('caller')))} "
        f"{safe_text(str(record.get('method')))} {safe_text(str(record.get('resource_code')))} "
        f"{safe_text(str(record.get('outcome')))}"
    )


# Usage logs for providers (使用日志推送给相应的数据生产应用单位), in a module of their own.
app.command("usage")(audit_usage.usage)
app.command("check-usage")(audit_usage.check_usage_bundle)
