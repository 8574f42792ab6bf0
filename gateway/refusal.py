"""How a servicer ends a call with a status.

Servicers raise :class:`Refusal` instead of calling ``context.abort()``: grpc.aio sends the
status the moment ``abort`` is awaited, and the guard must first make the call's audit record
durable. The guard catches the refusal, audits it, then aborts with its code and message.
"""

from __future__ import annotations

import grpc

#: Trailing metadata key of a refusal's retry delay, in whole milliseconds (RESOURCE_EXHAUSTED).
#: A node forwarding a call passes it back to the caller unchanged (gateway.forward).
RETRY_AFTER_KEY = "retry-after-ms"

#: The same delay under gRPC's own key (gRFC A6): a stock gRPC client whose service config
#: retries RESOURCE_EXHAUSTED waits this long before its next attempt, with no code of ours.
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_after(milliseconds: int) -> tuple[tuple[str, str], ...]:
    """The trailing metadata of a refusal to retry after ``milliseconds`` (at least 1): under
    govnode's key and gRPC's, with the same value, wherever the node sends one."""
    value = str(max(1, milliseconds))
    return ((RETRY_AFTER_KEY, value), (PUSHBACK_KEY, value))


class Refusal(Exception):
    """``trailing_metadata``: machine-readable facts sent with the status (such as
    ``retry-after-ms`` with RESOURCE_EXHAUSTED), as (key, value) pairs of ASCII text."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.trailing_metadata = trailing_metadata
