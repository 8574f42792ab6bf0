"""``govnode opendata applications list|show|approve|reject`` and ``govnode opendata keys
revoke``: the data management authority's 授权开放 (第三十二至三十五条), on this node's database
(the node may be serving). Each review and revocation is written to the audit log; the
provider is told of each authorization (第三十三条)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from gateway.identity import Identity, Role, make_identity
from node.catalog import Catalog
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_storage
from node.config import Mode, NodeConfig
from node.errors import DomainError
from node.opendata import (
    OpenApplication,
    OpenApplications,
    OpenApplicationStatus,
    OpenData,
    OpenKeys,
    OpenReview,
    open_data_gate,
)
from node.pki import PkiError, load_or_create_secret
from node.sharing import Notifications
from node.terminal import safe_text
from node.times import CST

T = TypeVar("T")

Work = Callable[[OpenApplications, OpenKeys, Identity], Awaitable[T]]


def _run(cfg: NodeConfig, work: Work[T]) -> T:
    section = cfg.opendata
    try:
        secret = load_or_create_secret(cfg.path(section.key_secret))
    except PkiError as exc:
        raise UserError(f"opendata.key_secret: {exc}") from None

    async def main() -> T:
        async with node_storage(cfg) as (db, audit):
            region = cfg.node.region
            authority = make_identity(region, cfg.node.trust_domain, Role.AUTHORITY)
            catalog = Catalog(db, node_region=region)
            opendata = OpenData(
                db,
                catalog,
                node_region=region,
                min_k=section.min_k,
                max_suppressed=section.max_suppressed,
                may_open=open_data_gate(db, province=cfg.node.mode is Mode.PROVINCE),
            )
            notifications = Notifications(db)
            keys = OpenKeys(
                db,
                notifications,
                authority,
                key_secret=secret,
                use_report_days=section.use_report_days,
                use_report_grace_days=section.use_report_grace_days,
                audit=audit,
            )
            applications = OpenApplications(
                db,
                catalog,
                opendata,
                notifications,
                keys,
                authority,
                max_grant_days=section.max_grant_days,
                audit=audit,
            )
            return await work(applications, keys, authority)

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise UserError(exc.message) from None


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")


def _summary(app: OpenApplication) -> str:
    return (
        f"{app.id}  {app.status.value}  {app.resource_code}  {app.entity_code} "
        f"{app.entity_name} ({app.entity_type.term})  use {app.use.value}  "
        f"applied {_when(app.created_at)}"
    )


def _until(value: str | None) -> dt.datetime | None:
    """The end of the day ``value`` (YYYY-MM-DD) in China Standard Time."""
    if value is None:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"--until {value!r}: not a date (YYYY-MM-DD)") from None
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), CST)


applications_app = typer.Typer(
    help=(
        "授权开放 applications (第三十二、三十三条): list them, show one, approve (issuing a "
        "key shown once) or reject."
    ),
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="The keys 授权开放 approvals issued (第三十三条): revoke one.", no_args_is_help=True
)


@applications_app.command("list")
def list_(
    status: OpenApplicationStatus | None = typer.Option(
        None, "--status", help="Only applications with this status."
    ),
    resource: str = typer.Option("", "--resource", help="Only applications for this resource."),
    config: Path = CONFIG_OPTION,
) -> None:
    """The applications for this node's 授权开放 resources, newest first."""
    cfg = load(config)
    found, _ = _run(
        cfg,
        lambda a, _k, _by: a.list_applications(
            status=status, resource_code=resource, page_size=200
        ),
    )
    if not found:
        echo("no open application matches")
    for app in found:
        echo(safe_text(_summary(app)))


@applications_app.command("show")
def show(
    application_id: str = typer.Argument(..., help="The application's id."),
    config: Path = CONFIG_OPTION,
) -> None:
    """One application: the applicant, what the authority confirms before it authorizes, the
    review, and for an approval its key's scope and use reports (第三十五条)."""
    cfg = load(config)

    async def work(a: OpenApplications, k: OpenKeys, _: Identity) -> list[str]:
        app = await a.get(application_id)
        lines = [
            _summary(app),
            f"  contact: {app.contact}",
            f"  purpose: {app.purpose}",
            f"  to confirm (第三十二条): {app.to_confirm}",
        ]
        if app.evidence_reference:
            lines.append(f"  evidence of domestic control: {app.evidence_reference}")
        if app.reviewer:
            lines.append(f"  reviewed by {app.reviewer} at {_when(app.reviewed_at)}")
        if app.review_comment:
            lines.append(f"  comment: {app.review_comment}")
        if app.competitive_selection_ref:
            lines.append(f"  competitive selection: {app.competitive_selection_ref}")
        if app.key is not None:
            scope = app.key.scope
            state = f"revoked ({app.key.revoke_reason})" if app.key.revoked else "in force"
            lines.append(
                f"  key gok_{scope.key_id}_…: {state}, items {', '.join(scope.items)}, until "
                f"{_when(scope.not_after)}"
            )
            for period in await k.schedule(scope.key_id):
                filed = f"filed {_when(period.filed_at)}" if period.filed_at else "not filed"
                lines.append(
                    f"  use report {period.describe()}: {filed}; suspends from "
                    f"{_when(period.suspends_at)} if missing"
                )
        return lines

    for line in _run(cfg, work):
        echo(safe_text(line))


@applications_app.command("approve")
def approve(
    application_id: str = typer.Argument(..., help="The pending application's id."),
    item: list[str] = typer.Option(
        [], "--item", help="Authorize only this published item (repeat); default: every one."
    ),
    until: str | None = typer.Option(
        None,
        "--until",
        help="Last day of the authorization (YYYY-MM-DD, CST); default and at most "
        "opendata.max_grant_days from now.",
    ),
    selection_ref: str = typer.Option(
        "",
        "--selection-ref",
        help="For commercial use: the reference of the competitive selection (公开招标等"
        "竞争性方式) that chose the developer; required then (第三十三、三十四条).",
    ),
    comment: str = typer.Option("", "--comment", help="A comment for the applicant."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Authorize an application (授权, 第三十三条): issues its key, printed this once, and tells
    the provider. Hand the key to the applicant; only its keyed hash is kept."""
    cfg = load(config)
    review = OpenReview(
        approve=True,
        comment=comment,
        items=tuple(item),
        not_after=_until(until),
        competitive_selection_ref=selection_ref,
    )
    approval = _run(cfg, lambda a, _k, by: a.review(by, application_id, review))
    key = approval.application.key
    assert key is not None
    echo(
        f"approved {application_id}: items {', '.join(key.scope.items)}, until "
        f"{_when(key.scope.not_after)}"
    )
    echo(f"key (shown this once; not stored): {approval.key}")


@applications_app.command("reject")
def reject(
    application_id: str = typer.Argument(..., help="The pending application's id."),
    comment: str = typer.Option(..., "--comment", help="Why it is rejected (required)."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Reject an application, saying why."""
    cfg = load(config)
    review = OpenReview(approve=False, comment=comment)
    _run(cfg, lambda a, _k, by: a.review(by, application_id, review))
    echo(f"rejected {application_id}")


@keys_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key's id (the part after gok_)."),
    reason: str = typer.Option(..., "--reason", help="Why it is revoked (required)."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Revoke a key: every later use is refused; the provider is told."""
    cfg = load(config)
    key = _run(cfg, lambda _a, k, by: k.revoke(by, key_id, reason))
    echo(f"revoked key {key.key_id} (application {key.scope.application_id})")


def register(app: typer.Typer) -> None:
    app.add_typer(applications_app, name="applications")
    app.add_typer(keys_app, name="keys")
