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
