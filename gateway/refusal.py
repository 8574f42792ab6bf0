"""How a servicer ends a call with a status.

Servicers raise :class:`Refusal` instead of calling ``context.abort()``: grpc.aio sends the
status the moment ``abort`` is awaited, and the guard must first make the call's audit record
durable. The guard catches the refusal, audits it, then aborts with its code and message.
"""

from __future__ import annotations

import grpc


class Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
