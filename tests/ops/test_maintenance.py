"""Maintenance mode kept in the database (node.maintenance): `govnode maintenance on` turns a
running node NOT_SERVING within seconds, a restart keeps it so, `off` brings it back, each
switch audited; every process of a node (here: two handles on one database) follows a switch;
a hostile reason is refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.cli import app as cli_app
from node.errors import InvalidArgument
from node.maintenance import MAX_REASON_CHARS, Maintenance, MaintenanceState, MaintenanceWatch
from node.storage import Database
from tests.support.nodes import PUBLIC_SECURITY, channel, make_province, start

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def cli(*args: str | Path) -> tuple[int, str]:
    """The real command, in-process (in a thread: it runs its own event loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, [str(a) for a in args])
    return result.exit_code, result.output


async def health(node: RunningNode, who: TlsFiles) -> int:
    async with channel(node, who) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def health_turns(node: RunningNode, who: TlsFiles, wanted: int, within_s: float) -> None:
    """Wait (bounded) until the node's health is ``wanted``."""
    for _ in range(int(within_s / 0.1)):
        if await health(node, who) == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"health not {wanted} within {within_s} s")


async def test_the_cli_switch_reaches_a_running_node_and_survives_a_restart(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    config = setup.config_path
    agency = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    node = await start(setup)
    try:
        assert await health(node, agency) == SERVING
        code, out = await cli("maintenance", "on", "--config", config, "--reason", "升级存储")
        assert code == 0, out
        assert "maintenance on (health NOT_SERVING)" in out and "升级存储" in out
        await health_turns(node, agency, NOT_SERVING, within_s=10)
    finally:
        await node.stop(grace=0)

    node = await start(setup)
    try:
        # NOT_SERVING from the first answer, not after the first poll.
        assert await health(node, agency) == NOT_SERVING
        assert node.health.maintenance and not node.health.serving
        code, out = await cli("maintenance", "status", "--config", config, "--json")
        assert code == 0
        shown = json.loads(out)
        assert shown["on"] and shown["reason"] == "升级存储"
        assert shown["by"] == "spiffe://350000.fujian.gov.cn/node"
        code, out = await cli("maintenance", "off", "--config", config)
        assert code == 0, out
        await health_turns(node, agency, SERVING, within_s=10)
        code, out = await cli("maintenance", "off", "--config", config)
        assert code == 0 and "already off" in out
        records = await node.audit.newest_first(method="maintenance.switch", limit=10)
        assert [(r.caller, r.outcome, r.detail["maintenance"], r.message) for r in records] == [
            ("spiffe://350000.fujian.gov.cn/node", "OK", "off", "already off"),
            ("spiffe://350000.fujian.gov.cn/node", "OK", "off", ""),
            ("spiffe://350000.fujian.gov.cn/node", "OK", "on", ""),
        ]
        assert records[-1].detail["reason"] == "升级存储"
    finally:
        await node.stop(grace=0)


async def test_every_process_of_a_node_follows_a_switch_and_a_stale_read_undoes_nothing(
    db_url: str,
) -> None:
    """Two handles on one database stand for two processes of one node (PostgreSQL)."""
    first, second = await Database.open(db_url), await Database.open(db_url)
    try:
        await first.migrate()
        applied: list[bool] = []

        async def apply(on: bool) -> None:
            applied.append(on)

        watch = MaintenanceWatch(Maintenance(second), apply, period_s=0.05)
        before = await watch.load()
        assert not before.on and before.since is None and before.version == 0
        watch.start()
        try:
            switched = await Maintenance(first).switch(True, by="spiffe://x/operator/a", reason="r")
            assert switched.changed and switched.version == 1
            for _ in range(100):
                if applied[-1:] == [True]:
                    break
                await asyncio.sleep(0.05)
            assert applied == [False, True]
            # A read that started before a later switch lands after it: ignored.
            await watch.switch(False, by="spiffe://x/operator/b")
            await watch._follow(switched)
            assert applied == [False, True, False]
        finally:
            await watch.stop()
        state = await Maintenance(first).state()
        assert (state.on, state.by, state.reason, state.version) == (
            False,
            "spiffe://x/operator/b",
            "",
            2,
        )
        again = await Maintenance(first).switch(False, by="spiffe://x/operator/c")
        assert not again.changed and again.by == "spiffe://x/operator/b"
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("x" * (MAX_REASON_CHARS + 1), f"at most {MAX_REASON_CHARS} characters"),
        ("a\nfake log line", "printable"),
        ("\u202egnp.exe", "printable"),
    ],
)
async def test_a_hostile_reason_is_refused_and_changes_nothing(
    database: Database, reason: str, said: str
) -> None:
    maintenance = Maintenance(database)
    with pytest.raises(InvalidArgument) as refused:
        await maintenance.switch(True, by="spiffe://x/node", reason=reason)
    assert said in refused.value.message
    assert len(refused.value.message) < 200, "a short prefix quoted"
    state: MaintenanceState = await maintenance.state()
    assert not state.on and state.version == 0
