"""Retrying a write: one ``request_id`` is one request, applied once (govnode.v1 idempotency).

A caller may attach a ``request_id`` to the writes that take one (RegisterResource,
UpdateResource, WithdrawResource, Apply, WithdrawApplication, ReviewApplication, RevokeGrant,
RequestRecordChange, ReviewChangeRequest), so that it, the gateway or an agency system may
retry after UNAVAILABLE or DEADLINE_EXCEEDED without applying the change twice. The first
outcome is kept per caller in ``request_log`` (:class:`node.models.RequestLogRow`), written in
the same transaction as the change: a retry with the same id gets that outcome back, and an id
is never used for two requests.

Ids are per caller and shared by every kind of write: an id the caller used for one operation
on one object is refused (INVALID_ARGUMENT, :func:`reused`) for another operation, or for the
same operation on another object, rather than replayed as if it were the first request.

How a write uses it, inside its write transaction::

    if (done := await replay(db, session, caller, request_id, "revoke_grant", grant_id)):
        return the outcome named by done
    ... make the change ...
    remember(session, caller, request_id, "revoke_grant", grant_id, outcome, now)

No grpc.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity
from gateway.quote import quote
from node.errors import InvalidArgument
from node.models import RequestLogRow
from node.storage import Database

__all__ = [
    "MAX_REQUEST_ID",
    "QUOTED_ID_CHARS",
    "check_request_id",
    "remember",
    "replay",
    "reused",
]

#: The longest request id (characters); a UUID or a ULID fits with room to spare.
MAX_REQUEST_ID = 128
#: Characters of a reused id a refusal quotes: enough to recognise it, never a long echo.
QUOTED_ID_CHARS = 32


def check_request_id(request_id: str) -> None:
    """Refuse an id too long to store or that would not print ("" means "no id": allowed)."""
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument(f"request_id: at most {MAX_REQUEST_ID} printable characters")


def reused(request_id: str, operation: str, object_ref: str) -> InvalidArgument:
    """The one refusal of an id that already named another request (``operation`` on
    ``object_ref`` is the earlier request)."""
    return InvalidArgument(
        f"request_id: {quote(request_id, QUOTED_ID_CHARS)} was already used by this caller "
        f"for {operation} of {quote(object_ref)}; use a new id for a new request"
    )


async def replay(
    db: Database,
    session: AsyncSession,
    caller: Identity,
    request_id: str,
    operation: str,
    object_ref: str,
) -> str | None:
    """The stored outcome of this caller's earlier ``operation`` on ``object_ref`` with this
    id (a version or the id of what it made), or None when the id is new (or "").

    Call it first in the write transaction: it takes the lock ``request:<caller>:<id>``, so two
    retries of one request racing each other apply it once (a PostgreSQL advisory lock; on
    SQLite, BEGIN IMMEDIATE already serialises writers), then reads.
    """
    if not request_id:
        return None
    check_request_id(request_id)
    await db.lock(session, f"request:{caller.uri}:{request_id}")
    done = await session.get(RequestLogRow, (caller.uri, request_id))
    if done is None:
        return None
    if (done.operation, done.object_ref) != (operation, object_ref):
        raise reused(request_id, done.operation, done.object_ref)
    return done.outcome


def remember(
    session: AsyncSession,
    caller: Identity,
    request_id: str,
    operation: str,
    object_ref: str,
    outcome: str,
    now: dt.datetime,
) -> None:
    """Record the outcome of a request that carried an id, in the transaction of its change
    (nothing for a request without one)."""
    if request_id:
        session.add(
            RequestLogRow(
                caller=caller.uri,
                request_id=request_id,
                operation=operation,
                object_ref=object_ref,
                outcome=outcome,
                created_at=now,
            )
        )
