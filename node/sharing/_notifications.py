"""Notifications this node makes for one party (an agency, an authority): applications received
and reviewed (第二十五条), grants revoked, suspected enumeration (第三十七条), change requests
(第四十一条).

A notification is written in the same transaction as the fact it reports (:meth:`add`), so a
reader never sees one without the other. Ids increase on this node; readers page with
``after_id`` (ListNotifications) or follow the stream (WatchNotifications), which wakes on
:meth:`Notifications.changed` after every commit that added one.

Pure domain and storage: no grpc.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import Collection
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.models import NotificationRow
from node.storage import Database

MAX_PAGE = 500


class NotificationKind(enum.StrEnum):
    """Mirrors govnode.v1.NotificationKind (names without the prefix, lower case)."""

    APPLICATION_RECEIVED = "application_received"
    APPLICATION_REVIEWED = "application_reviewed"
    GRANT_REVOKED = "grant_revoked"
    DATA_ERROR_REPORTED = "data_error_reported"
    USAGE = "usage"
    ENUMERATION_SUSPECTED = "enumeration_suspected"
    CHANGE_REQUESTED = "change_requested"
    CHANGE_REVIEWED = "change_reviewed"
    DATA_ERROR_RESOLVED = "data_error_resolved"
    OPEN_APPLICATION_REVIEWED = "open_application_reviewed"
    AUDIT_LOG_MISBEHAVED = "audit_log_misbehaved"
    RECTIFICATION_NOTICE = "rectification_notice"
    DATA_CORRECTED = "data_corrected"


@dataclass(frozen=True)
class Notification:
    id: int
    kind: NotificationKind
    recipient: str  # SPIFFE ID
    message: str
    at: dt.datetime
    resource_code: str = ""
    application_id: str = ""
    grant_id: str = ""
    change_request_id: str = ""
    audit_sequence: int = 0
    #: Made at another node and delivered here (node.federation._notices): its region and
    #: its id there; empty and 0 when this node made it.
    origin_region: str = ""
    origin_id: int = 0
    data_error_id: str = ""


def _from_row(row: NotificationRow) -> Notification:
    assert row.id is not None
    return Notification(
        id=row.id,
        kind=NotificationKind(row.kind),
        recipient=row.recipient,
        message=row.message,
        at=row.at,
        resource_code=row.resource_code,
        application_id=row.application_id,
        grant_id=row.grant_id,
        change_request_id=row.change_request_id,
        audit_sequence=row.audit_sequence,
        origin_region=row.origin_region,
        origin_id=row.origin_id,
        data_error_id=row.data_error_id,
    )


def notification_from_row(row: NotificationRow) -> Notification:
    """The notification a stored row holds (for node.federation's delivery)."""
    return _from_row(row)


class Notifications:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        """An event set after the next commit that added a notification (then replaced)."""
        return self._changed

    def notify_changed(self) -> None:
        """Wake the watchers; call after committing a transaction that used :meth:`add`."""
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    def add(
        session: AsyncSession,
        recipient: str,
        kind: NotificationKind,
        message: str,
        *,
        at: dt.datetime,
        resource_code: str = "",
        application_id: str = "",
        grant_id: str = "",
        change_request_id: str = "",
        audit_sequence: int = 0,
        data_error_id: str = "",
    ) -> None:
        """Add a notification inside the caller's transaction (committed with it)."""
        session.add(
            NotificationRow(
                recipient=recipient,
                kind=kind.value,
                message=message,
                at=at,
                resource_code=resource_code,
                application_id=application_id,
                grant_id=grant_id,
                change_request_id=change_request_id,
                audit_sequence=audit_sequence,
                data_error_id=data_error_id,
            )
        )

    async def notify(
        self,
        recipient: str,
        kind: NotificationKind,
        message: str,
        *,
        resource_code: str = "",
        application_id: str = "",
        grant_id: str = "",
        change_request_id: str = "",
        audit_sequence: int = 0,
    ) -> None:
        """Add one notification in a transaction of its own and wake the watchers."""
        now = dt.datetime.now(dt.UTC)

        async def txn(session: AsyncSession) -> None:
            self.add(
                session,
                recipient,
                kind,
                message,
                at=now,
                resource_code=resource_code,
                application_id=application_id,
                grant_id=grant_id,
                change_request_id=change_request_id,
                audit_sequence=audit_sequence,
            )

        await self._db.write("notifications.notify", txn)
        self.notify_changed()

    async def list_for(
        self,
        recipient: str,
        *,
        after_id: int = 0,
        kinds: Collection[NotificationKind] = (),
        limit: int = 100,
    ) -> list[Notification]:
        """``recipient``'s notifications with ids above ``after_id``, oldest first."""
        size = max(1, min(limit, MAX_PAGE))

        async def txn(session: AsyncSession) -> list[Notification]:
            query = select(NotificationRow).where(
                NotificationRow.recipient == recipient, col(NotificationRow.id) > after_id
            )
            if kinds:
                query = query.where(col(NotificationRow.kind).in_([k.value for k in kinds]))
            rows = await session.exec(query.order_by(col(NotificationRow.id)).limit(size))
            return [_from_row(r) for r in rows.all()]

        return await self._db.read("notifications.list", txn)
