"""Maintenance mode (维护模式): the node answers health checks NOT_SERVING, so that peers and
load balancers drain it, while its operators work on it.

The switch is kept in the node's database (one row of ``maintenance_mode``), not in a
process: a restarted node comes up in maintenance if it was on, and every process of a node
(several behind one load balancer on PostgreSQL) follows it.

- :class:`Maintenance` reads the row and switches it: the one service-layer function the
  console (``/maintenance``, role system) and ``govnode maintenance on|off`` both call. The
  CLI has it write the audit record; the console's audited-action helper writes its own.
- :class:`MaintenanceWatch` applies the row to the node's health: once at start (before the
  node serves, so it is NOT_SERVING from its first answer), at once after a switch made in
  this process, and every :data:`POLL_SECONDS` for a switch made elsewhere (the CLI, another
  process). Each row carries a version; a process applies only a row newer than the one it
  applied last, so a read that raced a switch never undoes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.quote import quote
from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.errors import FailedPrecondition, InvalidArgument, StorageUnavailable
from node.models import MaintenanceModeRow
from node.storage import Database
from node.tasks import BackgroundJob

log = structlog.get_logger(__name__)

#: The most characters a reason may have.
MAX_REASON_CHARS = 200
#: How often a running node reads the row for a switch made elsewhere.
POLL_SECONDS = 2.0
#: The audit record's method for a switch made with the CLI (the console's is
#: ``console:/maintenance``).
SWITCH_METHOD = "maintenance.switch"
#: The one row's key.
ROW_ID = 1


@dataclass(frozen=True)
class MaintenanceState:
    """The switch as stored: on or off, since when (None: never switched), who switched it
    and why; ``version`` counts the switches. ``changed``: whether the switch that returned
    it changed anything (switching on what is on leaves the row as it was)."""

    on: bool
    since: dt.datetime | None
    by: str
    reason: str
    version: int
    changed: bool = False


def check_reason(reason: str) -> str:
    """``reason`` stripped, or InvalidArgument naming the rule (at most 200 characters, one
    line of printable text)."""
    text = reason.strip()
    if len(text) > MAX_REASON_CHARS:
        raise InvalidArgument(f"reason: at most {MAX_REASON_CHARS} characters, got {quote(text)}")
    if not text.isprintable():
        raise InvalidArgument(f"reason: one line of printable text, got {quote(text)}")
    return text


def _state(row: MaintenanceModeRow, changed: bool = False) -> MaintenanceState:
    return MaintenanceState(
        on=row.active,
        since=row.since,
        by=row.switched_by,
        reason=row.reason,
        version=row.version,
        changed=changed,
    )


_MISSING = "maintenance_mode has no row: the database was not migrated to 0031"


class Maintenance:
    """The maintenance switch in ``db``; ``audit``: where :meth:`switch` records a switch
    when asked to (the CLI)."""

    def __init__(self, db: Database, audit: AuditLog | None = None) -> None:
        self._db = db
        self._audit = audit

    async def state(self) -> MaintenanceState:
        """The switch as stored (one primary-key read)."""

        async def tx(session: AsyncSession) -> MaintenanceModeRow | None:
            return await session.get(MaintenanceModeRow, ROW_ID)

        row = await self._db.read("maintenance.state", tx)
        if row is None:
            raise FailedPrecondition(_MISSING)
        return _state(row)

    async def switch(
        self, on: bool, *, by: str, reason: str = "", audit_it: bool = False
    ) -> MaintenanceState:
        """Switch maintenance mode on or off for ``by`` (an identity URI), with ``reason``
        (at most :data:`MAX_REASON_CHARS`). Switching to the state it is in changes nothing.
        ``audit_it``: write the audit record (the CLI; the console audits it as itself)."""
        reason = check_reason(reason)

        async def tx(session: AsyncSession) -> MaintenanceState:
            query = select(MaintenanceModeRow).where(MaintenanceModeRow.id == ROW_ID)
            row = (await session.exec(query.with_for_update())).first()
            if row is None:
                raise FailedPrecondition(_MISSING)
            if row.active == on:
                return _state(row)
            row.active = on
            row.since = dt.datetime.now(dt.UTC)
            row.switched_by = by[:300]
            row.reason = reason
            row.version += 1
            session.add(row)
            return _state(row, changed=True)

        state = await self._db.write("maintenance.switch", tx)
        if state.changed:
            log.info(
                "maintenance_switched",
                maintenance="on" if on else "off",
                by=state.by,
                reason=state.reason,
                version=state.version,
            )
        if audit_it and self._audit is not None:
            wanted = "on" if on else "off"
            await self._audit.append(
                AuditEntry(
                    caller=by,
                    method=SWITCH_METHOD,
                    operation=Operation.MAINTAIN,
                    outcome="OK",
                    message="" if state.changed else f"already {wanted}",
                    request_digest=request_digest(
                        f"{SWITCH_METHOD} {wanted} {state.version}".encode()
                    ),
                    detail={"auth": "cli", "maintenance": wanted, "reason": reason},
                )
            )
        return state


class MaintenanceWatch(BackgroundJob):
    """Keeps the node's health in step with the stored switch: ``apply(on)`` (the health
    reporter's ``set_maintenance``) for every row newer than the last one applied."""

    task_name = "govnode.maintenance.watch"

    def __init__(
        self,
        maintenance: Maintenance,
        apply: Callable[[bool], Awaitable[None]],
        *,
        period_s: float = POLL_SECONDS,
    ) -> None:
        self.maintenance = maintenance
        self._apply = apply
        self._period_s = period_s
        self._applied = -1  # the version last applied (none yet)
        # One application at a time, in version order (publishing the health status awaits).
        self._lock = asyncio.Lock()

    async def load(self) -> MaintenanceState:
        """Apply the stored switch now (at start, before the node serves)."""
        state = await self.maintenance.state()
        await self._follow(state)
        if state.on:
            log.warning(
                "maintenance_on_at_start",
                since=state.since.isoformat() if state.since else None,
                by=state.by,
                reason=state.reason,
                health="NOT_SERVING",
            )
        return state

    async def switch(self, on: bool, *, by: str, reason: str = "") -> MaintenanceState:
        """Switch (as :meth:`Maintenance.switch`) and apply it in this process at once; other
        processes follow within :data:`POLL_SECONDS`."""
        state = await self.maintenance.switch(on, by=by, reason=reason)
        await self._follow(state)
        return state

    async def _follow(self, state: MaintenanceState) -> None:
        async with self._lock:
            if state.version <= self._applied:
                return
            self._applied = state.version
            await self._apply(state.on)
        if self._applied > 0:
            log.info("maintenance_applied", maintenance="on" if state.on else "off")

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            try:
                await self._follow(await self.maintenance.state())
            except StorageUnavailable:
                pass  # the storage monitor reports it; the next read tries again
            except Exception:
                log.exception("maintenance.watch_failed")
