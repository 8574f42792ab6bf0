"""``govnode federation invite`` and ``approve`` (at the province), ``govnode join`` (at the
city)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import typer

from node.approval import approve_report
from node.cli._common import CONFIG_OPTION, UserError, cert_hosts, echo, load, split_hostport
from node.clients import JoinError, join_province
from node.config import Mode, NodeConfig
from node.federation import (
    Invitation,
    create_invitation,
    cst,
    reachable_address,
)
from node.pki import check_new_node_dir, check_region, fingerprint, load_certs
from node.storage import Database

app = typer.Typer(help="Federation of the province and city nodes.", no_args_is_help=True)


async def _invite(
    cfg: NodeConfig, region: str, name: str | None, ttl: dt.timedelta, created_by: str
) -> Invitation:
    db = await Database.open(cfg.database_url)
    try:
        await db.migrate()
        return await create_invitation(
            db,
            province_region=cfg.node.region,
            region=region,
            name=name,
            ttl=ttl,
            created_by=created_by,
        )
    finally:
        await db.close()


@app.command("invite")
def invite(
    config: Path = CONFIG_OPTION,
    region: str = typer.Option(..., "--region", help="The city's code, e.g. 350100."),
    name: str | None = typer.Option(
        None, "--name", help="The city's name (default: from the division table)."
    ),
    ttl_hours: float = typer.Option(
        24.0, "--ttl-hours", help="Hours the invitation stays valid (at most 168)."
    ),
) -> None:
    """At the province: mint a one-time, expiring invitation for a city to join online."""
    cfg = load(config)
    if cfg.node.mode is not Mode.PROVINCE:
        raise UserError(f"{config}: only the province node invites cities")
    if cfg.federation.join_listen is None:
        raise UserError(
            f"{config}: federation.join_listen is not set, so cities cannot join online; "
            "set it (e.g. the listen port + 1) and restart the node, or admit the city by "
            "file (`govnode certs sign-city`)"
        )
    created_by = f"operator {os.environ.get('USER') or '?'} (govnode federation invite)"
    made = asyncio.run(_invite(cfg, region, name, dt.timedelta(hours=ttl_hours), created_by))
    root = load_certs(cfg.path(cfg.tls.root))[0]
    endpoint = reachable_address(cfg.federation.join_listen, cfg.node.advertise_hosts)
    echo(f"Invitation for {made.name} ({made.region}): usable once, until {cst(made.expires_at)}")
    echo(f"  token:             {made.token}")
    echo(f"  root fingerprint:  {fingerprint(root)}")
    echo(f"  join endpoint:     {endpoint}")
    echo("Give these to the city operator out of band (the token is not shown again); there:")
    echo(
        f"  govnode join --province {endpoint} --invitation {made.token} "
        f"--fingerprint {fingerprint(root)} --region {made.region} --name {made.name} "
        "--dir DIR --listen HOST:PORT"
    )


def join(
    province: str = typer.Option(
        ..., "--province", help="HOST:PORT of the province's join port (from its operator)."
    ),
    invitation: str = typer.Option(..., "--invitation", help="The one-time invitation token."),
    root_fingerprint: str = typer.Option(
        ..., "--fingerprint", help="The province root's SHA-256 fingerprint, from its operator."
    ),
    region: str = typer.Option(..., "--region", help="This city's code, e.g. 350100."),
    name: str = typer.Option(..., "--name", help="This city's name, e.g. 福州市."),
    dir: Path = typer.Option(..., "--dir", help="Directory to create the node in (empty)."),
    listen: str = typer.Option("127.0.0.1:7443", "--listen", help="HOST:PORT to serve on."),
    host: list[str] = typer.Option(
        [], "--host", help="Extra DNS name or IP clients use to reach the node (repeatable)."
    ),
    trust_domain: str = typer.Option(
        "fujian.gov.cn", "--trust-domain", help="SPIFFE trust domain of the province."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the province."),
) -> None:
    """At a city: join the province online with an invitation, and create the node directory.

    Checks the province's root against --fingerprint before sending anything, sends only
    certificate requests (the keys never leave this machine), receives the city's CA, issues
    the node certificate with it and writes a ready config.
    """
    check_region(region, name, province=False)
    split_hostport(province, "--province")
    split_hostport(listen, "--listen")
    check_new_node_dir(dir)
    hosts = cert_hosts(listen, host)
    try:
        joined = join_province(
            province=province,
            invitation=invitation,
            root_fingerprint=root_fingerprint,
            region=region,
            name=name,
            base=dir,
            listen=listen,
            hosts=hosts,
            trust_domain=trust_domain,
            timeout=timeout,
        )
    except JoinError as exc:
        raise UserError(str(exc)) from None
    config_path, identity, root = joined.config_path, joined.identity, joined.root
    echo(f"Joined the province at {joined.province_endpoint} as {name} ({region})")
    echo(f"  identity:          {identity}")
    echo(f"  CA permitted only: {region}.{trust_domain}")
    echo(f"  root fingerprint:  {fingerprint(root)} (checked)")
    echo(f"  config:            {config_path}")
    echo(f"Next: govnode serve --config {config_path}")


def register(root_app: typer.Typer) -> None:
    root_app.command("join")(join)


@app.command("approve")
def approve(
    config: Path = CONFIG_OPTION,
    report: Path = typer.Option(
        ..., "--report", help="The signed report.json of `govnode conformance run`."
    ),
    max_age_days: int = typer.Option(
        30, "--max-age-days", min=1, max=365, help="Refuse reports older than this."
    ),
) -> None:
    """At the province: approve a city as a sub-platform (第三十一条) on the strength of a
    signed conformance report in which every mandatory case passed."""
    cfg = load(config)
    if cfg.node.mode is not Mode.PROVINCE:
        raise UserError(f"{config}: only the province node approves sub-platforms")
    approved_by = f"operator {os.environ.get('USER') or '?'} (govnode federation approve)"
    facts, new = asyncio.run(
        approve_report(cfg, report.read_bytes(), approved_by, dt.timedelta(days=max_age_days))
    )
    if not new:
        echo(f"{facts.node_identity} was already approved on this report ({facts.report_sha256})")
        return
    echo(
        f"Approved {facts.node_identity} as a sub-platform (第三十一条): {facts.passed} cases "
        f"passed, tested by {facts.tester_identity} on {cst(facts.finished_at)}"
    )
    echo(f"  report sha256: {facts.report_sha256} (kept with the approval)")
    echo("  the city learns it on its next heartbeat (NodeInfo.approved_sub_platform)")
