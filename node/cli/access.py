"""``govnode access``: the data management authority's desk (数据管理机构, 第二十五条).

Run on the node itself, with its config: the commands work on the node's database directly,
acting as this region's authority (``spiffe://<region>.<trust-domain>/authority``), exactly as
AccessService does for a caller with an authority certificate (`govnode certs
issue-authority`): the same rules, the same notifications to the applicant and the provider,
in the same transaction. A running node's notification streams pick them up within a second.
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
from node.audit import Operation
from node.catalog import ShareMethod
from node.cli._audited import Action, Auditor
from node.cli._common import CONFIG_OPTION, JSON_OPTION, UserError, echo, load, node_storage
from node.config import NodeConfig
from node.sharing import (
    Application,
    Applications,
    ApplicationStatus,
    Decision,
    Grant,
    Notifications,
    Review,
)
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Review 有条件共享 applications and revoke grants, as this node's data management "
        "authority (数据管理机构, 第二十五条)."
    ),
    no_args_is_help=True,
)


def _authority(cfg: NodeConfig) -> Identity:
    return make_identity(cfg.node.region, cfg.node.trust_domain, Role.AUTHORITY)


def _run(
    cfg: NodeConfig,
    work: Callable[[Applications, Identity], Awaitable[T]],
    action: Action | None = None,
) -> T:
    """Run ``work`` on the node's database as its authority; an ``action`` is audited."""

    async def main() -> T:
        async with node_storage(cfg) as (db, audit):
            authority = _authority(cfg)
            applications = Applications(db, Notifications(db), authority)
            if action is None:
                return await work(applications, authority)
            audited = Auditor(audit, authority)
            return await audited(action, lambda: work(applications, authority))

    return asyncio.run(main())


def _cst(moment: dt.datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(CST):%Y-%m-%d %H:%M} CST"


def _moment(value: str | None, option: str) -> dt.datetime | None:
    """An ISO 8601 instant; without a zone it is China Standard Time; a bare date is the end
    of that day."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: {value!r} is not a date or ISO 8601 time") from None
    if len(value) == 10:  # YYYY-MM-DD
        moment = moment.replace(hour=23, minute=59, second=59)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CST)
    return moment.astimezone(dt.UTC)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _methods(value: str) -> tuple[ShareMethod, ...]:
    out = []
    for name in _csv(value):
        try:
            out.append(ShareMethod(name.lower()))
        except ValueError:
            choices = ", ".join(m.value for m in ShareMethod)
            raise UserError(f"--methods: {name!r} is not one of {choices}") from None
    return tuple(out)


def _app_json(a: Application) -> dict[str, Any]:
    return {
        "id": a.id,
        "status": a.status.value,
        "applicant": a.applicant,
        "resource_code": a.resource_code,
        "provider_code": a.provider_code,
        "items": list(a.items),
        "share_methods": [m.value for m in a.share_methods],
        "purpose": a.purpose,
        "legal_basis": a.legal_basis,
        "not_before": a.not_before.isoformat() if a.not_before else None,
        "not_after": a.not_after.isoformat(),
        "created_at": a.created_at.isoformat(),
        "reviewer": a.reviewer,
        "review_comment": a.review_comment,
        "grant_id": a.grant_id,
    }


def _grant_json(g: Grant) -> dict[str, Any]:
    return {
        "id": g.id,
        "application_id": g.application_id,
        "grantee": g.grantee,
        "resource_code": g.resource_code,
        "items": list(g.items),
        "clear_text_items": list(g.clear_text_items),
        "share_methods": [m.value for m in g.share_methods],
        "purpose": g.purpose,
        "not_before": g.not_before.isoformat(),
        "not_after": g.not_after.isoformat(),
        "justification": g.justification,
        "granted_by": g.granted_by,
        "revoked": g.revoked,
        "revoke_reason": g.revoke_reason,
    }


def _show_application(a: Application) -> None:
    echo(f"application {a.id}  [{a.status.value}]")
    echo(f"  applicant:    {a.applicant}")
    echo(f"  resource:     {a.resource_code} (provider {a.provider_code})")
    echo(f"  items:        {', '.join(a.items)}")
    echo(f"  methods:      {', '.join(m.value for m in a.share_methods)}")
    echo(f"  purpose:      {a.purpose}")
    echo(f"  legal basis:  {a.legal_basis}")
    echo(f"  period:       {_cst(a.not_before)} to {_cst(a.not_after)}")
    echo(f"  submitted:    {_cst(a.created_at)}")
    if a.status is not ApplicationStatus.PENDING:
        echo(f"  decided:      {_cst(a.decided_at)} by {a.reviewer or a.applicant}")
    if a.review_comment:
        echo(f"  comment:      {a.review_comment}")
    if a.grant_id:
        echo(f"  grant:        {a.grant_id}")


def _show_grant(g: Grant) -> None:
    state = "revoked" if g.revoked else "granted"
    echo(f"grant {g.id}  [{state}]  (application {g.application_id})")
    echo(f"  grantee:      {g.grantee}")
    echo(f"  resource:     {g.resource_code}")
    echo(f"  items:        {', '.join(g.items)}")
    if g.clear_text_items:
        echo(f"  clear text:   {', '.join(g.clear_text_items)} ({g.justification})")
    echo(f"  methods:      {', '.join(m.value for m in g.share_methods)}")
    echo(f"  period:       {_cst(g.not_before)} to {_cst(g.not_after)}")
    echo(f"  granted by:   {g.granted_by} at {_cst(g.created_at)}")
    if g.revoked:
        echo(f"  revoked:      {_cst(g.revoked_at)}: {g.revoke_reason}")


@app.command("list")
def list_command(
    config: Path = CONFIG_OPTION,
    status: str = typer.Option(
        "",
        "--status",
        help="Only applications in this status: pending, approved, rejected, withdrawn.",
    ),
    resource: str = typer.Option("", "--resource", help="Only this resource code."),
    grants: bool = typer.Option(False, "--grants", help="List grants instead of applications."),
    include_inactive: bool = typer.Option(
        False, "--all", help="With --grants: revoked and expired grants too."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the applications (or, with --grants, the grants) held by this node, newest first."""
    cfg = load(config)
    wanted = None
    if status:
        try:
            wanted = ApplicationStatus(status)
        except ValueError:
            choices = ", ".join(s.value for s in ApplicationStatus)
            raise UserError(f"--status: {status!r} is not one of {choices}") from None
    if grants:
        found = _run(
            cfg,
            lambda a, who: a.list_grants(
                who, resource_code=resource, include_inactive=include_inactive, page_size=200
            ),
        )[0]
        for g in found:
            if as_json:
                echo(json.dumps(_grant_json(g), ensure_ascii=False))
            else:
                state = "revoked" if g.revoked else f"until {_cst(g.not_after)}"
                echo(f"{g.id}  {g.resource_code}  {g.grantee}  {','.join(g.items)}  {state}")
        if not found and not as_json:
            echo("No grants.")
        return
    apps = _run(
        cfg,
        lambda a, who: a.list_applications(
            who, status=wanted, resource_code=resource, page_size=200
        ),
    )[0]
    for item in apps:
        if as_json:
            echo(json.dumps(_app_json(item), ensure_ascii=False))
        else:
            echo(
                f"{item.id}  {item.status.value:<9}  {item.resource_code}  {item.applicant}  "
                f"{','.join(item.items)}  {_cst(item.created_at)}"
            )
    if not apps and not as_json:
        echo("No applications.")


@app.command("show")
def show(
    config: Path = CONFIG_OPTION,
    object_id: str = typer.Argument(..., help="An application id (…-A-…) or a grant id (…-G-…)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one application or grant held by this node."""
    cfg = load(config)
    if "-G-" in object_id:
        grant = _run(cfg, lambda a, who: a.get_grant(who, object_id))
        echo(json.dumps(_grant_json(grant), ensure_ascii=False)) if as_json else _show_grant(grant)
        return
    found = _run(cfg, lambda a, who: a.get_application(who, object_id))
    echo(json.dumps(_app_json(found), ensure_ascii=False)) if as_json else _show_application(found)


def _review_action(application_id: str, decision: Decision) -> Action:
    detail = {"application": application_id, "decision": decision.value}
    return Action(f"access/{decision.value}", Operation.SHARE, detail=detail)


@app.command("approve")
def approve(
    config: Path = CONFIG_OPTION,
    application_id: str = typer.Argument(..., help="The pending application's id."),
    items: str = typer.Option(
        "", "--items", help="Comma-separated items to grant (a subset; default: all applied for)."
    ),
    methods: str = typer.Option(
        "", "--methods", help="Comma-separated methods to grant, e.g. verify,query (a subset)."
    ),
    not_before: str = typer.Option("", "--not-before", help="Start (ISO 8601; default: applied)."),
    not_after: str = typer.Option(
        "", "--not-after", help="End (ISO 8601 or YYYY-MM-DD, CST; never later than applied)."
    ),
    clear_text: str = typer.Option(
        "", "--clear-text", help="Comma-separated granted items to return unmasked."
    ),
    justification: str = typer.Option(
        "", "--justification", help="Why the clear-text items are needed (required with them)."
    ),
    comment: str = typer.Option("", "--comment", help="Notes for the applicant."),
) -> None:
    """Approve a pending application (审定同意), possibly narrowed; this makes the grant and
    notifies the applicant and the provider."""
    cfg = load(config)
    review = Review(
        decision=Decision.APPROVE,
        items=_csv(items),
        share_methods=_methods(methods),
        not_before=_moment(not_before, "--not-before"),
        not_after=_moment(not_after, "--not-after"),
        clear_text_items=_csv(clear_text),
        justification=justification,
        comment=comment,
    )
    found, grant = _run(
        cfg,
        lambda a, who: a.review(who, application_id, review),
        _review_action(application_id, Decision.APPROVE),
    )
    assert grant is not None
    echo(f"Approved application {found.id}: grant {grant.id} (第二十五条)")
    _show_grant(grant)


@app.command("reject")
def reject(
    config: Path = CONFIG_OPTION,
    application_id: str = typer.Argument(..., help="The pending application's id."),
    comment: str = typer.Option(..., "--comment", help="The reason, told to the applicant."),
) -> None:
    """Reject a pending application (审定不同意) with a reason; the applicant and the provider
    are notified."""
    cfg = load(config)
    review = Review(decision=Decision.REJECT, comment=comment)
    found, _ = _run(
        cfg,
        lambda a, who: a.review(who, application_id, review),
        _review_action(application_id, Decision.REJECT),
    )
    echo(f"Rejected application {found.id}: {found.review_comment}")


@app.command("revoke")
def revoke(
    config: Path = CONFIG_OPTION,
    grant_id: str = typer.Argument(..., help="The grant's id."),
    reason: str = typer.Option(..., "--reason", help="Why it is revoked, told to the grantee."),
) -> None:
    """Revoke a grant: its next use is refused; the grantee and the provider are notified."""
    cfg = load(config)
    revoked = Action("access/revoke", Operation.SHARE, detail={"grant": grant_id})
    grant = _run(cfg, lambda a, who: a.revoke(who, grant_id, reason), revoked)
    echo(f"Revoked grant {grant.id} of {grant.grantee} on {grant.resource_code}: {reason}")
