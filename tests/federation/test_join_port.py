"""The province's join port faces callers without a certificate: it takes only small messages,
rate-limits attempts per address and in all, refuses a CSR field holding anything but one PEM
block, and closes connections that never start TLS. Over the wire, with a real province."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from govnode.v1 import federation_pb2, federation_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.ratelimit import AnonymousLimiter, address_of
from node.app import RunningNode, start_node
from node.config import load_config
from tests.support.federation import (
    invite,
    join_address,
    refused,
    request_for,
    root_pem,
    used_at,
)
from tests.support.nodes import PUBLIC_SECURITY, ProvinceSetup, channel, enable_join, make_province
from tests.support.oracle import retry_after_ms

Province = tuple[ProvinceSetup, RunningNode]


def with_settings(setup: ProvinceSetup, section: str, **values: object) -> ProvinceSetup:
    """The same node with ``values`` set in ``[section]`` of its govnode.toml (replacing the
    keys `govnode init` wrote)."""
    text = setup.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value!r}\n", 1)
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


@pytest.fixture
async def joinable(tmp_path: Path, db_url: str) -> AsyncIterator[Province]:
    """A province with its join port open and the default limits, on each backend."""
    setup = enable_join(make_province(tmp_path / "province", db_url))
    node = await start_node(setup.config)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


async def join_call(
    setup: ProvinceSetup, node: RunningNode, request: federation_pb2.JoinRequest
) -> grpc.aio.AioRpcError:
    """A Join that must be refused, as a city calls it: TLS trusting the root, no certificate."""
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
    async with grpc.aio.secure_channel(join_address(node), credentials) as ch:
        stub = federation_pb2_grpc.FederationServiceStub(ch)
        return await refused(stub.Join(request, timeout=5))


async def audit_footprint(node: RunningNode) -> tuple[int, int]:
    """(records, bytes of caller-influenced text) in the audit log: what a flood can grow."""
    statement = sa.text(
        "SELECT count(*), coalesce(sum(length(message) + length(detail) + length(caller)"
        " + length(method) + length(request_id)), 0) FROM audit_record"
    )
    async with node.db.engine.connect() as connection:
        row = (await connection.execute(statement)).one()
    return int(row[0]), int(row[1])


def sqlite_bytes(setup: ProvinceSetup) -> int:
    """Size on disk of a SQLite node's database with its WAL (0 on PostgreSQL)."""
    url = setup.config.database_url
    if not url.startswith("sqlite"):
        return 0
    path = url.split(":///", 1)[1]
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def test_a_flood_of_joins_without_certificates_is_rate_limited(joinable: Province) -> None:
    setup, node = joinable
    records_before, bytes_before = await audit_footprint(node)
    disk_before = sqlite_bytes(setup)
    # Each attempt as large as the join port accepts, with a name it will refuse.
    attempts = 50
    request = request_for("gvi1_x")
    request.name = "名" * 20_000  # 60 KB of UTF-8
    codes: list[grpc.StatusCode] = []
    retry_after: list[int] = []
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
    async with grpc.aio.secure_channel(join_address(node), credentials) as ch:
        stub = federation_pb2_grpc.FederationServiceStub(ch)
        for _ in range(attempts):
            error = await refused(stub.Join(request, timeout=5))
            codes.append(error.code())
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                retry = retry_after_ms(error)
                assert retry is not None, error.details()
                retry_after.append(int(retry))
                assert "too many join attempts" in (error.details() or ""), error.details()
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    # The default allows 10 a minute from one address (refilled evenly): the rest wait.
    assert limited >= attempts - 12, codes
    assert codes[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert all(0 < ms <= 6_000 for ms in retry_after), retry_after

    # What the flood left behind is bounded: the admitted attempts and one refusal audited,
    # each with a short message; the other refusals only counted.
    records, size = await audit_footprint(node)
    assert records - records_before <= attempts - limited + 2, (records, records_before)
    assert size - bytes_before <= 20 * 1024, size - bytes_before
    if disk_before:
        assert sqlite_bytes(setup) - disk_before <= 1024 * 1024
    [limited_record] = await node.audit.tail(50, outcome="RESOURCE_EXHAUSTED")
    assert limited_record.method == "/govnode.v1.FederationService/Join"
    assert limited_record.detail["address"] == "127.0.0.1"
    assert limited_record.caller == "unauthenticated"

    # The node stays healthy, and its mutual-TLS port is not limited.
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_oversized_join_message_is_refused_resource_exhausted(
    joinable: Province,
) -> None:
    setup, node = joinable
    before = await audit_footprint(node)
    # A Join is about 1.2 KB; the join port takes 64 KiB (federation.join_max_message_bytes).
    error = await join_call(setup, node, request_for("gvi1_" + "A" * 100_000))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "larger than max" in (error.details() or ""), error.details()
    # The whole request was refused before it reached the node: nothing audited.
    assert await audit_footprint(node) == before


async def test_a_csr_field_must_hold_exactly_one_pem_block(joinable: Province) -> None:
    setup, node = joinable
    token = await invite(node)
    good = request_for(token)
    other = request_for(token)  # another key pair: a second, different request
    for field, value in (
        ("city_ca_csr_pem", good.city_ca_csr_pem + other.city_ca_csr_pem),
        ("node_csr_pem", good.node_csr_pem + "trailing text the province would ignore\n"),
        ("node_csr_pem", "a preamble\n" + good.node_csr_pem),
    ):
        bad = federation_pb2.JoinRequest()
        bad.CopyFrom(good)
        setattr(bad, field, value)
        error = await join_call(setup, node, bad)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert (error.details() or "").startswith(f"{field}:"), error.details()
        assert "one PEM block" in (error.details() or ""), error.details()
    assert await used_at(node.db, token) is None  # nothing was admitted
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem(setup))
    async with grpc.aio.secure_channel(join_address(node), credentials) as ch:
        reply = await federation_pb2_grpc.FederationServiceStub(ch).Join(good, timeout=5)
    assert reply.city_ca_certificate_pem.startswith("-----BEGIN CERTIFICATE-----")


async def test_a_connection_that_never_starts_tls_is_closed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    setup = enable_join(make_province(tmp_path / "province", url))
    setup = with_settings(setup, "limits", handshake_timeout_seconds=1.0)
    node = await start_node(setup.config)
    try:
        for port in (node.port, node.join_port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                # The node hangs up on the silent client (after about 1 s): EOF, or a reset.
                try:
                    data = await asyncio.wait_for(reader.read(1), timeout=30)
                except ConnectionResetError:
                    data = b""
                assert data == b"", data
            finally:
                writer.close()
    finally:
        await node.stop(grace=0)


# --- the limiter itself (gateway.ratelimit), on a clock the test moves -----------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_address_of_a_grpc_peer() -> None:
    assert address_of("ipv4:10.1.2.3:55012") == "10.1.2.3"
    assert address_of("ipv6:[2001:db8:1:2:3:4:5:6]:443") == "2001:db8:1:2::/64"
    assert address_of("ipv6:[::ffff:10.1.2.3]:443") == "10.1.2.3"
    assert address_of("unix:/tmp/x") == "unix:/tmp/x"
    assert len(address_of("junk:" + "z" * 10_000)) <= 64


def test_the_limiter_admits_per_address_and_in_all_and_audits_refusals_once() -> None:
    clock = Clock()
    limiter = AnonymousLimiter(per_address_per_minute=3, total_per_minute=5, clock=clock)
    first = [limiter.admit("ipv4:10.0.0.1:1") for _ in range(5)]
    assert [a.allowed for a in first] == [True, True, True, False, False]
    assert first[3].retry_after_s == pytest.approx(20.0)  # one attempt every 60/3 s
    assert (first[3].audit, first[4].audit) == (True, False)  # the first refusal only
    # Another address has its own allowance, within the total of 5 a minute.
    assert [limiter.admit("ipv4:10.0.0.2:1").allowed for _ in range(3)] == [True, True, False]
    refused = limiter.admit("ipv4:10.0.0.3:1")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(12.0)  # 60/5 s
    # After the window, 10.0.0.1's next refusal is audited again, with the count in between.
    clock.now += 61
    assert [limiter.admit("ipv4:10.0.0.1:1").allowed for _ in range(3)] == [True, True, True]
    again = limiter.admit("ipv4:10.0.0.1:1")
    assert (again.allowed, again.audit, again.unaudited) == (False, True, 1)


def test_the_limiter_tracks_a_bounded_number_of_addresses_and_audits_boundedly() -> None:
    clock = Clock()
    limiter = AnonymousLimiter(
        per_address_per_minute=2, total_per_minute=10, max_addresses=100, clock=clock
    )
    admitted = audited = 0
    for i in range(10_000):  # each from a new address: only the total holds them back
        admission = limiter.admit(f"ipv4:10.{i // 65536}.{i // 256 % 256}.{i % 256}:1")
        admitted += admission.allowed
        audited += not admission.allowed and admission.audit
    assert admitted == 10
    assert audited <= 10  # refusals audited at most as often as the total admits
    assert limiter.tracked <= 100
