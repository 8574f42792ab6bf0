"""The daily quality check (定期检查, 第十五条): at ``[quality] check_time`` China Standard Time
every day the node checks every resource it owns (node.quality.Quality.check_all), as the
open data Republisher republishes on its schedule."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import structlog

from node.quality._checks import Quality
from node.tasks import BackgroundJob
from node.times import CST

log = structlog.get_logger("govnode.quality")


def next_run(now: dt.datetime, check_time: str) -> dt.datetime:
    """The first ``check_time`` (HH:MM, China Standard Time) strictly after ``now``."""
    hours, minutes = (int(part) for part in check_time.split(":"))
    local = now.astimezone(CST)
    at = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if at <= local:
        at += dt.timedelta(days=1)
    return at.astimezone(dt.UTC)


class DailyCheck(BackgroundJob):
    """Runs :meth:`Quality.check_all` at ``check_time`` each day until :meth:`stop`."""

    task_name = "quality.daily_check"

    def __init__(
        self,
        quality: Quality,
        by: str,
        check_time: str,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._quality = quality
        self._by = by
        self._check_time = check_time
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        #: Set after each daily run (tests and operators wait on it, not on the clock).
        self.ran = asyncio.Event()

    async def _forever(self) -> None:
        while True:
            now = self._clock()
            due = next_run(now, self._check_time)
            await asyncio.sleep(max(0.0, (due - now).total_seconds()))
            try:
                # A resource another process of this node checked since it was due is done.
                reports = await self._quality.check_all(self._by, unless_checked_since=due)
                log.info("quality.checked", resources=len(reports))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("quality.check_error")
            self.ran.set()
