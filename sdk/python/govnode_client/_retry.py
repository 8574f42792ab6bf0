"""When a failed call is tried again, and after how long.

Reads are retried on UNAVAILABLE (the node, or the connection, is down for a moment) and on
RESOURCE_EXHAUSTED that carries ``retry-after-ms`` (a rate limit or quota saying when to come
back); a RESOURCE_EXHAUSTED without it (a message over a size limit, too many open streams)
is not retried: the same call would be refused again. Writes are retried only when the node
applies them at most once (they carry an idempotency key: README "Retrying a write"). Every
other status is final: INVALID_ARGUMENT, PERMISSION_DENIED and the like never change on retry.

Every attempt of a call shares the call's one deadline: a retry that would start after it is
not made, and the last error is raised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from govnode_client.errors import GovnodeError


@dataclass(frozen=True)
class Retry:
    """A retry policy: at most ``attempts`` attempts (1: never retry); waits between them grow
    from ``initial`` by ``multiplier`` up to ``maximum`` seconds, each drawn at random below
    its bound ("full jitter", so that many clients cut off at once do not come back at once);
    a refusal's ``retry-after-ms`` is honoured instead (plus up to ``pushback_jitter`` of it)."""

    attempts: int = 5
    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    pushback_jitter: float = 0.1

    def delay(self, error: GovnodeError, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` after ``error``, or None: do not retry."""
        if attempt >= self.attempts:
            return None
        if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            if error.retry_after is None:
                return None
            return error.retry_after * (1 + random.uniform(0, self.pushback_jitter))
        if error.code is grpc.StatusCode.UNAVAILABLE:
            bound = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
            return random.uniform(0, bound)
        return None


#: Reads, and writes the node applies at most once.
DEFAULT_RETRY = Retry()
#: Writes without an idempotency key: a retry could apply them twice.
NO_RETRY = Retry(attempts=1)
