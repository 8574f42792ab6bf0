"""``govnode changes``: the data management authority's desk for change requests
(未经批准，任何单位和个人均不得更改和删除政务数据, 第四十一条).

Providers ask for changes with AccessService.RequestRecordChange, CatalogService.UpdateResource
or WithdrawResource, or by submitting a record that differs from the stored one (held from
its batch, ``[governance] submit_updates = "approve"``). Run on the node itself, with its
config: the commands act on the node's database as this region's authority, exactly as
AccessService.ReviewChangeRequest does for an authority certificate: the same checks, the change
applied in the approval's transaction, the requester notified in it.
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
from node.errors import DomainError
from node.governance import ChangeRequest, ChangeRequests, ChangeStatus, ChangeTarget
from node.records import Records
from node.sharing import Decision, Notifications
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Review change requests (records and catalog entries) as this node's data management "
        "authority (数据管理机构, 第四十一条)."
    ),
    no_args_is_help=True,
)

#: The desk, its authority, and the auditor its decisions go through.
Work = Callable[[ChangeRequests, Identity, Auditor], Awaitable[T]]


def _run(cfg: NodeConfig, work: Work[T]) -> T:
    """Run ``work`` on the node's database as its authority."""

    async def main() -> T:
        from node.app import data_errors_of

        async with node_storage(cfg) as (db, audit):
            region, td = cfg.node.region, cfg.node.trust_domain
            catalog = Catalog(db, node_region=region)
            notifications = Notifications(db)
            changes = ChangeRequests(
                db,
                catalog,
                Records(db, region, trust_domain=td),
                notifications,
                make_identity(region, td, Role.NODE),
                # An approved correction closes its error reports (纠错), as at the node.
                on_reviewed=data_errors_of(cfg, db, notifications).change_reviewed,
            )
            authority = make_identity(region, td, Role.AUTHORITY)
            return await work(changes, authority, Auditor(audit, authority))

    return asyncio.run(main())


def _cst(moment: dt.datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S CST")


def _what(c: ChangeRequest) -> str:
    target = "record" if c.target is ChangeTarget.RECORD else "entry"
    return f"{target} {c.action.value}"


def _json(c: ChangeRequest) -> dict[str, Any]:
    return {
        "id": c.id,
        "status": c.status.value,
        "target": c.target.value,
        "action": c.action.value,
        "resource_code": c.resource_code,
        "requester": c.requester,
        "key": c.key,
        "previous": c.previous_values,
        "new": c.values,
        "previous_version": c.previous_version,
        "batch_id": c.batch_id,
        "reason": c.reason,
        "created_at": c.created_at.isoformat(),
        "reviewer": c.reviewer,
        "reviewed_at": c.reviewed_at.isoformat() if c.reviewed_at else None,
        "review_comment": c.review_comment,
        "applied_version": c.applied_version,
    }


def _show(c: ChangeRequest) -> None:
    echo(f"{c.id}  {c.status.value}  {_what(c)} of {c.resource_code}")
    echo(f"  requester:    {c.requester} at {_cst(c.created_at)}")
    echo(f"  reason:       {c.reason}")
    if c.batch_id:
        echo(f"  from batch:   {c.batch_id}")
    if c.target is ChangeTarget.RECORD:
        echo(f"  key:          {json.dumps(c.key, ensure_ascii=False)}")
        echo(f"  before (v{c.previous_version}):")
        for item, value in sorted(c.previous_values.items()):
            after = c.values.get(item, value) if c.values else "(deleted)"
            mark = "  " if after == value else "→ "
            echo(f"    {mark}{item}: {value}" + (f"  →  {after}" if after != value else ""))
        for item in sorted(set(c.values) - set(c.previous_values)):
            echo(f"    + {item}: {c.values[item]}")
    elif c.entry is not None:
        echo(f"  new entry:    {c.entry.name} (from version {c.previous_version})")
    if c.status is not ChangeStatus.PENDING:
        echo(f"  reviewed:     {c.reviewer} at {_cst(c.reviewed_at)} {c.review_comment}".rstrip())
    if c.applied_version:
        echo(f"  applied as version {c.applied_version}")


def _pending_ids(cfg: NodeConfig, ids: list[str], batch: str, resource: str) -> list[str]:
    """The ids named, or every pending request of ``batch`` (on ``resource``)."""
    if ids and batch:
        raise UserError("name change request ids or --batch, not both")
    if ids:
        return ids
    if not batch:
        raise UserError("name one or more change request ids, or --batch BATCH_ID")

    async def pending(changes: ChangeRequests, who: Identity, _audited: Auditor) -> list[str]:
        out: list[str] = []
        token = ""
        for _ in range(10_000):  # bounded: 200 a page
            page, token = await changes.list(
                who,
                status=ChangeStatus.PENDING,
                resource_code=resource,
                batch_id=batch,
                page_size=200,
                page_token=token,
            )
            out += [c.id for c in page]
            if not token:
                break
        return out

    found = _run(cfg, pending)
    if not found:
        raise UserError(f"no pending change request comes from batch {batch!r}")
    return found


@app.command("list")
def list_command(
    config: Path = CONFIG_OPTION,
    status: str = typer.Option("pending", "--status", help="pending, approved, rejected, or all."),
    resource: str = typer.Option("", "--resource", help="Only this resource code."),
    batch: str = typer.Option("", "--batch", help="Only records held from this Submit batch."),
    limit: int = typer.Option(200, "--limit", min=1, max=1000, help="At most this many."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List change requests held by this node, newest first (pending ones by default)."""
    cfg = load(config)
    wanted = None
    if status != "all":
        try:
            wanted = ChangeStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in ChangeStatus)
            raise UserError(f"--status: {status!r} is not one of {choices}, all") from None
    found, more = _run(
        cfg,
        lambda c, who, _: c.list(
            who, status=wanted, resource_code=resource, batch_id=batch, page_size=limit
        ),
    )
    for c in found:
        if as_json:
            echo(json.dumps(_json(c), ensure_ascii=False))
        else:
            origin = f"batch {c.batch_id}" if c.batch_id else c.reason[:40]
            echo(
                f"{c.id}  {c.status.value:<8}  {_what(c):<13}  {c.resource_code}  "
                f"{_cst(c.created_at)}  {origin}"
            )
    if not as_json:
        if not found:
            echo("No change requests.")
        elif more:
            echo(f"(more than {limit}; narrow with --resource or --batch, or raise --limit)")


@app.command("show")
def show(
    config: Path = CONFIG_OPTION,
    change_id: str = typer.Argument(..., help="A change request id (…-C-…)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one change request: what would change, before and after."""
    cfg = load(config)
    found = _run(cfg, lambda c, who, _: c.get(who, change_id))
    echo(json.dumps(_json(found), ensure_ascii=False)) if as_json else _show(found)


def _review(cfg: NodeConfig, ids: list[str], decision: Decision, comment: str) -> int:
    """Review each id in its own transaction; returns how many failed (each is reported)."""

    async def work(changes: ChangeRequests, who: Identity, audited: Auditor) -> int:
        failed = 0
        for change_id in ids:
            try:
                asked = await changes.get(who, change_id)
                action = Action(
                    f"changes/{decision.value}",
                    resource_code=asked.resource_code,
                    detail={
                        "change_request": change_id,
                        "decision": decision.value,
                        "provider": asked.provider_code,
                    },
                )
                done = await audited(
                    action,
                    lambda: changes.review(who, change_id, decision, comment),  # noqa: B023
                )
            except DomainError as exc:
                failed += 1
                echo(f"✗ {change_id}: {exc.message}")
                continue
            applied = f", version {done.applied_version}" if done.applied_version else ""
            what = f"{_what(done)} of {done.resource_code}"
            echo(f"✓ {done.id} {done.status.value}{applied} ({what})")
        return failed

    return _run(cfg, work)


@app.command("approve")
def approve(
    config: Path = CONFIG_OPTION,
    ids: list[str] = typer.Argument(None, help="Pending change request ids."),
    batch: str = typer.Option("", "--batch", help="Every pending record held from this batch."),
    resource: str = typer.Option("", "--resource", help="With --batch: only this resource."),
    comment: str = typer.Option("", "--comment", help="Notes for the requester."),
) -> None:
    """Approve change requests: each applies in its approval's transaction and the requester
    is notified. A request whose target changed since it was asked is refused (ask again)."""
    cfg = load(config)
    failed = _review(cfg, _pending_ids(cfg, ids or [], batch, resource), Decision.APPROVE, comment)
    if failed:
        raise UserError(f"{failed} change request(s) not approved (see above)")


@app.command("reject")
def reject(
    config: Path = CONFIG_OPTION,
    ids: list[str] = typer.Argument(None, help="Pending change request ids."),
    batch: str = typer.Option("", "--batch", help="Every pending record held from this batch."),
    resource: str = typer.Option("", "--resource", help="With --batch: only this resource."),
    comment: str = typer.Option(..., "--comment", help="The reason, told to the requester."),
) -> None:
    """Reject change requests with a reason; nothing changes, the requester is notified."""
    cfg = load(config)
    if not comment.strip():
        raise UserError("--comment: required, the reason for a rejection told to the requester")
    failed = _review(cfg, _pending_ids(cfg, ids or [], batch, resource), Decision.REJECT, comment)
    if failed:
        raise UserError(f"{failed} change request(s) not rejected (see above)")
