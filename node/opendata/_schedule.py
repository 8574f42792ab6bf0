"""Publishing served datasets again on their entries' update cycles (更新周期, 第二十一条, and
第二十九条's open catalog kept current): every ``[opendata] republish_check_seconds`` the node
looks for datasets that are due (node.opendata._publish.OpenData.due) and publishes them."""

from __future__ import annotations

import asyncio

import structlog

from node.opendata._publish import OpenData
from node.tasks import BackgroundJob

log = structlog.get_logger("govnode.opendata")


class Republisher(BackgroundJob):
    """Runs :meth:`OpenData.republish_due` on schedule until :meth:`stop`."""

    task_name = "opendata.republish"

    def __init__(self, opendata: OpenData, by: str, every_seconds: float) -> None:
        self._opendata = opendata
        self._by = by
        self._every_s = every_seconds

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self._opendata.republish_due(self._by)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("opendata.republish_error")
