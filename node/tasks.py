"""The node's background jobs: each one asyncio task, from ``start()`` until ``stop()``.

A job (the daily quality check, checkpoint publishing, notice delivery, ...) subclasses
:class:`BackgroundJob`, names its task and writes ``_forever``; starting twice starts one task,
and stopping cancels it and waits until it has ended, so that a stopping node closes its
database only after no job is left using it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar


class BackgroundJob:
    #: The asyncio task's name (seen in task dumps and in asyncio's debug warnings).
    task_name: ClassVar[str]
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever(), name=self.task_name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forever(self) -> None:
        raise NotImplementedError
