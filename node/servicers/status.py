"""The one place domain errors become gRPC status codes."""

from __future__ import annotations

import grpc
import structlog

from gateway.interceptors import AUDIT_FAILED_MESSAGE, current_request_id
from gateway.refusal import RETRY_AFTER_KEY, Refusal, retry_after
from node import errors
from node.audit import AuditLogClosed, AuditWriteFailed

__all__ = ["RETRY_AFTER_KEY", "refusal_for", "refusal_of", "status_for", "trailing_metadata_for"]

log = structlog.get_logger("govnode.node")

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}


def trailing_metadata_for(exc: errors.DomainError) -> tuple[tuple[str, str], ...]:
    """Machine-readable facts sent with the status: the retry delay of a quota refusal, what
    an aborted request should retry with."""
    if isinstance(exc, errors.Aborted):
        return exc.metadata
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_s is not None:
        return retry_after(round(exc.retry_after_s * 1000))
    return ()


def status_for(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


def refusal_of(exc: errors.DomainError) -> Refusal:
    """The status a caller gets for ``exc``.

    A fault of the node's database is UNAVAILABLE with a message saying to try again later and
    naming the call's request id; the driver's text goes to the node log, under that id."""
    if isinstance(exc, errors.StorageUnavailable):
        request_id = current_request_id()
        log.error(
            "call_storage_unavailable",
            request_id=request_id,
            fault=exc.kind,
            operation=exc.operation,
            error=exc.cause,
        )
        message = f"{exc.message} (request id {request_id})" if request_id else exc.message
        return Refusal(grpc.StatusCode.UNAVAILABLE, message)
    return Refusal(status_for(exc), exc.message, trailing_metadata_for(exc))


def refusal_for(exc: Exception) -> Refusal | None:
    """The status for an exception that left a call outside the servicers' own mapping (the
    guard's authentication, a forwarded call's nonce, an audit record a servicer writes
    itself), or None for a bug, which the guard answers INTERNAL."""
    if isinstance(exc, errors.DomainError):
        return refusal_of(exc)
    if isinstance(exc, AuditWriteFailed | AuditLogClosed):
        log.error("audit_failed", request_id=current_request_id(), error=str(exc))
        return Refusal(grpc.StatusCode.UNAVAILABLE, AUDIT_FAILED_MESSAGE)
    return None
