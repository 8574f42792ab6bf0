"""Prometheus metrics (node.ops, gateway.metrics): a province and two cities serve /metrics;
after real calls (accepted, refused, routed) each node's series count them with the standard
gRPC names and Go's code spelling, the forwarding nodes count their client calls, no label
holds an agency code, and the mutually authenticated listener refuses a client without a
certificate or with the wrong role. Real nodes, real mutual TLS, real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from govnode.v1 import common_pb2, federation_pb2_grpc, sharing_pb2, sharing_pb2_grpc
from prometheus_client.samples import Sample

from gateway.metrics import go_code
from gateway.tls import TlsFiles
from node.app import RunningNode, StartupError, start_node
from node.catalog import ShareMethod, ShareType
from node.config import MetricsSection
from tests.opendata.test_download_api import UNIVERSAL, download, publish
from tests.support.access import register
from tests.support.databases import NewDatabaseUrl, sqlite_urls
from tests.support.entries import agency_code, item
from tests.support.federation import join_address, refused, request_for, root_pem
from tests.support.metrics import samples, scrape, value
from tests.support.nodes import (
    FUZHOU,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    XIAMEN,
    Federation,
    Member,
    channel,
    enable_join,
    entry_of,
    federation,
    make_province,
    with_metrics,
)
from tests.support.oracle import sensitive

METHODS = (ShareMethod.VERIFY, ShareMethod.COMPARE)
ITEMS = (item("tyshxydm", key=True, required=True), item("qymc"))
ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司"}
OPEN, CONDITIONAL, LOCAL = f"{FUZHOU}-3-000001", f"{FUZHOU}-3-000002", f"{XIAMEN}-3-000001"
VERIFY = "govnode.v1.SharingService", "Verify"


def grpc_labels(service: str, method: str, **more: str) -> dict[str, str]:
    return {"grpc_service": service, "grpc_method": method, **more}


async def verify(node: RunningNode, files: TlsFiles, code: str) -> grpc.StatusCode:
    request = sharing_pb2.VerifyRequest(
        resource_code=code, key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": ACME["qymc"]}
    )
    async with channel(node, files) as ch:
        try:
            await sharing_pb2_grpc.SharingServiceStub(ch).Verify(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def submit(member: Member, code: str) -> None:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for n in range(3):
            yield sharing_pb2.SubmitBatch(
                resource_code=code,
                batch_id=f"b{n}",
                records=[common_pb2.Record(values=ACME)],
            )

    async with channel(member.running, member.agency()) as ch:
        [_ async for _ in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    urls: NewDatabaseUrl = sqlite_urls(tmp_path)  # what is counted does not depend on storage
    # Checkpoints every 0.3 s: the witnesses (the province for each city, and back) cosign soon.
    async with federation(tmp_path, urls, metrics=True, checkpoint_seconds=0.3) as running:
        shared = {"share_type": ShareType.UNCONDITIONAL, "share_methods": METHODS, "items": ITEMS}
        await running.fuzhou.register(entry_of(FUZHOU, 1, **shared))
        await running.fuzhou.register(entry_of(FUZHOU, 2, share_methods=METHODS, items=ITEMS))
        await running.xiamen.register(entry_of(XIAMEN, 1, **shared))
        await submit(running.fuzhou, OPEN)
        await submit(running.xiamen, LOCAL)
        await running.converged(3)
        yield running


async def test_a_province_and_cities_count_their_calls_with_the_grpc_names(
    fed: Federation,
) -> None:
    xiamen, caller = fed.xiamen.running, fed.xiamen.agency()
    before = await samples(xiamen)
    outcomes = [
        await verify(xiamen, caller, LOCAL),  # 厦门's own resource
        await verify(xiamen, caller, LOCAL),
        await verify(xiamen, caller, OPEN),  # routed 厦门 -> province -> 福州
        await verify(xiamen, caller, CONDITIONAL),  # routed, refused by 福州
    ]
    assert outcomes == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.PERMISSION_DENIED,
    ]
    after = await samples(xiamen)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    verify_labels = grpc_labels(*VERIFY, grpc_type="unary")
    assert grew("grpc_server_started_total", **verify_labels) == 4
    assert grew("grpc_server_handled_total", **verify_labels, grpc_code="OK") == 3
    assert grew("grpc_server_handled_total", **verify_labels, grpc_code="PermissionDenied") == 1
    assert grew("grpc_server_handling_seconds_count", **verify_labels) == 4
    # 厦门 forwarded two of them (to the province): its client side counts them, with the
    # owner's answer.
    assert grew("grpc_client_started_total", **verify_labels) == 2
    assert grew("grpc_client_handled_total", **verify_labels, grpc_code="OK") == 1
    assert grew("grpc_client_handled_total", **verify_labels, grpc_code="PermissionDenied") == 1
    assert grew("grpc_client_handling_seconds_count", **verify_labels) == 2

    # The province relayed both: a server call from 厦门 and a client call to 福州 each.
    province = await samples(fed.province.running)
    assert value(province, "grpc_server_handled_total", **verify_labels, grpc_code="OK") == 1
    assert value(province, "grpc_client_handled_total", **verify_labels, grpc_code="OK") == 1
    fuzhou = await samples(fed.fuzhou.running)
    assert value(fuzhou, "grpc_server_handled_total", **verify_labels) == 2
    assert value(fuzhou, "grpc_client_started_total", **verify_labels) == 0

    # A stream (Submit: three batches in, an acknowledgement each out, in the fixture)
    # counts its messages; only unary and client-streaming calls are timed.
    submit_labels = grpc_labels("govnode.v1.SharingService", "Submit", grpc_type="bidi_stream")
    assert value(fuzhou, "grpc_server_msg_received_total", **submit_labels) == 3
    assert value(fuzhou, "grpc_server_msg_sent_total", **submit_labels) == 3
    assert value(fuzhou, "grpc_server_handling_seconds_count", **submit_labels) == 0

    # The audit log's group commits and the event loop are measured too.
    assert value(after, "govnode_audit_batch_records_count") >= 4
    assert value(after, "govnode_audit_commit_seconds_count") >= 4
    assert any(s.name == "govnode_event_loop_lag_seconds" for s in after)
    assert value(after, "govnode_build_info", region=XIAMEN, mode="city") == 1

    # No label anywhere holds an agency code (or any other caller's name).
    codes = {agency_code(1, region) for region in (FUZHOU, XIAMEN)}
    for member in fed.members:
        for sample in await samples(member.running):
            for label, text in sample.labels.items():
                assert not any(code in text for code in codes), (sample.name, label, text)
                assert "spiffe://" not in text and "agency" not in text, (sample.name, label)


async def test_healthz_says_serving_mode_and_region(fed: Federation) -> None:
    health = json.loads(await scrape(fed.province.running, "/healthz"))
    assert health == {"serving": True, "mode": "province", "region": PROVINCE}


async def peers_seen(node: RunningNode, regions: set[str]) -> list[Sample]:
    """The node's samples once every one of ``regions`` is up (polled, bounded)."""
    found: list[Sample] = []
    for _ in range(100):
        found = await samples(node)
        up = {s.labels["peer_region"] for s in found if s.name == "govnode_peer_up" and s.value}
        if regions <= up:
            return found
        await asyncio.sleep(0.1)
    pytest.fail(f"peers {regions} not up within 10 s: {[s for s in found if 'peer' in s.name]}")


async def witnessed_at(node: RunningNode) -> float:
    """When the node's newest cosigned checkpoint was signed, per its /metrics (polled until
    there is one, bounded)."""
    for _ in range(100):
        stamp = value(await samples(node), "govnode_witnessed_checkpoint_timestamp_seconds")
        if stamp:
            return stamp
        await asyncio.sleep(0.1)
    pytest.fail("no witnessed checkpoint within 10 s")


async def test_peers_heartbeats_feed_lag_and_witnessing_on_both_sides(fed: Federation) -> None:
    now = time.time()
    for member in fed.members:
        assert now - 60 < await witnessed_at(member.running) < time.time() + 1
        found = await samples(member.running)
        assert value(found, "govnode_audit_log_size_records") > 0
    province = await peers_seen(fed.province.running, {FUZHOU, XIAMEN})
    for region in (FUZHOU, XIAMEN):
        beat = value(province, "govnode_peer_last_heartbeat_timestamp_seconds", peer_region=region)
        assert now - 60 < beat < now + 60
    # Every catalog change was applied everywhere (the fixture waited for convergence).
    lags = [s for s in province if s.name == "govnode_catalog_feed_lag_changes"]
    assert {s.labels["peer_region"] for s in lags} == {FUZHOU, XIAMEN}
    assert all(s.value == 0 for s in lags)
    city = await peers_seen(fed.fuzhou.running, {PROVINCE})
    assert {s.labels["peer_region"] for s in city if s.name == "govnode_peer_up"} == {PROVINCE}
    assert value(city, "govnode_catalog_feed_lag_changes", peer_region=PROVINCE) == 0
    assert value(city, "govnode_peer_last_heartbeat_timestamp_seconds") > now - 60


# --- one province: the oracle, open data, portals, certificates, grades ----------------------


async def test_oracle_refusals_downloads_portal_calls_and_certificates_are_counted(
    tmp_path: Path, db_url: str
) -> None:
    """On both backends: the sampler's queries (grades, checkpoints) run on each."""
    setup = with_metrics(make_province(tmp_path, db_url))
    oracle = setup.config.oracle.model_copy(update={"verify_per_minute": 1})
    node = await start_node(setup.config.model_copy(update={"oracle": oracle}))
    try:
        provider = setup.agency(PUBLIC_SECURITY)
        await register(node, provider, sensitive(1))
        asker = setup.agency(MARKET_REGULATION)
        request = sharing_pb2.VerifyRequest(
            resource_code=sensitive(1).resource_code, key={"zjhm": "350102198001010011"}
        )
        codes = []
        for _ in range(2):
            async with channel(node, asker) as ch:
                try:
                    await sharing_pb2_grpc.SharingServiceStub(ch).Verify(request)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED]

        await publish(node, setup, UNIVERSAL, 30)
        chunks = await download(
            node, setup.portal(), UNIVERSAL.resource_code, "csv", "ip:203.0.113.9"
        )
        assert chunks[-1].last

        found = await samples(node)
        assert value(found, "govnode_oracle_refusals_total", reason="rate_minute") == 1
        assert value(found, "govnode_oracle_refusals_total", reason="quota_day") == 0
        verify_labels = grpc_labels(*VERIFY)
        assert (
            value(
                found, "grpc_server_handled_total", **verify_labels, grpc_code="ResourceExhausted"
            )
            == 1
        )
        assert value(found, "govnode_opendata_downloads_total", kind="public") == 1
        assert value(found, "govnode_opendata_downloads_total", kind="keyed") == 0
        assert (
            value(found, "govnode_portal_requests_total", grpc_method="Download", grpc_code="OK")
            == 1
        )
        assert value(found, "govnode_portal_requests_total", grpc_method="Verify") == 0
        # Neither the member of the public nor the agencies are named in any label.
        for sample in found:
            for text in sample.labels.values():
                assert "203.0.113.9" not in text and PUBLIC_SECURITY not in text, sample
                assert MARKET_REGULATION not in text and "zjhm" not in text, sample

        # The node's certificates, as on disk: the leaf expires before its CA and the root.
        expiry = {
            s.labels["kind"]: s.value
            for s in found
            if s.name == "govnode_certificate_expiry_timestamp_seconds"
        }
        assert {"node", "region_ca", "root"} <= set(expiry)
        assert time.time() < expiry["node"] <= expiry["root"]
        # Every grade letter has a series (no check has run yet: all zero).
        grades = {
            s.labels["grade"]: s.value for s in found if s.name == "govnode_quality_resources"
        }
        assert grades == dict.fromkeys("ABCDE", 0.0)
    finally:
        await node.stop(grace=0)


async def test_the_join_port_counts_refused_and_rate_limited_joins(tmp_path: Path) -> None:
    """The join port (callers without a certificate) is counted with the main port: every
    attempt, the ones its limiter refuses without auditing them included."""
    setup = with_metrics(enable_join(make_province(tmp_path, await sqlite_urls(tmp_path)())))
    node = await start_node(setup.config)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
        seen: Counter[str] = Counter()
        async with grpc.aio.secure_channel(join_address(node), credentials) as ch:
            stub = federation_pb2_grpc.FederationServiceStub(ch)
            for _ in range(14):  # the limiter admits 10 a minute from one address
                error = await refused(stub.Join(request_for("gvi1_x"), timeout=5))
                seen[go_code(error.code())] += 1
        assert seen["ResourceExhausted"] >= 4 and len(seen) == 2, seen
        found = await samples(node)
        join = grpc_labels("govnode.v1.FederationService", "Join", grpc_type="unary")
        assert value(found, "grpc_server_started_total", **join) == 14
        for code, count in seen.items():
            assert value(found, "grpc_server_handled_total", **join, grpc_code=code) == count
    finally:
        await node.stop(grace=0)


# --- the listener's own rules -----------------------------------------------------------------


def test_a_listener_off_loopback_needs_mutual_tls() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        MetricsSection(listen="0.0.0.0:9464")
    with pytest.raises(ValueError, match="not a loopback address"):
        MetricsSection(listen="10.1.2.3:9464")
    assert MetricsSection(listen="10.1.2.3:9464", tls=True).tls
    assert MetricsSection(listen="[::1]:9464").listen == "[::1]:9464"
    assert MetricsSection(listen="localhost:9464").listen == "localhost:9464"


def client_context(root: Path, files: TlsFiles | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root))
    if files is not None:
        context.load_cert_chain(files.chain, files.key)
    return context


async def test_the_mutual_tls_listener_admits_only_an_authority_or_a_node(
    tmp_path: Path,
) -> None:
    setup = with_metrics(make_province(tmp_path, (await sqlite_urls(tmp_path)())), tls=True)
    node = await start_node(setup.config)
    try:
        assert node.metrics_listener is not None
        url = f"https://127.0.0.1:{node.metrics_listener.port}/metrics"
        root = setup.config.path(setup.config.tls.root)
        async with aiohttp.ClientSession() as session:
            # No client certificate: the handshake itself fails.
            with pytest.raises(aiohttp.ClientError):
                async with session.get(url, ssl=client_context(root, None)) as reply:
                    await reply.read()
            # Plain HTTP on the TLS port gets nothing either.
            plain = url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plain) as reply:
                    await reply.read()
            # An agency's certificate is valid, but an agency may not read the node's metrics.
            agency = setup.agency(agency_code(1, PROVINCE))
            async with session.get(url, ssl=client_context(root, agency)) as reply:
                assert reply.status == 403
                assert "may not read metrics" in await reply.text()
            async with session.get(url, ssl=client_context(root, setup.authority())) as reply:
                assert reply.status == 200
                assert "grpc_server_started_total" in await reply.text()
    finally:
        await node.stop(grace=0)


async def test_a_taken_metrics_port_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    urls = sqlite_urls(tmp_path)
    first = with_metrics(make_province(tmp_path / "a", await urls()))
    node = await start_node(first.config)
    try:
        assert node.metrics_listener is not None
        taken = f"127.0.0.1:{node.metrics_listener.port}"
        second = make_province(tmp_path / "b", await urls())
        config = second.config.model_copy(update={"metrics": MetricsSection(listen=taken)})
        with pytest.raises(StartupError, match=f"metrics.listen: cannot listen on {taken}"):
            await start_node(config)
    finally:
        await node.stop(grace=0)
