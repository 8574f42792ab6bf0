"""FederationService/DeliverNotifications: notifications another node made for recipients this
node serves (or, at the province, relays to a city). The checks and the once-only store are
node.federation._notices'; this is the wire translation, and the watchers' wake-up."""

from __future__ import annotations

from typing import Any

from govnode.v1 import access_pb2, federation_pb2

from gateway.auth import current_peer
from gateway.interceptors import add_audit_detail
from node.errors import InvalidArgument
from node.federation import MAX_BATCH, NoticeInbox
from node.servicers.access import notification_proto
from node.servicers.convert import time_from_proto
from node.sharing import Notification, NotificationKind, Notifications

_KIND_NAMES = access_pb2.NotificationKind.DESCRIPTOR.values_by_number


def notification_kind(value: int, field: str) -> NotificationKind:
    entry = _KIND_NAMES.get(value)
    try:
        if entry is None or value == 0:
            raise ValueError
        return NotificationKind(entry.name.removeprefix("NOTIFICATION_KIND_").lower())
    except ValueError:
        raise InvalidArgument(f"{field}: {value} is not a NotificationKind") from None


def notification_from_proto(msg: access_pb2.Notification, field: str) -> Notification:
    """A delivered notification (its origin fields as sent; checked by NoticeInbox)."""
    if not msg.HasField("at"):
        raise InvalidArgument(f"{field}.at is required")
    return Notification(
        id=0,
        kind=notification_kind(msg.kind, f"{field}.kind"),
        recipient=msg.recipient,
        message=msg.message,
        at=time_from_proto(msg.at, f"{field}.at"),
        resource_code=msg.resource_code,
        application_id=msg.application_id,
        grant_id=msg.grant_id,
        change_request_id=msg.change_request_id,
        data_error_id=msg.data_error_id,
        audit_sequence=msg.audit_sequence,
        origin_region=msg.origin_region,
        origin_id=msg.origin_id,
    )


def delivery_proto(n: Notification) -> access_pb2.Notification:
    """A notification as delivered to the next node: its origin set, no local id."""
    out = notification_proto(n)
    out.id = 0
    return out


class NoticesServicer:
    def __init__(self, inbox: NoticeInbox, notifications: Notifications) -> None:
        self._inbox = inbox
        self._notifications = notifications

    async def DeliverNotifications(
        self, request: federation_pb2.DeliverNotificationsRequest, context: Any
    ) -> federation_pb2.DeliverNotificationsResponse:
        sender = current_peer().identity
        await self._inbox.check_sender(sender)  # before anything of the request is looked at
        if len(request.notifications) > MAX_BATCH:
            raise InvalidArgument(
                f"notifications: at most {MAX_BATCH} in one delivery, got "
                f"{len(request.notifications)}"
            )
        batch = [
            notification_from_proto(msg, f"notifications[{i}]")
            for i, msg in enumerate(request.notifications)
        ]
        stored, held = await self._inbox.accept(sender, batch)
        if stored:
            self._notifications.notify_changed()
        add_audit_detail(notices_stored=stored, notices_held=held)
        return federation_pb2.DeliverNotificationsResponse(stored=stored, already_held=held)
