"""Notifications across nodes: store and forward (第十九条 互联互通, for 第十六、二十五条).

A notification is made at the node where its fact happened (node.sharing._notifications), but
its recipient reads notifications at its own region's node: an applicant at 厦门 whose
application for a 福州 resource was reviewed, a consumer on another node that received a record
later corrected. So every node delivers the notifications it holds for another region's
recipients (the region is the host of the recipient's SPIFFE id) to that region's node, over
the star: a city to the province; the province keeps those for its own region's recipients and
delivers the others to their city (a row it received for another city is again one for a remote
recipient, so its own delivery carries it on).

- **Outbox** (:class:`NoticeOutbox`): per destination region, the notifications with an id
  above that region's cursor (``notice_cursor``), in id order, a bounded page at a time. The
  cursor moves only after the next node acknowledged the page: at least once over the wire.
- **Inbox** (:class:`NoticeInbox`): what a peer delivers is checked (a node, a federation
  peer, a city only its own node's notifications, recipients this node serves or relays to,
  every field bounded) and stored once, keyed by its origin (region, id) under the unique
  index ``ux_notification_origin``: exactly once at the receiver, a resend stores nothing.

Pure domain and storage: no grpc; the servicer and the delivery task (node.clients) convert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, IdentityError, Role, parse_spiffe
from gateway.quote import quote
from node.codes import Region, region_problem
from node.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from node.models import NoticeCursorRow, NotificationRow
from node.sharing import Notification, notification_from_row
from node.storage import Database, utc_now

__all__ = [
    "MAX_BATCH",
    "MAX_MESSAGE_BYTES",
    "NoticeInbox",
    "NoticeOutbox",
]

#: Most notifications in one delivery (FederationService.DeliverNotifications).
MAX_BATCH = 200
#: Longest message of a delivered notification, in UTF-8 bytes.
MAX_MESSAGE_BYTES = 2048
#: Longest application, grant, change request or data error id; longest recipient.
MAX_ID_LEN = 64
MAX_RECIPIENT_LEN = 300
MAX_CODE_LEN = 15
MAX_ORIGIN_ID = 2**63 - 1
#: A delivered notification may not claim to be made further in the future than this (clocks).
MAX_FUTURE = dt.timedelta(minutes=10)

_SPIFFE = "spiffe://"
_STORE_LOCK = "govnode.notice_inbox."


def _prefix(region: str) -> str:
    # Regions are six digits: nothing in them is a LIKE wildcard.
    return f"{_SPIFFE}{region}.%"


class NoticeOutbox:
    """The notifications this node holds for other regions' recipients, and how far each
    destination region has had them delivered."""

    def __init__(self, db: Database, region: str) -> None:
        self._db = db
        self.region = region

    @property
    def backend(self) -> str:
        """The database's backend (``sqlite``, ``postgresql``): ids commit in order on SQLite
        only (node.clients' delivery waits for them to settle on PostgreSQL)."""
        return self._db.backend

    async def last_id(self) -> int:
        row = await self._db.fetch_one("SELECT MAX(id) FROM notification", {})
        return 0 if row is None or row[0] is None else int(row[0])

    async def destinations(self, after_id: int, upto_id: int, limit: int = 100) -> list[str]:
        """The regions other than this node's whose recipients have notifications with ids in
        (``after_id``, ``upto_id``], at most ``limit`` of them."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT substr(recipient, 10, 6) FROM notification "
            "WHERE id > :after AND id <= :upto AND recipient NOT LIKE :own "
            "ORDER BY 1 LIMIT :limit",
            {"after": after_id, "upto": upto_id, "own": _prefix(self.region), "limit": limit},
        )
        return [str(r[0]) for r in rows if r[0] and region_problem(str(r[0])) is None]

    async def cursor(self, destination: str) -> int:
        """The highest id delivered for ``destination``'s recipients (0 for none yet)."""

        async def txn(session: AsyncSession) -> int:
            row = await session.get(NoticeCursorRow, destination)
            return 0 if row is None else row.last_delivered_id

        return await self._db.read("notices.cursor", txn)

    async def pending(
        self, destination: str, *, upto: int, limit: int = MAX_BATCH
    ) -> tuple[int, list[Notification]]:
        """The cursor of ``destination`` and the next notifications after it for its
        recipients, up to id ``upto``, oldest first, at most ``limit``; each carries its
        origin (this node's region and id for its own). Fewer than ``limit`` means none is
        left up to ``upto``, so the cursor may move there once they are delivered (the
        scan need not pass the other regions' notifications again)."""
        size = max(1, min(limit, MAX_BATCH))

        async def txn(session: AsyncSession) -> tuple[int, list[Notification]]:
            cursor = await session.get(NoticeCursorRow, destination)
            after = 0 if cursor is None else cursor.last_delivered_id
            rows = await session.exec(
                select(NotificationRow)
                .where(
                    col(NotificationRow.id) > after,
                    col(NotificationRow.id) <= upto,
                    col(NotificationRow.recipient).like(_prefix(destination)),
                )
                .order_by(col(NotificationRow.id))
                .limit(size)
            )
            found = []
            for row in rows.all():
                n = notification_from_row(row)
                if not n.origin_region:
                    n = replace(n, origin_region=self.region, origin_id=n.id)
                found.append(n)
            return after, found

        return await self._db.read("notices.pending", txn)

    async def delivered(self, destination: str, last_id: int) -> None:
        """The next node acknowledged ``destination``'s notifications up to ``last_id``."""

        async def txn(session: AsyncSession) -> None:
            await self._db.lock(session, "govnode.notice_cursor." + destination)
            row = await session.get(NoticeCursorRow, destination, with_for_update=True)
            now = utc_now()
            if row is None:
                session.add(
                    NoticeCursorRow(
                        destination_region=destination, last_delivered_id=last_id, updated_at=now
                    )
                )
            elif last_id > row.last_delivered_id:  # another process of this node may be ahead
                row.last_delivered_id = last_id
                row.updated_at = now

        await self._db.write("notices.delivered", txn)


class NoticeInbox:
    """Checks and stores what a peer node delivers.

    ``is_member``: whether a region is a city the province federates with (it joined, or was
    heard from, or is configured in ``[federation] peers``); used on the province only.
    """

    def __init__(
        self,
        db: Database,
        region: str,
        trust_domain: str,
        is_member: Callable[[str], Awaitable[bool]],
    ) -> None:
        self._db = db
        self.region = region
        self.province = Region(region).province_code
        self._trust_domain = trust_domain
        self._is_member = is_member

    @property
    def is_province(self) -> bool:
        return self.region == self.province

    async def check_sender(self, sender: Identity) -> None:
        """Only a federation peer's node delivers: to the province a member city, to a city
        its province."""
        if sender.role is not Role.NODE:
            raise PermissionDenied(
                f"{sender} may not deliver notifications: only govnode nodes deliver "
                "notifications to each other; an agency or authority cannot add any"
            )
        if self.is_province:
            region = sender.region
            if (
                region_problem(region) is not None
                or Region(region).is_province
                or not Region(self.province).contains(region)
                or not await self._is_member(region)
            ):
                raise PermissionDenied(
                    f"{sender} may not deliver notifications: it is not a city node that has "
                    f"joined province {self.province}"
                )
        elif sender.region != self.province:
            raise PermissionDenied(
                f"{sender} may not deliver notifications: this city node takes notifications "
                f"from its province {self.province} only"
            )

    async def _check(
        self, i: int, n: Notification, sender: Identity, members: dict[str, bool]
    ) -> None:
        field = f"notifications[{i}]"
        origin = n.origin_region
        if region_problem(origin) is not None or not Region(self.province).contains(origin):
            raise InvalidArgument(
                f"{field}.origin_region: {quote(origin)} is not a node region of province "
                f"{self.province}"
            )
        if not Region(sender.region).is_province and origin != sender.region:
            raise PermissionDenied(
                f"{field}: {sender} may deliver only notifications its own node made (origin "
                f"{sender.region}), not one from {origin}"
            )
        if origin == self.region:
            raise InvalidArgument(
                f"{field}.origin_region: {origin} is this node: its own notifications are not "
                "delivered back to it"
            )
        if not 0 < n.origin_id <= MAX_ORIGIN_ID:
            raise InvalidArgument(f"{field}.origin_id: must be positive, got {n.origin_id}")
        if len(n.recipient) > MAX_RECIPIENT_LEN:
            raise InvalidArgument(
                f"{field}.recipient: at most {MAX_RECIPIENT_LEN} characters, got {len(n.recipient)}"
            )
        try:
            recipient = parse_spiffe(n.recipient)
        except IdentityError as exc:
            raise InvalidArgument(f"{field}.recipient: {exc}") from None
        if recipient.trust_domain != self._trust_domain:
            raise InvalidArgument(
                f"{field}.recipient: {quote(n.recipient)} is not in trust domain "
                f"{self._trust_domain}"
            )
        region = recipient.region
        if region == sender.region:
            raise InvalidArgument(
                f"{field}.recipient: {quote(n.recipient)} is of the sender's own region "
                f"{region}: its notifications stay at its own node"
            )
        if region != self.region:
            if not self.is_province:
                raise InvalidArgument(
                    f"{field}.recipient: {quote(n.recipient)} is of region {region}; this city "
                    f"node keeps notifications for region {self.region} only"
                )
            if (
                region not in members  # asked once a batch, however many name it
                and region_problem(region) is None
                and Region(self.province).contains(region)
            ):
                members[region] = await self._is_member(region)
            if not members.get(region, False):
                raise FailedPrecondition(
                    f"{field}.recipient: {quote(n.recipient)} is of region {region}, whose "
                    f"node has not joined province {self.province}: it cannot be delivered"
                )
        if len(n.message.encode()) > MAX_MESSAGE_BYTES:
            raise InvalidArgument(
                f"{field}.message: at most {MAX_MESSAGE_BYTES} bytes (UTF-8), got "
                f"{len(n.message.encode())}"
            )
        for name, value, limit in (
            ("resource_code", n.resource_code, MAX_CODE_LEN),
            ("application_id", n.application_id, MAX_ID_LEN),
            ("grant_id", n.grant_id, MAX_ID_LEN),
            ("change_request_id", n.change_request_id, MAX_ID_LEN),
            ("data_error_id", n.data_error_id, MAX_ID_LEN),
        ):
            if len(value) > limit or not value.isprintable():
                raise InvalidArgument(
                    f"{field}.{name}: {quote(value)} is not a {name} (at most {limit} printable "
                    "characters)"
                )
        if not 0 <= n.audit_sequence <= MAX_ORIGIN_ID:
            raise InvalidArgument(
                f"{field}.audit_sequence: must not be negative, got {n.audit_sequence}"
            )
        if n.at > dt.datetime.now(dt.UTC) + MAX_FUTURE:
            raise InvalidArgument(f"{field}.at: {n.at.isoformat()} is in the future")

    async def accept(self, sender: Identity, batch: Sequence[Notification]) -> tuple[int, int]:
        """Check ``sender`` and every notification of ``batch`` (all or none is stored), then
        store those not held yet; returns (stored now, already held)."""
        await self.check_sender(sender)
        if len(batch) > MAX_BATCH:
            raise InvalidArgument(
                f"notifications: at most {MAX_BATCH} in one delivery, got {len(batch)}"
            )
        members: dict[str, bool] = {}
        for i, n in enumerate(batch):
            await self._check(i, n, sender, members)
        if not batch:
            return 0, 0
        keys = {(n.origin_region, n.origin_id): n for n in batch}
        origins = sorted({origin for origin, _ in keys})

        async def txn(session: AsyncSession) -> int:
            for origin in origins:  # two deliveries of one origin store it once
                await self._db.lock(session, _STORE_LOCK + origin)
            held: set[tuple[str, int]] = set()
            for origin in origins:
                ids = [i for o, i in keys if o == origin]
                rows = await session.exec(
                    select(NotificationRow.origin_region, NotificationRow.origin_id).where(
                        NotificationRow.origin_region == origin,
                        col(NotificationRow.origin_id).in_(ids),
                    )
                )
                held.update((str(o), int(i)) for o, i in rows.all())
            stored = 0
            for key, n in keys.items():
                if key in held:
                    continue
                session.add(
                    NotificationRow(
                        recipient=n.recipient,
                        kind=n.kind.value,
                        message=n.message,
                        at=n.at,
                        resource_code=n.resource_code,
                        application_id=n.application_id,
                        grant_id=n.grant_id,
                        change_request_id=n.change_request_id,
                        data_error_id=n.data_error_id,
                        audit_sequence=n.audit_sequence,
                        origin_region=n.origin_region,
                        origin_id=n.origin_id,
                    )
                )
                stored += 1
            return stored

        stored = await self._db.write("notices.accept", txn)
        return stored, len(batch) - stored
