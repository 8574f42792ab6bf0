"""Errors a caller can cause, as domain exceptions.

Domain modules raise these; the gRPC layer maps each class to one status code in one place
(``node.servicers.status``), so the domain never imports grpc. Messages name the field, the
rule and, where useful, the article of the Measures, because they reach the caller verbatim.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a refusal whose message is safe and useful to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request itself is wrong (bad code, missing field, rule broken)."""


class NotFound(DomainError):
    """The thing the request names does not exist here."""


class AlreadyExists(DomainError):
    """The thing the request would create exists already."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class Unauthenticated(DomainError):
    """The caller's identity could not be established or is no longer trusted."""


class FailedPrecondition(DomainError):
    """The request is well-formed but the system is not in a state that allows it."""


class Aborted(DomainError):
    """The request raced another change and lost; the caller retries with what ``metadata``
    (machine-readable key/value pairs sent with the status) tells it."""

    def __init__(self, message: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.metadata = metadata


class ResourceExhausted(DomainError):
    """A quota or size limit was hit. ``retry_after_s``: when the caller may try again, if known
    (sent to the caller as machine-readable retry information, node.servicers.status)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OutOfRange(DomainError):
    """A position the request names is past the end of what it reads (a byte offset past a
    file's size)."""


class DataLoss(DomainError):
    """What the node was about to hand over is not what it promised (a file whose bytes do
    not match the digest sent first): the caller discards it and tries again."""


class Unavailable(DomainError):
    """A node the request needs cannot be reached."""


class StorageUnavailable(Unavailable):
    """The node's own database cannot be used right now: the connection was lost, the server
    is gone or refuses connections, the disk is full, the database is read-only, or it did
    not answer in time. A fault of the node, not of the request, so the caller is told only
    to try again later; ``kind`` (a short phrase such as "disk full") and ``cause`` (the
    driver's own text) are for the node log, never for the caller."""

    def __init__(self, operation: str, kind: str, cause: str) -> None:
        super().__init__(STORAGE_UNAVAILABLE_MESSAGE)
        self.operation = operation
        self.kind = kind
        self.cause = cause


STORAGE_UNAVAILABLE_MESSAGE = "the node's database is unavailable; try again later"
