"""Whether the node can write to its database, for its gRPC health status.

DESIGN.md: a fault of the node's own resources turns health NOT_SERVING. The state is kept
here, outside gRPC: :class:`StorageHealth` records the faults :class:`Database` meets and the
probes' outcomes, and :class:`StorageMonitor` probes periodically and reports each change to
whoever publishes the health status (node.app, through grpc.health.v1).

- **Down at once.** Any fault of the database (a lost connection that a retry did not cure, a
  full disk, a read-only or unreachable database) turns the state unavailable when it
  happens, in a real call or in a probe.
- **Up only on proof.** Only a probe that commits turns it available again, never a call that
  succeeds: on a full disk SQLite still takes small writes into space its WAL already holds
  (the audit record of a refused Submit commits while the Submit's own batch cannot), so one
  small success says nothing about the next batch. While unavailable, the probe writes
  :data:`RECOVERY_PROBE_BYTES`, the size of a large Submit batch; while available, a few bytes,
  enough to notice an idle node losing its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from node.errors import StorageUnavailable
from node.storage._types import utc_now

if TYPE_CHECKING:
    from node.storage._database import Database

log = structlog.get_logger(__name__)

#: What the probe writes while the database counts as unavailable: proof of room for a batch.
RECOVERY_PROBE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StorageFault:
    """What went wrong: ``kind`` ("disk full", "connection lost", ...), ``cause`` (the
    driver's text) and ``operation`` (the transaction or statement that met it)."""

    kind: str
    cause: str
    operation: str
    since: dt.datetime = field(default_factory=utc_now)


class StorageHealth:
    """The database's state as last seen: available, or unavailable since a fault."""

    def __init__(self) -> None:
        self._fault: StorageFault | None = None
        self._faults = 0  # faults met so far: a probe proves nothing about one that came later
        self._changed = asyncio.Event()

    @property
    def fault(self) -> StorageFault | None:
        """The fault the database is unavailable since, or None while it is available."""
        return self._fault

    @property
    def available(self) -> bool:
        return self._fault is None

    @property
    def faults(self) -> int:
        """How many faults were met so far (a mark for :meth:`recovered`)."""
        return self._faults

    def failed(self, fault: StorageFault) -> None:
        self._faults += 1
        if self._fault is None:  # the first fault is the one reported, until recovery
            log.error(
                "storage.unavailable",
                fault=fault.kind,
                operation=fault.operation,
                error=fault.cause,
            )
            self._fault = fault
            self._changed.set()

    def recovered(self, faults_before: int) -> None:
        """A probe that began when :attr:`faults` was ``faults_before`` committed: available,
        unless a fault was met while it ran (a write failing as a small probe fits through)."""
        if self._fault is not None and self._faults == faults_before:
            down_s = (utc_now() - self._fault.since).total_seconds()
            log.warning("storage.available_again", fault=self._fault.kind, after_s=round(down_s, 1))
            self._fault = None
            self._changed.set()

    async def changed(self) -> None:
        """Return once the state changed since the last call."""
        await self._changed.wait()
        self._changed.clear()


class StorageMonitor:
    """Probes the database every ``period_s`` seconds and calls ``publish(available)`` each
    time the state changes: at once when a call or a probe meets a fault, without waiting for
    a probe under way. One probe at a time, each bounded by the storage engine's own timeouts
    (connect, pool, busy)."""

    def __init__(
        self,
        db: Database,
        period_s: float,
        publish: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._db = db
        self._period_s = period_s
        self._publish = publish
        self._published = True
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._probes(), name="govnode.storage.probes"),
                asyncio.create_task(self._reports(), name="govnode.storage.health"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _probes(self) -> None:
        health = self._db.health
        while True:
            await asyncio.sleep(self._period_s)
            size = 0 if health.available else RECOVERY_PROBE_BYTES
            try:
                await self._db.probe(size)
            except StorageUnavailable:
                pass  # noted in health (and logged there)
            except Exception:
                log.exception("storage.probe_failed")

    async def _reports(self) -> None:
        health = self._db.health
        while True:
            await health.changed()
            if health.available != self._published:
                self._published = health.available
                try:
                    await self._publish(self._published)
                except Exception:
                    log.exception("storage.health_publish_failed")
