"""The console's backups page over HTTPS with operator certificates: a system operator makes a
backup and verifies it (`govnode backup create|verify` in a child process), the directory and
the signed report are there and the page lists the backup as verified; an observer reads the
page but is refused both actions (403, audited); a second job while one runs is refused (409);
hostile names and a symbolic link out of the directory are refused or ignored."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.app import RunningNode
from node.audit import AuditRecord
from tests.support.console import form_token, operator, session, with_console
from tests.support.nodes import ProvinceSetup, make_province, start

Console = tuple[ProvinceSetup, RunningNode]

#: Polls of the page while a job runs (0.25 s apart: a minute at most).
MAX_POLLS = 240


@pytest.fixture
async def console(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Console]:
    setup = with_console(make_province(tmp_path / "province", sqlite_url))
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


def root(setup: ProvinceSetup) -> Path:
    return setup.config.path(setup.config.tls.root)


def backups_dir(setup: ProvinceSetup) -> Path:
    return setup.config.path(setup.config.backup.dir)


async def get(setup: ProvinceSetup, node: RunningNode, role: str, path: str) -> tuple[int, str]:
    assert node.console is not None
    async with (
        session(operator(setup, role), root(setup)) as http,
        http.get(node.console.url + path) as response,
    ):
        return response.status, await response.text()


async def post(
    setup: ProvinceSetup, node: RunningNode, role: str, path: str, form: dict[str, str]
) -> tuple[int, str]:
    _, page = await get(setup, node, role, "/backups")
    assert node.console is not None
    async with (
        session(operator(setup, role), root(setup)) as http,
        http.post(
            node.console.url + path,
            data={**form, "_token": form_token(page)},
            allow_redirects=False,
        ) as response,
    ):
        return response.status, await response.text()


async def job_done(setup: ProvinceSetup, node: RunningNode) -> str:
    """The live fragment once the job no longer runs (what an operator's page shows)."""
    for _ in range(MAX_POLLS):
        status, live = await get(setup, node, "observer", "/backups/live")
        assert status == 200
        if "进行中" not in live:
            return live
        await asyncio.sleep(0.25)
    raise AssertionError("the backup job did not end within a minute")


async def backup_records(node: RunningNode) -> list[AuditRecord]:
    return await node.audit.newest_first(method="console:/backups*", limit=50)


async def test_a_system_operator_makes_a_backup_and_verifies_it(console: Console) -> None:
    setup, node = console
    status, page = await get(setup, node, "system", "/backups")
    assert status == 200
    assert "备份目录尚不存在" in page and 'id="backup-create"' in page
    assert "--with-keys" in page and "govnode backup restore" in page

    status, _ = await post(setup, node, "system", "/backups/create", {})
    assert status == 303
    live = await job_done(setup, node)
    assert "已完成" in live, live
    [made] = [p for p in backups_dir(setup).iterdir()]
    assert (made / "manifest.json").is_file() and (made / "manifest.sig").is_file()
    assert not (made / "keys").exists(), "a console backup holds no private key"
    assert made.name in live and "尚未验证" in live

    status, _ = await post(setup, node, "system", "/backups/verify", {"name": made.name})
    assert status == 303
    live = await job_done(setup, node)
    assert "已完成" in live, live
    report = json.loads((made / "verify-report.json").read_text(encoding="utf-8"))
    assert report["ok"] is True
    assert report["verifier"] == "spiffe://350000.fujian.gov.cn/node"
    assert (made / "verify-report.sig").is_file()
    assert "验证通过" in live and "报告未签名" not in live

    status, one = await get(setup, node, "observer", f"/backups/view/{made.name}")
    assert status == 200
    assert "audit chain" in one and "spiffe://350000.fujian.gov.cn/node" in one
    assert 'id="backup-verify"' not in one, "an observer sees no button"

    records = await backup_records(node)
    assert [(r.method, r.outcome) for r in reversed(records)] == [
        ("console:/backups/create", "OK"),
        ("console:/backups/create/result", "OK"),
        ("console:/backups/verify", "OK"),
        ("console:/backups/verify/result", "OK"),
    ]
    caller = "spiffe://350000.fujian.gov.cn/operator/system.op-system"
    assert {r.caller for r in records} == {caller}
    assert {r.detail["name"] for r in records} == {made.name}
    assert records[0].request_id == records[1].request_id, "the result names its request"


async def test_an_observer_reads_the_page_but_is_refused_every_action(console: Console) -> None:
    setup, node = console
    status, page = await get(setup, node, "observer", "/backups")
    assert status == 200 and "备份" in page
    assert 'id="backup-create"' not in page and "/backups/verify" not in page
    for path, form in (("/backups/create", {}), ("/backups/verify", {"name": "20261205T000000Z"})):
        status, refused = await post(setup, node, "observer", path, form)
        assert status == 403, path
        assert "系统管理员" in refused
    assert not backups_dir(setup).exists()
    records = await backup_records(node)
    assert sorted((r.method, r.outcome) for r in records) == [
        ("console:/backups/create", "PERMISSION_DENIED"),
        ("console:/backups/verify", "PERMISSION_DENIED"),
    ]


async def test_one_job_at_a_time_and_hostile_names_are_refused(
    console: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, node = console
    # A job that runs until it is stopped: the node's stop ends it (SIGINT to its group).
    monkeypatch.setattr(
        "node.console._backup_jobs.CLI", (sys.executable, "-c", "import time; time.sleep(60)")
    )
    status, _ = await post(setup, node, "system", "/backups/create", {})
    assert status == 303
    (backups_dir(setup) / "x").mkdir(parents=True)
    for path, form in (("/backups/create", {}), ("/backups/verify", {"name": "x"})):
        status, refused = await post(setup, node, "system", path, form)
        assert status == 409, path
        assert "已有备份任务在运行" in refused
    _, page = await get(setup, node, "system", "/backups")
    assert "进行中" in page

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}", encoding="utf-8")
    (backups_dir(setup) / "linked").symlink_to(outside)
    _, live = await get(setup, node, "system", "/backups/live")
    assert "linked" not in live, "a symbolic link out of the directory is not listed"
    status, _ = await get(setup, node, "system", "/backups/view/linked")
    assert status == 404

    for name in ("../../etc", "..", ".hidden", "a/b", "x" * 150):
        status, refused = await post(setup, node, "system", "/backups/verify", {"name": name})
        assert status == 400, name
        assert "备份名称不合规" in refused and "x" * 60 not in refused
    status, refused = await post(setup, node, "system", "/backups/verify", {"name": "y" * 300})
    assert status == 400 and "y" * 60 not in refused
    for path in ("/backups/view/..%2F..%2Fetc", "/backups/view/.hidden", "/backups?from=-1"):
        status, _ = await get(setup, node, "observer", path)
        assert status == 400, path
    outcomes = [(r.method, r.outcome) for r in await backup_records(node)]
    assert outcomes.count(("console:/backups/verify", "INVALID_ARGUMENT")) == 5
    assert ("console:/backups/create", "FAILED_PRECONDITION") in outcomes
