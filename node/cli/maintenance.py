"""``govnode maintenance on|off|status``: maintenance mode (维护模式) from the command line, on
the node's database, as the console's switch keeps it (node.maintenance). A running node
follows within a few seconds; a node started while it is on comes up NOT_SERVING."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer

from gateway.identity import Role, make_identity
from node.cli._common import CONFIG_OPTION, JSON_OPTION, UserError, echo, load, node_storage
from node.config import NodeConfig
from node.errors import DomainError
from node.maintenance import MAX_REASON_CHARS, POLL_SECONDS, Maintenance, MaintenanceState
from node.times import CST

T = TypeVar("T")

app = typer.Typer(
    help=(
        "Maintenance mode (维护模式): while on, the node answers health checks NOT_SERVING, so "
        "peers and load balancers drain it. Kept in the node's database: a running node "
        f"follows a switch within {POLL_SECONDS:g} s, and a restarted node stays as it was left."
    ),
    no_args_is_help=True,
)

REASON_OPTION = typer.Option(
    "",
    "--reason",
    help=f"Why (at most {MAX_REASON_CHARS} characters): shown by `status` and the console, "
    "and written to the audit log.",
)


def _run(cfg: NodeConfig, work: Callable[[Maintenance, str], Awaitable[T]]) -> T:
    async def main() -> T:
        async with node_storage(cfg) as (db, audit):
            # The CLI acts as the node, as its other actions record it (revocations...).
            node = make_identity(cfg.node.region, cfg.node.trust_domain, Role.NODE)
            return await work(Maintenance(db, audit), node.uri)

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise UserError(exc.message) from None


def describe(state: MaintenanceState) -> str:
    """The switch in one line: on or off, since when (China Standard Time), who, why."""
    line = "maintenance on (health NOT_SERVING)" if state.on else "maintenance off"
    if state.since is None:
        return line + ", never switched"
    when = state.since.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S CST")
    line += f" since {when}, by {state.by}"
    return line + (f": {state.reason}" if state.reason else "")


def _switch(config: Path, on: bool, reason: str) -> None:
    cfg = load(config)
    state = _run(cfg, lambda m, node: m.switch(on, by=node, reason=reason, audit_it=True))
    if not state.changed:
        echo(f"already {'on' if on else 'off'}: nothing changed")
    echo(describe(state))
    if state.changed:
        echo(f"a running node follows within {POLL_SECONDS:g} s (`govnode maintenance status`)")


@app.command("on")
def on(config: Path = CONFIG_OPTION, reason: str = REASON_OPTION) -> None:
    """Turn maintenance mode on (health NOT_SERVING), audited.

    The node stays NOT_SERVING, also after a restart, until `govnode maintenance off` or the
    console turns it off.
    """
    _switch(config, True, reason)


@app.command("off")
def off(config: Path = CONFIG_OPTION, reason: str = REASON_OPTION) -> None:
    """Turn maintenance mode off (the node serves again if its storage is writable), audited."""
    _switch(config, False, reason)


@app.command("status")
def status(config: Path = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show whether maintenance mode is on, since when, who switched it and why.

    This is what is stored; a running node applies it within a few seconds.
    """
    cfg = load(config)

    async def read(m: Maintenance, _node: str) -> MaintenanceState:
        return await m.state()

    state = _run(cfg, read)
    if as_json:
        echo(
            json.dumps(
                {
                    "on": state.on,
                    "since": state.since.isoformat() if state.since else None,
                    "by": state.by,
                    "reason": state.reason,
                },
                ensure_ascii=False,
            )
        )
        return
    echo(describe(state))
