"""Notifications reach their recipients on other nodes (store and forward over the star): a 厦门
agency whose application for a 福州 resource was reviewed reads APPLICATION_REVIEWED at 厦门,
naming 福州 as its origin; a province agency reads a 福州 notification at the province; a
resent delivery is stored once; every caller that may not deliver is refused, naming why; and
delivery resumes, once, after the destination node was down. Real nodes over real mutual TLS,
on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import access_pb2, access_pb2_grpc, federation_pb2, federation_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.catalog import ShareMethod
from node.config import load_config
from node.federation import NoticeOutbox
from node.sharing import NotificationKind, Notifications
from tests.support.access import (
    ACME,
    ITEMS,
    KIND,
    access,
    apply_request,
    approve,
    authority,
    next_note,
    notifications,
    refused,
    submit,
    ts,
)
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.nodes import (
    FUZHOU,
    MARKET_REGULATION,
    PROVINCE,
    XIAMEN,
    Federation,
    Member,
    ProvinceSetup,
    channel,
    entry_of,
    link_peers,
    make_city,
    make_province,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY)
AT_FUZHOU = entry_of(FUZHOU, 7, items=ITEMS, share_methods=METHODS)
AT_PROVINCE = entry_of(PROVINCE, 7, items=ITEMS, share_methods=METHODS)
PUTIAN = "350300"  # a city of the province whose node never joined
WAIT_S = 30.0
TRUST_DOMAIN = "fujian.gov.cn"


def fast_notices(setup: ProvinceSetup, seconds: float = 0.2) -> ProvinceSetup:
    """The same node delivering notifications every ``seconds`` (so retries back off to at
    most 30 of them: a few seconds in these tests)."""
    text = setup.config_path.read_text(encoding="utf-8")
    text = text.replace("[federation]\n", f"[federation]\nnotice_delivery_seconds = {seconds}\n", 1)
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(
        setup.base, setup.config_path, load_config(setup.config_path), setup.bundles
    )


@contextlib.asynccontextmanager
async def federation(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    """The province, 福州 and 厦门 (as tests.support.nodes.federation), delivering fast."""
    province = make_province(tmp_path / "province", await db_urls())
    fed = Federation(
        Member(province),
        Member(make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市")),
        Member(make_city(tmp_path / "xiamen", await db_urls(), province, XIAMEN, "厦门市")),
    )
    fed.province.setup = link_peers(
        province, {m.region: m.setup.config.node.listen for m in (fed.fuzhou, fed.xiamen)}
    )
    for member in fed.members:
        member.setup = fast_notices(member.setup)
    try:
        for member in fed.members:
            await member.start()
        yield fed
    finally:
        for member in reversed(fed.members):
            await member.stop()


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    async with federation(tmp_path, db_urls) as running:
        await running.fuzhou.register(AT_FUZHOU)
        await running.province.register(AT_PROVINCE)
        await submit(
            running.fuzhou.running, running.fuzhou.agency(), AT_FUZHOU.resource_code, [ACME]
        )
        await submit(
            running.province.running, running.province.agency(), AT_PROVINCE.resource_code, [ACME]
        )
        await running.converged(2)
        yield running


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
    """Poll ``check`` every 0.1 s until it holds, for at most WAIT_S."""
    for _ in range(int(WAIT_S / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"not within {WAIT_S} s: {what}")


async def reviewed_notes(
    node: RunningNode, files: TlsFiles, application_id: str
) -> list[access_pb2.Notification]:
    return [
        n
        for n in await notifications(node, files)
        if n.kind == KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED
        and n.application_id == application_id
    ]


async def arrives_once(
    node: RunningNode, files: TlsFiles, application_id: str
) -> access_pb2.Notification:
    """Wait until the APPLICATION_REVIEWED of ``application_id`` is listed at ``node`` for the
    holder of ``files``; it is there exactly once."""

    async def there() -> bool:
        return bool(await reviewed_notes(node, files, application_id))

    await eventually(there, f"APPLICATION_REVIEWED of {application_id} at {node.address}")
    [note] = await reviewed_notes(node, files, application_id)
    return note


async def apply_and_approve(
    fed: Federation, at: Member, owner: Member, applicant: TlsFiles, code: str
) -> str:
    """``applicant`` applies at ``at`` for ``code`` (routed to ``owner``), and ``owner``'s
    authority approves; the application id."""
    applied = (await access(at.running, applicant, "Apply", apply_request(code))).application
    assert applied.id.startswith(f"{owner.region}-A-")
    await access(owner.running, authority(owner.setup), "ReviewApplication", approve(applied.id))
    return str(applied.id)


def note(
    recipient: str,
    origin: str,
    origin_id: int,
    *,
    kind: int = KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED,
    message: str = "您的申请已审核",
) -> access_pb2.Notification:
    return access_pb2.Notification(
        kind=kind,  # type: ignore[arg-type]
        recipient=recipient,
        message=message,
        at=ts(dt.datetime.now(dt.UTC)),
        origin_region=origin,
        origin_id=origin_id,
    )


async def deliver(
    to: RunningNode, files: TlsFiles, *notes: access_pb2.Notification
) -> federation_pb2.DeliverNotificationsResponse:
    async with channel(to, files) as ch:
        reply = await federation_pb2_grpc.FederationServiceStub(ch).DeliverNotifications(
            federation_pb2.DeliverNotificationsRequest(notifications=list(notes))
        )
    assert isinstance(reply, federation_pb2.DeliverNotificationsResponse)
    return reply


def agency_uri(region: str, code: str) -> str:
    return f"spiffe://{region}.{TRUST_DOMAIN}/agency/{code}"


async def test_a_review_at_fuzhou_reaches_the_applicant_at_xiamen(fed: Federation) -> None:
    xiamen, fuzhou, province = fed.xiamen, fed.fuzhou, fed.province
    code = agency_code(2, XIAMEN)
    applicant = xiamen.setup.agency(code)
    # A watcher at 厦门 wakes when the delivered notification lands.
    async with channel(xiamen.running, applicant, timeout=WAIT_S) as ch:
        watch = access_pb2_grpc.AccessServiceStub(ch).WatchNotifications(
            access_pb2.WatchNotificationsRequest(
                kinds=[KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED]
            )
        )
        app_id = await apply_and_approve(fed, xiamen, fuzhou, applicant, AT_FUZHOU.resource_code)
        watched = await next_note(watch)
        watch.cancel()
    assert watched.application_id == app_id and watched.origin_region == FUZHOU

    got = await arrives_once(xiamen.running, applicant, app_id)
    assert got.recipient == agency_uri(XIAMEN, code)
    assert got.origin_region == FUZHOU and got.origin_id > 0
    # 福州 keeps its own copy (its origin empty: made there); 厦门's id is its own.
    [at_fuzhou] = await reviewed_notes(fuzhou.running, applicant, app_id)
    assert at_fuzhou.origin_region == "" and at_fuzhou.id == got.origin_id
    # The province stored it on the way (store and forward), under the same origin.
    [relayed] = await reviewed_notes(province.running, applicant, app_id)
    assert (relayed.origin_region, relayed.origin_id) == (FUZHOU, got.origin_id)

    # A province resource: reviewed at the province, delivered to 厦门 directly.
    app_id = await apply_and_approve(fed, xiamen, province, applicant, AT_PROVINCE.resource_code)
    got = await arrives_once(xiamen.running, applicant, app_id)
    assert got.origin_region == PROVINCE and got.origin_id > 0


async def test_a_province_agency_reads_a_city_notification_at_the_province(
    fed: Federation,
) -> None:
    applicant = fed.province.setup.agency(MARKET_REGULATION)
    app_id = await apply_and_approve(
        fed, fed.province, fed.fuzhou, applicant, AT_FUZHOU.resource_code
    )
    got = await arrives_once(fed.province.running, applicant, app_id)
    assert got.origin_region == FUZHOU and got.recipient == agency_uri(PROVINCE, MARKET_REGULATION)


async def test_a_resent_delivery_is_stored_once(fed: Federation) -> None:
    province, fuzhou = fed.province, fed.fuzhou
    reader = province.setup.agency(MARKET_REGULATION)
    batch = [
        note(agency_uri(PROVINCE, MARKET_REGULATION), FUZHOU, 900_000_001 + i) for i in range(3)
    ]
    as_fuzhou = node_tls_files(fuzhou.running.config)
    first = await deliver(province.running, as_fuzhou, *batch)
    assert (first.stored, first.already_held) == (3, 0)
    again = await deliver(province.running, as_fuzhou, *batch, batch[0])
    assert (again.stored, again.already_held) == (0, 4)
    listed = [n for n in await notifications(province.running, reader) if n.origin_id > 900_000_000]
    assert sorted(n.origin_id for n in listed) == [900_000_001, 900_000_002, 900_000_003]


async def test_who_may_not_deliver_and_what_is_refused(tmp_path: Path, fed: Federation) -> None:
    province, fuzhou, xiamen = fed.province, fed.fuzhou, fed.xiamen
    to_province = agency_uri(PROVINCE, MARKET_REGULATION)
    reader = province.setup.agency(MARKET_REGULATION)
    as_fuzhou = node_tls_files(fuzhou.running.config)
    as_xiamen = node_tls_files(xiamen.running.config)

    async def refusal(
        to: RunningNode, files: TlsFiles, *notes: access_pb2.Notification
    ) -> grpc.aio.AioRpcError:
        return await refused(deliver(to, files, *notes))

    # Agencies and authorities cannot inject notifications, at the guard.
    for files in (province.setup.agency(MARKET_REGULATION), authority(province.setup)):
        err = await refusal(province.running, files, note(to_province, FUZHOU, 1))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "only govnode nodes may call DeliverNotifications" in (err.details() or "")
    # A node of a city that never joined is not a federation peer.
    putian = make_city(
        tmp_path / "putian", "sqlite+aiosqlite:///unused.db", province.setup, PUTIAN, "莆田市"
    )
    err = await refusal(
        province.running, node_tls_files(putian.config), note(to_province, PUTIAN, 1)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "not a city node that has joined province 350000" in (err.details() or "")
    # Cities take notifications from their province only.
    err = await refusal(
        fuzhou.running, as_xiamen, note(agency_uri(FUZHOU, agency_code(1, FUZHOU)), XIAMEN, 1)
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"from its province {PROVINCE} only" in (err.details() or "")
    # A city may not forge another city's notifications.
    err = await refusal(province.running, as_xiamen, note(to_province, FUZHOU, 1))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "only notifications its own node made" in (err.details() or "")
    # Recipients: of a region with no node, of the sender's own region, of another trust domain.
    err = await refusal(
        province.running, as_fuzhou, note(agency_uri(PUTIAN, agency_code(1, PUTIAN)), FUZHOU, 1)
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert f"region {PUTIAN}, whose node has not joined" in (err.details() or "")
    err = await refusal(
        province.running, as_fuzhou, note(agency_uri(FUZHOU, agency_code(1, FUZHOU)), FUZHOU, 1)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sender's own region" in (err.details() or "")
    err = await refusal(
        province.running,
        as_fuzhou,
        note(f"spiffe://350000.example.org/agency/{MARKET_REGULATION}", FUZHOU, 1),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "trust domain" in (
        err.details() or ""
    )
    # Bounds: the batch, the message, the kind, the origin id. A refused batch stores nothing,
    # not even its good notifications.
    good = note(to_province, FUZHOU, 1)
    long_id = note(to_province, FUZHOU, 5)
    long_id.application_id = "A" * 65
    for bad, field in (
        ([good] * 201, "at most 200 in one delivery"),
        ([good, note(to_province, FUZHOU, 2, message="长" * 700)], "notifications[1].message"),
        ([good, note(to_province, FUZHOU, 3, kind=99)], "notifications[1].kind"),
        ([good, note(to_province, FUZHOU, 0)], "notifications[1].origin_id"),
        ([good, note("spiffe://nope", FUZHOU, 4)], "notifications[1].recipient"),
        ([good, long_id], "notifications[1].application_id"),
    ):
        err = await refusal(province.running, as_fuzhou, *bad)
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (err.details() or "")
    assert [n for n in await notifications(province.running, reader) if n.origin_id == 1] == []


async def test_delivery_resumes_once_after_the_destination_was_down(fed: Federation) -> None:
    xiamen, fuzhou = fed.xiamen, fed.fuzhou
    applicant = xiamen.setup.agency(agency_code(2, XIAMEN))
    applied = (
        await access(xiamen.running, applicant, "Apply", apply_request(AT_FUZHOU.resource_code))
    ).application
    await xiamen.stop()
    await access(fuzhou.running, authority(fuzhou.setup), "ReviewApplication", approve(applied.id))

    # The province holds it for 厦门 while 厦门 is away (its delivery failing, backing off).
    async def at_province() -> bool:
        rows = await fed.province.running.db.fetch_all(
            "SELECT COUNT(*) FROM notification WHERE application_id = :app AND origin_region = :o",
            {"app": applied.id, "o": FUZHOU},
        )
        return int(rows[0][0]) > 0

    await eventually(at_province, "the province holds the notification for 厦门")
    await xiamen.start()
    got = await arrives_once(xiamen.running, applicant, applied.id)
    assert got.origin_region == FUZHOU


async def test_a_region_without_a_node_is_skipped_and_holds_up_no_other(
    fed: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    fuzhou, xiamen, province = fed.fuzhou, fed.xiamen, fed.province
    putian_agency = agency_uri(PUTIAN, agency_code(1, PUTIAN))
    xiamen_agency = agency_uri(XIAMEN, agency_code(2, XIAMEN))
    kind = NotificationKind.APPLICATION_REVIEWED
    # Made at 福州 (refused on at the province: no node of 莆田 joined) and at the province
    # (no endpoint for 莆田), then one for 厦门 at each.
    for member in (fuzhou, province):
        await Notifications(member.running.db).notify(putian_agency, kind, "给莆田的通知")
    for member in (fuzhou, province):
        await Notifications(member.running.db).notify(xiamen_agency, kind, member.region)
    reader = xiamen.setup.agency(agency_code(2, XIAMEN))

    async def both_arrived() -> bool:
        got = {n.origin_region for n in await notifications(xiamen.running, reader)}
        return got == {FUZHOU, PROVINCE}

    await eventually(both_arrived, "厦门's notifications from 福州 and the province")
    warnings = []

    async def warned() -> bool:
        warnings.append(capsys.readouterr().out.count("notice_destination_without_node"))
        return sum(warnings) >= 2

    await eventually(warned, "a warning about 莆田 at 福州 and at the province")
    for member in (fuzhou, province):
        outbox = NoticeOutbox(member.running.db, member.region)
        assert await outbox.cursor(PUTIAN) == 0
        assert await outbox.cursor(XIAMEN) > 0
