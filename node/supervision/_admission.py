"""How many new compliance reports the node counts, so that no caller can keep it busy.

A new report counts an agency's audit records over up to 366 days: far more work than any
other call, and it stores a report. :class:`ReportAdmission` bounds it twice, in this process's
memory (each process of a node protects itself, like the join port's limit in
gateway.ratelimit):

- per caller, ``per_caller_per_hour`` new reports an hour (a token bucket: bursts up to that
  many), so one agency asking again and again is told when to come back, with
  ``retry-after-ms``; reading a stored report by its id is never limited;
- on the node, at most ``at_once`` reports counted at the same time, whoever asks: the next
  is refused at once, before its caller's budget is spent.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from gateway.ratelimit import KeyedBuckets
from node.errors import ResourceExhausted

#: Callers whose budgets are remembered (the least recently seen forgotten first).
MAX_CALLERS = 10_000
#: What a caller refused because the node is counting others' reports is told to wait.
BUSY_RETRY_S = 2.0


class ReportAdmission:
    def __init__(
        self,
        *,
        per_caller_per_hour: int,
        at_once: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``per_caller_per_hour`` 0: no limit per caller."""
        if at_once < 1:
            raise ValueError("at_once must be at least 1")
        self._per_hour = per_caller_per_hour
        self._at_once = at_once
        self._buckets = KeyedBuckets(max_keys=MAX_CALLERS, clock=clock)
        self._counting = 0

    @property
    def counting(self) -> int:
        """Reports being counted now."""
        return self._counting

    @contextlib.contextmanager
    def admitted(self, caller: str) -> Iterator[None]:
        """Hold one of the node's places for a report ``caller`` asked for, or refuse it
        with RESOURCE_EXHAUSTED saying when to try again."""
        if self._counting >= self._at_once:
            raise ResourceExhausted(
                f"compliance reports: {self._counting} are being counted on this node now "
                f"(at most {self._at_once} at once); retry in {BUSY_RETRY_S:.0f} s",
                retry_after_s=BUSY_RETRY_S,
            )
        if self._per_hour:
            wait = self._buckets.take(
                caller, burst=self._per_hour, per_minute=self._per_hour / 60.0
            )
            if wait > 0:
                raise ResourceExhausted(
                    f"compliance reports: at most {self._per_hour} new reports an hour per "
                    "caller (each counts the audit log over its period); read a stored one "
                    f"with report_id, or retry in {math.ceil(wait)} s",
                    retry_after_s=wait,
                )
        self._counting += 1
        try:
            yield
        finally:
            self._counting -= 1
