"""Backups started at the console, run as a child process: `govnode backup create|verify`,
the same command an operator types, so nothing of it (file copies, SQLite's backup API,
pg_dump, hashing every file, restoring into a scratch database) runs on the node's event loop.

One job at a time (:class:`BackupJobs`): a second is refused while one runs. A job runs under a
time limit (``[backup] timeout_seconds``); past it, and when the node stops, its process group
gets SIGINT (`backup create` then removes its half-written directory) and, if still there after
:data:`STOP_GRACE_S`, SIGKILL. The child's output (progress and result lines) is kept as its
last :data:`OUTPUT_LINES` lines, each cut to :data:`LINE_CHARS` characters, for the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("govnode.console")

#: The `govnode` command, with the interpreter the node runs on (node/cli/__main__.py).
CLI = (sys.executable, "-m", "node.cli")
#: Never handed to a job: console backups hold no private key (node.cli.backup reads it).
PASSPHRASE_ENV = "GOVNODE_BACKUP_PASSPHRASE"  # noqa: S105 - the variable's name
OUTPUT_LINES = 20
LINE_CHARS = 300
#: Bytes of one line kept while it is not finished (a line without an end is cut).
_PARTIAL_BYTES = 4096
STOP_GRACE_S = 5.0


class JobState(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    STOPPED = "stopped"  # the node stopped while it ran


@dataclass
class Job:
    """A backup job: what it does, for whom, and how it went."""

    kind: str  # "create" or "verify"
    name: str  # the backup's name
    operator: str  # the SPIFFE URI of who started it
    request_id: str
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    state: JobState = JobState.RUNNING
    returncode: int | None = None
    finished_at: dt.datetime | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    @property
    def seconds(self) -> float:
        end = self.finished_at or dt.datetime.now(dt.UTC)
        return (end - self.started_at).total_seconds()

    def said(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            self.output.append(line[:LINE_CHARS])


class JobBusy(Exception):
    """A job runs already; ``job`` is it."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"{job.kind} {job.name} is running")
        self.job = job


Finished = Callable[[Job], Awaitable[None]]


class BackupJobs:
    """The console's backup job: at most one running; the last one kept for the page."""

    def __init__(self) -> None:
        self.current: Job | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(
        self,
        job: Job,
        args: Sequence[str],
        *,
        timeout: float,
        cleanup: Callable[[], None] | None = None,
        finished: Finished | None = None,
    ) -> None:
        """Run ``govnode ARGS`` for ``job`` in the background; :class:`JobBusy` while another
        runs. ``cleanup`` runs (in a thread) when the job did not succeed; ``finished`` when it
        ended, whatever happened."""
        if self.busy:
            assert self.current is not None
            raise JobBusy(self.current)
        self.current = job
        self._task = asyncio.create_task(
            self._run(job, list(args), timeout, cleanup, finished), name=f"backup-{job.kind}"
        )

    async def stop(self) -> None:
        """Stop a running job (the node is stopping) and wait for it to end."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait(self) -> None:
        """Until the running job, if any, has ended (tests)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)

    async def _run(
        self,
        job: Job,
        args: list[str],
        limit_s: float,
        cleanup: Callable[[], None] | None,
        finished: Finished | None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != PASSPHRASE_ENV}
        log.info("backup_job_started", kind=job.kind, name=job.name, operator=job.operator)
        try:
            process = await asyncio.create_subprocess_exec(
                *CLI,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: pg_dump and all are stopped
            )
        except OSError as exc:
            job.said(f"cannot start {CLI[0]}: {exc.strerror}".encode())
            await self._end(job, JobState.FAILED, cleanup, finished)
            return
        try:
            async with asyncio.timeout(limit_s):
                await _collect(process, job)
                job.returncode = await process.wait()
        except TimeoutError:
            job.said(f"stopped after {limit_s:g} s ([backup] timeout_seconds)".encode())
            job.returncode = await _stop(process)
            await self._end(job, JobState.TIMED_OUT, cleanup, finished)
            return
        except asyncio.CancelledError:
            job.returncode = await _stop(process)
            await self._end(job, JobState.STOPPED, cleanup, finished)
            raise
        state = JobState.OK if job.returncode == 0 else JobState.FAILED
        await self._end(job, state, cleanup, finished)

    async def _end(
        self,
        job: Job,
        state: JobState,
        cleanup: Callable[[], None] | None,
        finished: Finished | None,
    ) -> None:
        job.state, job.finished_at = state, dt.datetime.now(dt.UTC)
        log.info(
            "backup_job_finished",
            kind=job.kind,
            name=job.name,
            state=state.value,
            returncode=job.returncode,
            seconds=round(job.seconds, 1),
        )
        if state is not JobState.OK and cleanup is not None:
            try:
                await asyncio.to_thread(cleanup)
            except Exception:
                log.exception("backup_job_cleanup_failed", name=job.name)
        if finished is not None:
            try:
                await finished(job)
            except Exception:
                log.exception("backup_job_report_failed", name=job.name)


async def _collect(process: asyncio.subprocess.Process, job: Job) -> None:
    """The child's output, line by line, into the job (bounded however long a line is)."""
    assert process.stdout is not None
    partial = b""
    while chunk := await process.stdout.read(65536):
        *lines, rest = (partial + chunk).split(b"\n")
        for line in lines:
            job.said(line)
        partial = rest[:_PARTIAL_BYTES]
    job.said(partial)


async def _stop(process: asyncio.subprocess.Process) -> int | None:
    """SIGINT to the job's process group, then SIGKILL after :data:`STOP_GRACE_S`."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                return await process.wait()
        except TimeoutError:
            continue
    return process.returncode
