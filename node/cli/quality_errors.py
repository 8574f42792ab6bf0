"""``govnode quality errors list|show|resolve``: the operator's desk for error reports (纠错,
第十六条) on this node's records, on the node's database (the node may be serving).

``resolve`` acts as this region's data management authority: ``--confirm`` closes a report as
REJECTED (the stored value is right; the reporter is told), ``--correct ITEM=VALUE ...`` asks
for the correction by a change request (第四十一条) that the authority then approves with
``govnode changes approve``; the approval closes the report and sends the correction notices.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from gateway.identity import Identity, Role, make_identity
from node.catalog import Catalog
from node.cli._audited import Action, Auditor
from node.cli._common import CONFIG_OPTION, JSON_OPTION, UserError, echo, load, node_storage
from node.config import NodeConfig
from node.governance import ChangeRequests
from node.quality import DataError, DataErrors, DataErrorStatus, ErrorFilter
from node.records import Records
from node.sharing import Notifications
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Error reports (纠错, 第十六条) on this node's records: list them, show one, and "
        "resolve one as the data management authority (confirm the stored value, or ask for "
        "a correction that `govnode changes approve` applies)."
    ),
    no_args_is_help=True,
)

Work = Callable[[DataErrors, ChangeRequests, Catalog, Identity], Awaitable[T]]


def _run(cfg: NodeConfig, work: Work[T], action: Action | None = None) -> T:
    """Run ``work`` on the node's database as its authority; an ``action`` is audited."""

    async def main() -> T:
        from node.app import data_errors_of

        async with node_storage(cfg) as (db, audit):
            region, td = cfg.node.region, cfg.node.trust_domain
            catalog = Catalog(db, node_region=region)
            notifications = Notifications(db)
            errors = data_errors_of(cfg, db, notifications)
            changes = ChangeRequests(
                db,
                catalog,
                Records(db, region, trust_domain=td),
                notifications,
                make_identity(region, td, Role.NODE),
                on_reviewed=errors.change_reviewed,
            )
            authority = make_identity(region, td, Role.AUTHORITY)
            if action is None:
                return await work(errors, changes, catalog, authority)
            audited = Auditor(audit, authority)
            return await audited(action, lambda: work(errors, changes, catalog, authority))

    return asyncio.run(main())


def _cst(moment: dt.datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")


def _json(r: DataError, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status.value,
        "resource_code": r.resource_code,
        "provider_code": r.provider_code,
        "key": r.key,
        "item": r.item,
        "description": r.description,
        "suggested_value": r.suggested_value,
        "evidence": r.evidence,
        "reporter": r.reporter,
        "reported_at": r.reported_at.isoformat(),
        "due_at": r.due_at.isoformat(),
        "overdue": r.overdue(now),
        "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
        "resolved_by": r.resolved_by,
        "resolution_note": r.resolution_note,
        "change_request_id": r.change_request_id,
        "corrected_version": r.corrected_version,
    }


def _show(r: DataError, now: dt.datetime) -> None:
    late = "  OVERDUE" if r.overdue(now) else ""
    echo(f"{r.id}  {r.status.value}  {r.resource_code}  item {r.item or '(whole record)'}{late}")
    echo(f"  key:          {json.dumps(r.key, ensure_ascii=False)}")
    echo(f"  reporter:     {r.reporter} at {_cst(r.reported_at)}; due {_cst(r.due_at)}")
    echo(f"  description:  {r.description}")
    if r.suggested_value:
        echo(f"  suggested:    {r.suggested_value}")
    if r.evidence:
        echo(f"  evidence:     {r.evidence}")
    if r.change_request_id:
        echo(f"  change:       {r.change_request_id}")
    if r.resolved_by:
        echo(f"  resolved by:  {r.resolved_by} at {_cst(r.resolved_at)}: {r.resolution_note}")
    if r.corrected_version:
        echo(f"  corrected as record version {r.corrected_version}")


@app.command("list")
def list_command(
    config: Path = CONFIG_OPTION,
    status: str = typer.Option(
        "all", "--status", help="open, correction_requested, corrected, rejected, or all."
    ),
    resource: str = typer.Option("", "--resource", help="Only this resource code."),
    overdue: bool = typer.Option(False, "--overdue", help="Only open reports past due."),
    limit: int = typer.Option(200, "--limit", min=1, max=200, help="At most this many."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the error reports on this node's records, newest first."""
    cfg = load(config)
    wanted = None
    if status != "all":
        try:
            wanted = DataErrorStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in DataErrorStatus)
            raise UserError(f"--status: {status!r} is not one of {choices}, all") from None
    filters = ErrorFilter(resource_code=resource, status=wanted, overdue_only=overdue)
    found, more = _run(cfg, lambda e, _c, _cat, who: e.list(who, filters, page_size=limit))
    now = dt.datetime.now(dt.UTC)
    for r in found:
        if as_json:
            echo(json.dumps(_json(r, now), ensure_ascii=False))
        else:
            late = "  OVERDUE" if r.overdue(now) else ""
            echo(
                f"{r.id}  {r.status.value:<20}  {r.resource_code}  {r.item or '(record)'}  "
                f"due {_cst(r.due_at)}{late}"
            )
    if not as_json:
        if not found:
            echo("No error reports.")
        elif more:
            echo(f"(more than {limit}; narrow with --resource or --status)")


@app.command("show")
def show(
    report_id: str = typer.Argument(..., help="The report's id (<region>-E-<hex>)."),
    config: Path = CONFIG_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one error report."""
    cfg = load(config)
    report = _run(cfg, lambda e, _c, _cat, who: e.get(who, report_id))
    now = dt.datetime.now(dt.UTC)
    if as_json:
        echo(json.dumps(_json(report, now), ensure_ascii=False))
    else:
        _show(report, now)


def _values(pairs: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        item, sep, value = pair.partition("=")
        if not sep or not item:
            raise UserError(f"--correct: {pair[:40]!r} is not ITEM=VALUE")
        values[item] = value
    return values


@app.command("resolve")
def resolve(
    report_id: str = typer.Argument(..., help="The report's id (<region>-E-<hex>)."),
    config: Path = CONFIG_OPTION,
    confirm: bool = typer.Option(
        False, "--confirm", help="The stored value is right: close the report as rejected."
    ),
    correct: list[str] = typer.Option(
        [], "--correct", help="ITEM=VALUE of the corrected record (repeat for more items)."
    ),
    note: str = typer.Option(..., "--note", help="Why (told to the reporter)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Resolve an error report as the data management authority."""
    cfg = load(config)
    if confirm == bool(correct):
        raise UserError("give --confirm, or --correct ITEM=VALUE (one or more), not both")
    values = _values(correct)

    async def work(
        errors: DataErrors, changes: ChangeRequests, catalog: Catalog, who: Identity
    ) -> DataError:
        if confirm:
            return await errors.reject(who, report_id, note)
        return await errors.correct(who, report_id, values, note, changes=changes, catalog=catalog)

    how = "confirm" if confirm else "correct"
    report = _run(cfg, work, Action(f"quality-errors/{how}", detail={"data_error": report_id}))
    now = dt.datetime.now(dt.UTC)
    if as_json:
        echo(json.dumps(_json(report, now), ensure_ascii=False))
        return
    _show(report, now)
    if report.change_request_id and report.status is DataErrorStatus.CORRECTION_REQUESTED:
        echo(
            f"Change request {report.change_request_id} awaits approval: "
            f"govnode changes approve {report.change_request_id} --config {config}"
        )
