"""`govnode serve` as a real process: stock gRPC clients, CLI revocation, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from node.catalog import ShareMethod, ShareType
from node.servicers import service_descriptors
from node.servicers.convert import entry_to_proto
from tests.support.cli import govnode
from tests.support.entries import agency_code
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    FUZHOU,
    PROVINCE,
    PUBLIC_SECURITY,
    entry_of,
    make_city,
    make_province,
    serve_process,
    stock_channel,
    wait_serving,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[tuple[Path, str, subprocess.Popen[bytes]]]:
    setup = make_province(tmp_path / "province", db_url)
    bundle = tmp_path / "agency"
    result = govnode(
        "agency",
        "add",
        "--config",
        setup.config_path,
        "--code",
        "113500000035910014",
        "--name",
        "福建省公安厅",
        "--out",
        bundle,
    )
    assert result.returncode == 0, result.stderr
    proc = serve_process(setup.config_path)
    try:
        wait_serving(setup.config.node.listen, bundle, proc)
        yield setup.config_path, setup.config.node.listen, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def test_a_stock_client_sees_health_and_every_service_through_reflection(
    served: tuple[Path, str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    _, address, _ = served
    with stock_channel(address, tmp_path / "agency") as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflected = ProtoReflectionDescriptorDatabase(ch)
        services = set(reflected.get_services())
        pool = descriptor_pool.DescriptorPool(reflected)
        for expected in service_descriptors():
            assert expected.full_name in services
            found = pool.FindServiceByName(expected.full_name)
            assert [m.name for m in found.methods] == [m.name for m in expected.methods]
        assert "grpc.health.v1.Health" in services


def test_cli_revocation_is_refused_on_the_next_call_to_a_running_node(
    served: tuple[Path, str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    config, address, _ = served
    bundle = tmp_path / "agency"
    with stock_channel(address, bundle) as ch:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        result = govnode(
            "certs",
            "revoke",
            "--config",
            config,
            "--cert",
            bundle / "client.crt",
            "--reason",
            "key_compromise",
        )
        assert result.returncode == 0, result.stderr
        # The same connection, the very next call.
        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    refusal = err.value
    assert isinstance(refusal, grpc.Call)
    assert refusal.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (refusal.details() or "")
    listed = govnode("certs", "list-revoked", "--config", config)
    assert "agency/113500000035910014" in listed.stdout


def test_sigterm_reports_not_serving_then_exits_cleanly(
    served: tuple[Path, str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    _, address, proc = served
    with stock_channel(address, tmp_path / "agency") as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=20)
        first = next(watch)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        statuses = []
        try:
            for update in watch:
                statuses.append(update.status)
        except grpc.RpcError:
            pass  # the stream ends when the server stops
    assert statuses[:1] == [health_pb2.HealthCheckResponse.NOT_SERVING]
    assert proc.wait(timeout=20) == 0


def _spawn(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return serve_process(config, stderr=out, env=env)


async def _entries(address: str, files: TlsFiles) -> int:
    async with secure_channel(address, files, timeout=2) as ch:
        reply = await catalog_pb2_grpc.CatalogServiceStub(ch).GetCatalogDigest(
            catalog_pb2.GetCatalogDigestRequest()
        )
    return int(reply.entries)


async def _wait_entries(address: str, files: TlsFiles, wanted: int, within: float = 30.0) -> None:
    """Poll (every 0.2 s, bounded) until the node's catalog holds ``wanted`` entries."""
    seen = -1
    for _ in range(int(within / 0.2)):
        with contextlib.suppress(grpc.aio.AioRpcError):
            seen = await _entries(address, files)
            if seen == wanted:
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"{address}: {seen} catalog entries after {within} s, wanted {wanted}")


async def test_sigterm_with_a_city_connected_ends_its_streams_and_the_city_reconnects(
    tmp_path: Path,
) -> None:
    """A city holds two streams open to its province (WatchCatalog, PublishCatalog), idle
    between catalog changes. On SIGTERM the province ends them at once (UNAVAILABLE, which the
    city treats as "reconnect later") instead of waiting out its grace period for them.

    The grace period is set to 30 s and the province must exit within 15: not a speed test
    (a stop takes well under a second here), but the line between the two behaviours, with
    room for a loaded machine."""
    province = make_province(tmp_path / "province", f"sqlite+aiosqlite:///{tmp_path}/p.db")
    city = make_city(tmp_path / "fuzhou", f"sqlite+aiosqlite:///{tmp_path}/c.db", province)
    province_agency = province.agency(PUBLIC_SECURITY)
    city_agency = city.agency(agency_code(1, FUZHOU))
    logs = tmp_path / "province.log"
    grace = {"GOVNODE_LIMITS__SHUTDOWN_GRACE_SECONDS": "30"}
    procs = [
        _spawn(province.config_path, logs, grace),
        _spawn(city.config_path, tmp_path / "c.log"),
    ]
    try:
        await _wait_entries(province.config.node.listen, province_agency, 0)
        await _wait_entries(city.config.node.listen, city_agency, 0)
        async with secure_channel(city.config.node.listen, city_agency) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry_of(FUZHOU, 1)))
            )
        # The entry reached the province: the city's streams are open.
        await _wait_entries(province.config.node.listen, province_agency, 1)

        procs[0].send_signal(signal.SIGTERM)
        try:
            assert procs[0].wait(timeout=15) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("the province waited for its connected city's streams (grace: 30 s)")
        stopping = [json.loads(line) for line in logs.read_text().splitlines()]
        assert any(e.get("event") == "node_stopped" for e in stopping)

        # The province is back: the city reconnects by itself and its next change arrives.
        procs[0] = _spawn(province.config_path, logs)
        async with secure_channel(city.config.node.listen, city_agency) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry_of(FUZHOU, 2)))
            )
        await _wait_entries(province.config.node.listen, province_agency, 2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


#: 主动推送 to any agency, and a resource an agency applies for (its provider is notified).
FEED = entry_of(
    PROVINCE, 11, share_type=ShareType.UNCONDITIONAL, share_methods=(ShareMethod.SUBSCRIBE,)
)
APPLIED = entry_of(PROVINCE, 12)


M = TypeVar("M", bound=Message)


async def _read(call: Any, kind: type[M]) -> M:
    message = await call.read()
    assert isinstance(message, kind), message
    return message


async def _ended(call: Any) -> tuple[list[Message], grpc.aio.AioRpcError | None]:
    """The messages a stream still delivers (at most 100), and the status it ends with (None:
    it ended OK)."""
    received = []
    try:
        for _ in range(100):
            message = await call.read()
            if not isinstance(message, Message):  # the end of the stream
                break
            received.append(message)
    except grpc.aio.AioRpcError as exc:
        return received, exc
    return received, None


async def _submit(address: str, files: TlsFiles, batch_id: str, keys: list[str]) -> None:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=FEED.resource_code,
            batch_id=batch_id,
            records=[common_pb2.Record(values={"tyshxydm": k, "qymc": "某公司"}) for k in keys],
        )

    async with secure_channel(address, files) as ch:
        acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]
    assert acks[0].accepted == len(keys), acks


async def _apply(address: str, files: TlsFiles) -> None:
    """An application for APPLIED: its provider is notified (第二十五条)."""
    not_after = Timestamp()
    not_after.FromSeconds(int(time.time()) + 30 * 86400)
    async with secure_channel(address, files) as ch:
        await access_pb2_grpc.AccessServiceStub(ch).Apply(
            access_pb2.ApplyRequest(
                resource_code=APPLIED.resource_code,
                items=["tyshxydm"],
                share_methods=[common_pb2.SHARE_METHOD_VERIFY],
                purpose="核验企业登记信息",
                legal_basis="《社会组织登记管理条例》",
                not_after=not_after,
            )
        )


async def test_sigterm_ends_agency_streams_at_once_saying_where_to_resume(tmp_path: Path) -> None:
    """An agency subscribed to a resource and caught up, its provider watching notifications,
    and a health watch: on SIGTERM each stream ends at once with UNAVAILABLE, naming where to
    resume, instead of holding the stop for its grace period; resumed there after a restart,
    nothing is missed or sent twice.

    The grace period is 30 s and the node must exit within 15: not a speed test (a stop takes
    well under a second here), but the line between the two behaviours, with room for a loaded
    machine."""
    province = make_province(tmp_path / "province", f"sqlite+aiosqlite:///{tmp_path}/p.db")
    address = province.config.node.listen
    provider = province.agency(PUBLIC_SECURITY)
    consumer = province.agency(CIVIL_AFFAIRS)
    logs = tmp_path / "province.log"
    proc = _spawn(province.config_path, logs, {"GOVNODE_LIMITS__SHUTDOWN_GRACE_SECONDS": "30"})
    try:
        await _wait_entries(address, provider, 0)
        async with secure_channel(address, provider) as ch:
            for entry in (FEED, APPLIED):
                await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                    catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
                )
        await _submit(address, provider, "b1", ["k1", "k2", "k3"])

        async with (
            secure_channel(address, consumer) as consumer_ch,
            secure_channel(address, provider) as provider_ch,
        ):
            feed = sharing_pb2_grpc.SharingServiceStub(consumer_ch).Subscribe(
                sharing_pb2.SubscribeRequest(resource_code=FEED.resource_code), timeout=120
            )
            changes = [await _read(feed, sharing_pb2.RecordChange) for _ in range(3)]
            notices = access_pb2_grpc.AccessServiceStub(provider_ch).WatchNotifications(
                access_pb2.WatchNotificationsRequest(), timeout=120
            )
            await _apply(address, consumer)
            notice = await _read(notices, access_pb2.Notification)
            health = health_pb2_grpc.HealthStub(consumer_ch).Watch(
                health_pb2.HealthCheckRequest(), timeout=120
            )
            serving = await _read(health, health_pb2.HealthCheckResponse)
            # All three are open and waiting: the feed caught up, nothing more to notify.
            proc.send_signal(signal.SIGTERM)
            try:
                assert await asyncio.to_thread(proc.wait, 15) == 0
            except subprocess.TimeoutExpired:
                pytest.fail("the node waited for its agencies' streams (grace: 30 s)")
            (fed, fed_end), (notified, notices_end), (watched, health_end) = [
                await _ended(call) for call in (feed, notices, health)
            ]
        assert [c.sequence for c in changes] == [1, 2, 3]
        assert serving.status == health_pb2.HealthCheckResponse.SERVING
        assert fed == [] and notified == []
        assert watched == [
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        ]
        for end in (fed_end, notices_end, health_end):
            assert end is not None and end.code() == grpc.StatusCode.UNAVAILABLE, end
        assert fed_end is not None and notices_end is not None and health_end is not None
        assert fed_end.details() == (
            "Subscribe: this node is stopping, so it ended the stream; once it is back (in a "
            "few seconds, or at another address of the node), subscribe again with "
            "after_sequence=3 (the last change sent) to resume with no gap and no duplicate"
        )
        assert notices_end.details() == (
            "WatchNotifications: this node is stopping, so it ended the stream; once it is "
            "back (in a few seconds, or at another address of the node), watch again with "
            f"after_id={notice.id} (the last notification sent)"
        )
        assert health_end.details() == "this node is stopping; watch again once it is back"
        stopping = [json.loads(line) for line in logs.read_text().splitlines()]
        assert any(e.get("event") == "node_stopped" for e in stopping)

        # Back again: resumed where the node said, each stream gets what followed, once.
        proc = _spawn(province.config_path, logs)
        await _wait_entries(address, provider, 2)
        await _submit(address, provider, "b2", ["k4"])
        await _apply(address, consumer)
        async with (
            secure_channel(address, consumer) as consumer_ch,
            secure_channel(address, provider) as provider_ch,
        ):
            resumed = sharing_pb2_grpc.SharingServiceStub(consumer_ch).Subscribe(
                sharing_pb2.SubscribeRequest(resource_code=FEED.resource_code, after_sequence=3),
                timeout=30,
            )
            following = await _read(resumed, sharing_pb2.RecordChange)
            resumed.cancel()
            watched_again = access_pb2_grpc.AccessServiceStub(provider_ch).WatchNotifications(
                access_pb2.WatchNotificationsRequest(after_id=notice.id), timeout=30
            )
            next_notice = await _read(watched_again, access_pb2.Notification)
            watched_again.cancel()
        assert (following.sequence, dict(following.key)) == (4, {"tyshxydm": "k4"})
        assert next_notice.id > notice.id
        assert next_notice.kind == notice.kind == access_pb2.NOTIFICATION_KIND_APPLICATION_RECEIVED
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
