"""The backups page (备份恢复机制, 第三十九条): the backups in ``[backup] dir`` with their time,
size, keys, audit head and last verification; making a new one and verifying one (role
``system``), each as `govnode backup create|verify` in a child process
(node.console._backup_jobs), one at a time, its progress shown on the page.

What the console does not do, and says so: back up private keys (that needs a passphrase,
which belongs on the operator's command line, not in a web form) and restore (a restore
writes a new node directory for a new node process; it is never done to the running node).

Every role reads the page; the buttons are the system role's. Each action is audited when it
is asked (``console:/backups/create``, ``console:/backups/verify``) and again when its job
ends (``…/result``: OK, or INTERNAL, DEADLINE_EXCEEDED, CANCELLED, with the exit code).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from cryptography import x509

from gateway.audit import MAX_DETAIL_CHARS, cut
from gateway.identity import ConsoleRole
from node.audit import AuditEntry, Operation, request_digest
from node.backup import BackupError, Listing, check_name, list_backups, summary
from node.console._actions import AUTH, METHOD_PREFIX, audited
from node.console._backup_jobs import Job, JobBusy, JobState
from node.console._desk_params import bad, form_text
from node.console._identity import REQUEST_ID, ConsoleRefusal, operator_of
from node.console._params import number
from node.console._render import render
from node.console._state import ConsoleState, state_of
from node.pki import load_certs

log = structlog.get_logger("govnode.console")

SYSTEM = ConsoleRole.SYSTEM
#: Backups a page lists.
PAGE = 20
#: A job's outcome as the audit log's outcome codes say it.
_OUTCOMES = {
    JobState.OK: "OK",
    JobState.FAILED: "INTERNAL",
    JobState.TIMED_OUT: "DEADLINE_EXCEEDED",
    JobState.STOPPED: "CANCELLED",
}


def backup_dir(state: ConsoleState) -> Path:
    config = state.config
    return config.path(config.backup.dir)


def _root(state: ConsoleState) -> x509.Certificate:
    """The province root this node trusts: backups and reports are checked against it."""
    config = state.config
    return load_certs(config.path(config.tls.root))[0]


def _name(value: str) -> str:
    try:
        return check_name(value)
    except BackupError as exc:
        raise bad(f"备份名称不合规：{exc}") from None


async def _listing(request: web.Request) -> tuple[Listing, int]:
    state = state_of(request)
    offset = number(request.query, "from", default=0, high=10**6)
    directory = backup_dir(state)
    listing = await asyncio.to_thread(
        lambda: list_backups(directory, offset=offset, limit=PAGE, root=_root(state))
    )
    return listing, offset


async def _values(request: web.Request) -> dict[str, Any]:
    listing, offset = await _listing(request)
    state = state_of(request)
    return {
        "listing": listing,
        "offset": offset,
        "page": PAGE,
        "job": state.backup_jobs.current,
        "busy": state.backup_jobs.busy,
        "directory": str(backup_dir(state)),
    }


async def backups(request: web.Request) -> web.Response:
    return await render(request, "backups.html", **await _values(request))


async def backups_live(request: web.Request) -> web.Response:
    """The job and the list, which htmx polls every 5 s (without JavaScript: reload)."""
    return await render(request, "backups_live.html", **await _values(request))


async def backup(request: web.Request) -> web.Response:
    """One backup: its manifest's facts and each check of its last verification."""
    name = _name(request.match_info.get("name", ""))
    state = state_of(request)
    directory = backup_dir(state)
    try:
        found = await asyncio.to_thread(lambda: summary(directory, name, _root(state)))
    except (FileNotFoundError, NotADirectoryError):
        raise ConsoleRefusal(404, f"备份目录中没有备份 {name}", "NOT_FOUND") from None
    return await render(request, "backup.html", backup=found, busy=state.backup_jobs.busy)


def _start(request: web.Request, kind: str, name: str, args: list[str]) -> None:
    """Start the job (the caller has checked the role), or refuse: one runs already."""
    state = state_of(request)
    job = Job(
        kind=kind,
        name=name,
        operator=operator_of(request).uri,
        request_id=request.get(REQUEST_ID, ""),
    )
    directory = backup_dir(state)

    def cleanup() -> None:
        # What a stopped `backup create` may leave: its staging directory (.NAME.partial-…).
        if kind == "create":
            for leftover in directory.glob(f".{name}.partial-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    try:
        state.backup_jobs.start(
            job,
            args,
            timeout=state.config.backup.timeout_seconds,
            cleanup=cleanup,
            finished=lambda done: _audit_result(state, done),
        )
    except JobBusy as busy:
        running = busy.job
        raise ConsoleRefusal(
            409,
            f"已有备份任务在运行（{running.kind} {running.name}，"
            f"{running.started_at:%H:%M:%S} UTC 开始）：请等它结束",
            "FAILED_PRECONDITION",
        ) from None


def _config_file(state: ConsoleState) -> Path:
    config_file = state.config.config_file
    if config_file is None:
        raise ConsoleRefusal(
            409,
            "本节点的配置不是从文件读取的，无法交给 govnode backup：请在命令行备份",
            "FAILED_PRECONDITION",
        )
    return config_file


async def create(request: web.Request) -> web.Response:
    """A new backup, named by the UTC time, without private keys."""
    state = state_of(request)
    name = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = backup_dir(state) / name

    async def begin() -> None:
        config_file = _config_file(state)
        if await asyncio.to_thread(out.exists):
            raise ConsoleRefusal(409, f"备份 {name} 已存在：请稍后再试", "ALREADY_EXISTS")
        _start(
            request,
            "create",
            name,
            ["backup", "create", "--config", str(config_file), "--out", str(out)],
        )

    await audited(request, "/backups/create", SYSTEM, begin, detail={"name": name})
    raise web.HTTPSeeOther("/backups")


async def verify(request: web.Request) -> web.Response:
    """Verify a backup as `govnode backup verify --root ROOT --config CONFIG` does: checked
    against this node's root, the report signed by this node and written into the backup."""
    state = state_of(request)
    form = await request.post()
    asked = form_text(form, "name", max_chars=200)

    async def begin() -> None:
        name = _name(asked)
        path = backup_dir(state) / name
        try:
            await asyncio.to_thread(summary, backup_dir(state), name)
        except (FileNotFoundError, NotADirectoryError):
            raise ConsoleRefusal(404, f"备份目录中没有备份 {name}", "NOT_FOUND") from None
        config = state.config
        _start(
            request,
            "verify",
            name,
            [
                "backup",
                "verify",
                str(path),
                "--root",
                str(config.path(config.tls.root)),
                "--config",
                str(_config_file(state)),
            ],
        )

    await audited(request, "/backups/verify", SYSTEM, begin, detail={"name": asked})
    raise web.HTTPSeeOther("/backups")


async def _audit_result(state: ConsoleState, job: Job) -> None:
    """The job's end, in the audit log beside the request that started it."""
    detail: dict[str, str | int] = {
        "name": job.name,
        "exit_code": -1 if job.returncode is None else job.returncode,
        "seconds": round(job.seconds),
    }
    if job.output:
        detail["last_line"] = cut(job.output[-1], MAX_DETAIL_CHARS)
    await state.audit.append(
        AuditEntry(
            caller=job.operator,
            method=f"{METHOD_PREFIX}/backups/{job.kind}/result",
            operation=Operation.MAINTAIN,
            outcome=_OUTCOMES.get(job.state, "UNKNOWN"),
            message="" if job.state is JobState.OK else job.state.value,
            request_digest=request_digest(repr(sorted(detail.items())).encode()),
            request_id=job.request_id,
            resource_code="",
            detail={"auth": AUTH, **detail},
        )
    )


def routes(table: web.RouteTableDef) -> None:
    table.get("/backups")(backups)
    table.get("/backups/live")(backups_live)
    table.get("/backups/view/{name}")(backup)
    table.post("/backups/create")(create)
    table.post("/backups/verify")(verify)
