"""``govnode opendata publish|unpublish|list``: the data management authority's open catalog
(第二十九条), on this node's database (the node may be serving; each publication and withdrawal
is written to the audit log)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from gateway.identity import Role, make_identity
from node.catalog import Catalog
from node.cli._common import CONFIG_OPTION, UserError, echo, load, node_storage
from node.config import Mode, NodeConfig
from node.errors import DomainError
from node.opendata import OpenData, PublicationRefused, Report, open_data_gate
from node.times import CST

T = TypeVar("T")


def _run(cfg: NodeConfig, work: Callable[[OpenData, str], Awaitable[T]]) -> T:
    async def main() -> T:
        async with node_storage(cfg) as (db, audit):
            region = cfg.node.region
            opendata = OpenData(
                db,
                Catalog(db, node_region=region),
                node_region=region,
                min_k=cfg.opendata.min_k,
                max_suppressed=cfg.opendata.max_suppressed,
                may_open=open_data_gate(db, province=cfg.node.mode is Mode.PROVINCE),
                audit=audit,
            )
            authority = make_identity(region, cfg.node.trust_domain, Role.AUTHORITY)
            return await work(opendata, authority.uri)

    return asyncio.run(main())


def report_lines(report: Report) -> list[str]:
    """The de-identification report as the authority reads it."""
    lines = [
        f"  records read {report.rows_read}, published {report.rows_published}, left out "
        f"{report.rows_suppressed}",
    ]
    if report.quasi_identifiers:
        lines.append(
            f"  k-anonymity over {', '.join(report.quasi_identifiers)}: k = {report.k_reached} "
            f"(at least {report.min_k} required), {report.classes} classes"
        )
    else:
        lines.append("  no quasi-identifiers declared: no k-anonymity check")
    for item, treatment in report.treatments.items():
        lines.append(f"  {item}: {treatment}")
    lines.extend(f"  found: {finding}" for finding in report.findings)
    return lines


def register(app: typer.Typer) -> None:
    @app.command("publish")
    def publish(
        resource_code: str = typer.Argument(..., help="The resource to publish."),
        config: Path = CONFIG_OPTION,
    ) -> None:
        """Publish a 普遍开放 or 授权开放 resource's data to the open catalog: a new version,
        de-identified as its items declare and checked (no direct identifier in clear,
        k-anonymous over its quasi-identifiers) before it is served (第二十九条)."""
        cfg = load(config)
        try:
            report = _run(cfg, lambda o, by: o.publish(resource_code, by))
        except PublicationRefused as exc:
            echo(f"refused: {exc.message}")
            for line in report_lines(exc.report):
                echo(line)
            raise typer.Exit(1) from None
        except DomainError as exc:
            raise UserError(exc.message) from None
        echo(f"published {resource_code} version {report.version} (entry v{report.entry_version})")
        for line in report_lines(report):
            echo(line)

    @app.command("unpublish")
    def unpublish(
        resource_code: str = typer.Argument(..., help="The resource to take out."),
        config: Path = CONFIG_OPTION,
    ) -> None:
        """Take a resource out of the open catalog; its versions' reports stay."""
        cfg = load(config)
        try:
            _run(cfg, lambda o, by: o.unpublish(resource_code, by))
        except DomainError as exc:
            raise UserError(exc.message) from None
        echo(f"{resource_code} is out of the open catalog")

    @app.command("list")
    def list_(config: Path = CONFIG_OPTION) -> None:
        """Every resource published on this node, whether it is served now (and why not), and
        its newest version's report."""
        cfg = load(config)
        datasets = _run(cfg, lambda o, _: o.datasets(limit=10_000))
        if not datasets:
            echo("no resource was published here yet")
            return
        for d in datasets:
            state = "served" if not d.not_served else f"not served: {d.not_served}"
            when = d.changed_at.astimezone(CST).strftime("%Y-%m-%d %H:%M CST")
            echo(f"{d.resource_code}  version {d.version}  {state}  (changed {when})")
            if d.report is not None and d.report.outcome == "refused":
                echo(f"  newest attempt, version {d.report.version}, refused: {d.report.reason}")
