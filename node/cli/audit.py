"""``govnode audit``: read the audit log (第三十九条) and check that it is intact."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import typer

from node.audit import MAX_QUERY_LIMIT, AuditLog, AuditRecord
from node.cli._common import CONFIG_OPTION, UserError, echo, load
from node.config import NodeConfig
from node.storage import Database
from node.terminal import format_record, safe_text

app = typer.Typer(
    help=(
        "Read the audit log: every call to this node, accepted or refused (汇聚, 共享, 查询, "
        "比对, 下载, 分析, 访问, 更新维护; 第三十九条). Records are hash-chained and kept at "
        "least three years; govnode has no command that changes or deletes them."
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


async def _verify(cfg: NodeConfig) -> tuple[bool, int, int | None, str]:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        audit = AuditLog(db)
        if not sys.stderr.isatty():
            check = await audit.verify_chain()
        else:
            total = await audit.count()
            with typer.progressbar(length=total, label="checking", file=sys.stderr) as bar:
                done = 0

                def advance(checked: int) -> None:
                    nonlocal done
                    bar.update(checked - done)
                    done = checked

                check = await audit.verify_chain(progress=advance)
    finally:
        await db.close()
    return check.ok, check.checked, check.first_bad_sequence, check.reason


@app.command("verify")
def verify(config: Path = CONFIG_OPTION) -> None:
    """Recompute the hash chain; exit 1 and name the first bad record if it is broken."""
    ok, checked, bad, reason = asyncio.run(_verify(_open_config(config)))
    if ok:
        echo(f"audit chain intact: {checked} records")
        return
    echo(
        f"audit chain BROKEN at record #{bad}: {safe_text(reason)} "
        f"({checked} records intact before it)"
    )
    raise typer.Exit(1)
