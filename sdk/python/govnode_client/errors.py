"""The one exception hierarchy of the SDK: one class per gRPC status code a govnode node sends.

Every error carries what a caller needs to act or to ask the operator: the status ``code``, the
node's ``message`` (already clipped by the node to at most 1 KiB), the call's ``request_id``
(the node files the call under it in its audit log and node log) and, for a refusal that says
when to come back (RESOURCE_EXHAUSTED over a rate limit or quota), ``retry_after`` in seconds.

    try:
        await gn.sharing.verify(resource_code=code, key=key, claimed=claimed)
    except errors.PermissionDenied as exc:
        print(exc.message, exc.request_id)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import grpc
import grpc.aio

__all__ = [
    "REQUEST_ID_KEY",
    "RETRY_AFTER_KEY",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "GovnodeError",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "from_rpc_error",
]

#: Metadata key of the call's request id: sent by the SDK with every attempt of a call, and
#: returned by the node with every refusal.
REQUEST_ID_KEY = "govnode-request-id"
#: Trailing metadata key of a refusal's retry delay, in whole milliseconds.
RETRY_AFTER_KEY = "retry-after-ms"

#: A retry delay longer than this many digits is not a delay (a day is 8 digits of ms).
_MAX_DELAY_DIGITS = 10


class GovnodeError(Exception):
    """A call the node (or the connection to it) ended with a status other than OK."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        request_id: str = "",
        retry_after: float | None = None,
        trailing_metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after
        self.trailing_metadata = trailing_metadata

    def __str__(self) -> str:
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.code.name}: {self.message}{rid}"


class Cancelled(GovnodeError):
    code = grpc.StatusCode.CANCELLED


class Unknown(GovnodeError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(GovnodeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(GovnodeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(GovnodeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(GovnodeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(GovnodeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(GovnodeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GovnodeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(GovnodeError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(GovnodeError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(GovnodeError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(GovnodeError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(GovnodeError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(GovnodeError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(GovnodeError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[GovnodeError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def _text_pairs(metadata: Any) -> tuple[tuple[str, str], ...]:
    # grpc.aio's Metadata yields (key, value) pairs; binary values (keys ending -bin) are bytes.
    pairs = cast(Iterable[tuple[str, str | bytes]], metadata or ())
    return tuple((k, v) for k, v in pairs if isinstance(v, str))


def _retry_after(pairs: tuple[tuple[str, str], ...]) -> float | None:
    for key, value in pairs:
        if key == RETRY_AFTER_KEY and value.isdigit() and len(value) <= _MAX_DELAY_DIGITS:
            return int(value) / 1000
    return None


def from_rpc_error(exc: grpc.aio.AioRpcError, sent_request_id: str = "") -> GovnodeError:
    """The SDK's error for a failed call: the node's request id from the trailing metadata
    (else the one the SDK sent: a connection that failed before the node answered has none)."""
    pairs = _text_pairs(exc.trailing_metadata())
    request_id = next((v for k, v in pairs if k == REQUEST_ID_KEY), sent_request_id)
    code = exc.code()
    cls = _BY_CODE.get(code, GovnodeError)
    return cls(
        exc.details() or "",
        code=code,
        request_id=request_id,
        retry_after=_retry_after(pairs),
        trailing_metadata=pairs,
    )
