"""Event-loop lag: how late the loop wakes a task that sleeps a fixed interval.

Every call, every stream and the metrics listener share one loop; anything that blocks it
(a slow synchronous step, a large reply built at once) delays them all. The monitor sleeps
``interval_s`` again and again and keeps the worst lateness of the last ``window_s`` (Ray's
event-loop monitor is the model), so a scrape every 15 s still sees a short stall.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from prometheus_client import Gauge

from node.tasks import BackgroundJob


class LoopLagMonitor(BackgroundJob):
    task_name = "govnode-loop-lag"

    def __init__(self, gauge: Gauge, *, interval_s: float = 0.25, window_s: float = 10.0) -> None:
        self._gauge = gauge
        self._interval = interval_s
        self._recent: deque[float] = deque(maxlen=max(1, round(window_s / interval_s)))

    async def _forever(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(self._interval)
            self._recent.append(max(0.0, time.monotonic() - began - self._interval))
            self._gauge.set(max(self._recent))
