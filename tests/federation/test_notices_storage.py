"""The outbox and inbox of notifications across nodes, on each backend: the outbox pages one
destination region's notifications in id order after its durable cursor (which never moves
back), the inbox stores a delivered notification once however often and however concurrently
it arrives, and local notifications (no origin) stay outside the once-only key."""

from __future__ import annotations

import asyncio
import datetime as dt

from gateway.identity import Role, make_identity
from node.federation import NoticeInbox, NoticeOutbox
from node.sharing import Notification, NotificationKind, Notifications
from node.storage import Database
from tests.support.entries import agency_code

TRUST_DOMAIN = "fujian.gov.cn"
FUZHOU, XIAMEN, PROVINCE = "350100", "350200", "350000"


def agency(region: str, n: int) -> str:
    return f"spiffe://{region}.{TRUST_DOMAIN}/agency/{agency_code(n + 1, region)}"


async def notify(db: Database, recipient: str, message: str = "通知") -> None:
    await Notifications(db).notify(recipient, NotificationKind.APPLICATION_REVIEWED, message)


def delivered(recipient: str, origin: str, origin_id: int) -> Notification:
    return Notification(
        id=0,
        kind=NotificationKind.APPLICATION_REVIEWED,
        recipient=recipient,
        message="您的申请已审核",
        at=dt.datetime.now(dt.UTC),
        application_id=f"{origin}-A-{origin_id:04x}",
        origin_region=origin,
        origin_id=origin_id,
    )


async def test_the_outbox_pages_a_destination_in_id_order_after_its_cursor(
    database: Database,
) -> None:
    outbox = NoticeOutbox(database, FUZHOU)
    for i in range(5):
        await notify(database, agency(XIAMEN, i), f"厦门 {i}")
        await notify(database, agency(FUZHOU, i))  # stays here
        await notify(database, agency(PROVINCE, i))
    assert await outbox.destinations(0, await outbox.last_id()) == [PROVINCE, XIAMEN]

    upto = await outbox.last_id()
    after, page = await outbox.pending(XIAMEN, upto=upto, limit=3)
    assert after == 0
    assert [n.message for n in page] == ["厦门 0", "厦门 1", "厦门 2"]
    assert all(n.origin_region == FUZHOU and n.origin_id == n.id for n in page)
    await outbox.delivered(XIAMEN, page[-1].id)
    after, rest = await outbox.pending(XIAMEN, upto=upto)
    assert after == page[-1].id and [n.message for n in rest] == ["厦门 3", "厦门 4"]

    # A late acknowledgement (another process of this node was ahead) does not move it back.
    await outbox.delivered(XIAMEN, rest[-1].id)
    await outbox.delivered(XIAMEN, page[0].id)
    assert await outbox.cursor(XIAMEN) == rest[-1].id
    assert (await outbox.pending(XIAMEN, upto=upto))[1] == []
    # Another destination keeps its own cursor.
    assert len((await outbox.pending(PROVINCE, upto=upto))[1]) == 5
    assert await outbox.cursor(PROVINCE) == 0
    # Nothing above ``upto`` is delivered yet (on PostgreSQL it may not have settled).
    await notify(database, agency(PROVINCE, 9), "后来的")
    assert [n.message for n in (await outbox.pending(PROVINCE, upto=upto))[1]][-1] != "后来的"
    # Only ids after a look are looked at again.
    last = await outbox.last_id()
    assert await outbox.destinations(last, last) == []


async def test_the_inbox_stores_each_delivered_notification_once(database: Database) -> None:
    async def member(region: str) -> bool:
        return region in (FUZHOU, XIAMEN)

    inbox = NoticeInbox(database, PROVINCE, TRUST_DOMAIN, member)
    fuzhou = make_identity(FUZHOU, TRUST_DOMAIN, Role.NODE)
    batch = [delivered(agency(PROVINCE, 1), FUZHOU, i) for i in range(1, 51)]
    # Local notifications, without an origin, are never in the way of the once-only key.
    for _ in range(3):
        await notify(database, agency(PROVINCE, 1))

    results = await asyncio.gather(*(inbox.accept(fuzhou, batch) for _ in range(4)))
    assert sum(stored for stored, _ in results) == 50
    assert sum(held for _, held in results) == 150
    assert await inbox.accept(fuzhou, batch[:10]) == (0, 10)
    listed = await Notifications(database).list_for(agency(PROVINCE, 1), limit=500)
    assert len(listed) == 53
    assert sorted(n.origin_id for n in listed if n.origin_region == FUZHOU) == list(range(1, 51))
    # The same origin id from another origin is another notification; 厦门 for 福州 goes on.
    xiamen = make_identity(XIAMEN, TRUST_DOMAIN, Role.NODE)
    assert await inbox.accept(xiamen, [delivered(agency(FUZHOU, 2), XIAMEN, 1)]) == (1, 0)
    outbox = NoticeOutbox(database, PROVINCE)
    [relay] = (await outbox.pending(FUZHOU, upto=await outbox.last_id()))[1]
    assert (relay.origin_region, relay.origin_id) == (XIAMEN, 1)
