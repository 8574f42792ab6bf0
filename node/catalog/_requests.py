"""Idempotent catalog writes: a retry with the same ``request_id`` gets the first outcome.

govnode.v1 lets a client attach a ``request_id`` to RegisterResource, UpdateResource and
WithdrawResource so that the gateway (or an agency system) may retry after UNAVAILABLE or
DEADLINE_EXCEEDED without applying the change twice. The outcome is kept per caller in
``catalog_request``, written in the same transaction as the change itself.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity
from node.catalog._types import ResourceEntry, entry_from_json
from node.errors import InvalidArgument, NotFound
from node.models import CatalogEntryVersionRow, CatalogRequestRow
from node.storage import Database

MAX_REQUEST_ID = 128


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID or not request_id.isprintable():
        raise InvalidArgument(f"request_id: at most {MAX_REQUEST_ID} printable characters")


async def replay(
    db: Database,
    session: AsyncSession,
    caller: Identity,
    request_id: str,
    operation: str,
    code: str,
) -> ResourceEntry | None:
    """The outcome of an earlier request with this id from this caller, or None."""
    if not request_id:
        return None
    # Serialises two retries of one request racing each other (PostgreSQL advisory lock;
    # SQLite's BEGIN IMMEDIATE already serialises writers).
    await db.lock(session, f"catalog.request:{caller.uri}:{request_id}")
    done = await session.get(CatalogRequestRow, (caller.uri, request_id))
    if done is None:
        return None
    if (done.operation, done.resource_code) != (operation, code):
        raise InvalidArgument(
            f"request_id: {request_id!r} was already used by this caller for "
            f"{done.operation} of {done.resource_code}; use a new id for a new request"
        )
    version = await session.get(CatalogEntryVersionRow, (code, done.version))
    if version is None:  # versions are never deleted; this would be a corrupted database
        raise NotFound(f"resource {code} has no version {done.version}")
    return entry_from_json(version.body)


def remember(
    session: AsyncSession,
    caller: Identity,
    request_id: str,
    operation: str,
    entry: ResourceEntry,
    now: dt.datetime,
) -> None:
    """Record the outcome of a request that carried an id (same transaction as the change)."""
    if request_id:
        session.add(
            CatalogRequestRow(
                caller=caller.uri,
                request_id=request_id,
                operation=operation,
                resource_code=entry.resource_code,
                version=entry.version,
                created_at=now,
            )
        )
