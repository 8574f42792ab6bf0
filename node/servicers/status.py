"""The one place domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from gateway.refusal import RETRY_AFTER_KEY
from node import errors

__all__ = ["RETRY_AFTER_KEY", "status_for", "trailing_metadata_for"]

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def trailing_metadata_for(exc: errors.DomainError) -> tuple[tuple[str, str], ...]:
    """Machine-readable facts sent with the status: the retry delay of a quota refusal."""
    if isinstance(exc, errors.ResourceExhausted) and exc.retry_after_s is not None:
        return ((RETRY_AFTER_KEY, str(max(1, round(exc.retry_after_s * 1000)))),)
    return ()


def status_for(exc: errors.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.FAILED_PRECONDITION
