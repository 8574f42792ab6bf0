"""Several `govnode serve` processes of one node ([node] reuse_port) on one PostgreSQL, behind
one address: the kernel spreads the connections over both, and what must be shared holds under
load: the audit chain verifies after, gap-free; an assertion nonce is accepted once whichever
process sees it; the Verify oracle's budget is never overspent by the two together. And the
switch is refused on SQLite, and without it a second process cannot take the address."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gateway.assertion import ASSERTION_KEY, make_assertion
from gateway.channel import secure_channel
from gateway.identity import Role, make_identity
from gateway.tls import TlsFiles
from node.app import node_tls_files
from node.pki import load_certs, load_private_key
from node.ports import free_port
from node.servicers.convert import entry_to_proto
from tests.support.cli import assert_one_line_error, govnode
from tests.support.databases import backend_url
from tests.support.entries import agency_code
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    make_city,
    make_province,
    serve_process,
    wait_serving,
)
from tests.support.oracle import sensitive

pytestmark = pytest.mark.slow

TD = "fujian.gov.cn"
XIAMEN = "350200"
#: The oracle's budget per caller and minute, shared by the processes through the database.
PER_MINUTE = 30
ENTRY = sensitive(1)
KEYS = [f"35010219900101{n:04d}" for n in range(40)]


def reuse_port(setup: ProvinceSetup) -> None:
    text = setup.config_path.read_text(encoding="utf-8")
    setup.config_path.write_text(
        text.replace("[node]\n", "[node]\nreuse_port = true\n", 1), encoding="utf-8"
    )


@contextlib.contextmanager
def processes(setup: ProvinceSetup, metrics_ports: list[int]) -> Iterator[None]:
    """One `govnode serve` per metrics port, all on the node's address, SERVING."""
    started: list[subprocess.Popen[bytes]] = []
    env = {"GOVNODE_ORACLE__VERIFY_PER_MINUTE": str(PER_MINUTE), "GOVNODE_LOG__LEVEL": "warning"}
    try:
        for port in metrics_ports:
            proc = serve_process(
                setup.config_path,
                env=env | {"GOVNODE_METRICS__LISTEN": f"127.0.0.1:{port}"},
                stderr=subprocess.DEVNULL,
            )
            started.append(proc)
        for proc, port in zip(started, metrics_ports, strict=True):
            wait_serving(setup.config.node.listen, setup.agency(PUBLIC_SECURITY).key.parent, proc)
            # The address's health may be another process's answer: ask this one's own.
            healthy(port, proc)
        yield
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def healthy(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the process whose metrics listener is on ``port`` says SERVING (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "govnode serve exited while starting"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the process with metrics on {port} did not say SERVING in 30 s")


async def handled(port: int) -> float:
    """Verify calls this process answered, by its metrics."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        text = await reply.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "grpc_server_handled_total" and s.labels.get("grpc_method") == "Verify"
    )


def verify(key: str) -> sharing_pb2.VerifyRequest:
    return sharing_pb2.VerifyRequest(
        resource_code=ENTRY.resource_code, key={"zjhm": key}, claimed={"xm": "张三"}
    )


async def outcome(
    address: str,
    files: TlsFiles,
    request: sharing_pb2.VerifyRequest,
    metadata: list[tuple[str, str | bytes]] | None = None,
) -> str:
    """A call on a connection of its own (so that the kernel may pick either process)."""
    async with secure_channel(address, files) as ch:
        try:
            await sharing_pb2_grpc.SharingServiceStub(ch).Verify(
                request, timeout=10, metadata=metadata
            )
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
    return "OK"


async def test_two_processes_share_the_address_the_chain_nonces_and_budgets(
    tmp_path: Path,
) -> None:
    async with backend_url("postgresql", tmp_path / "unused.db") as url:
        setup = make_province(tmp_path / "province", url)
        reuse_port(setup)
        # 厦门's node certificate signs the caller assertions of forwarded calls.
        city = make_city(tmp_path / "xiamen", url, setup, region=XIAMEN, name="厦门市")
        address = setup.config.node.listen
        provider, civil = setup.agency(PUBLIC_SECURITY), setup.agency(CIVIL_AFFAIRS)
        ports = [free_port(), free_port()]
        with processes(setup, ports):
            async with secure_channel(address, provider) as ch:
                await catalog_pb2_grpc.CatalogServiceStub(ch).RegisterResource(
                    catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(ENTRY))
                )

                async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
                    yield sharing_pb2.SubmitBatch(
                        resource_code=ENTRY.resource_code,
                        batch_id="b1",
                        records=[common_pb2.Record(values={"zjhm": k, "xm": "张三"}) for k in KEYS],
                    )

                acks = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batch())]
                assert acks[0].accepted == len(KEYS)

            # 4 rounds of 20 calls, each on its own connection: both processes answer some,
            # and the two together admit no more than the caller's budget.
            began = time.monotonic()
            said = []
            for _ in range(4):
                said += await asyncio.gather(
                    *(outcome(address, civil, verify(k)) for k in KEYS[:20])
                )
            elapsed = time.monotonic() - began
            answered = [await handled(port) for port in ports]
            assert all(n > 0 for n in answered), answered
            admitted = said.count("OK")
            refused = [s for s in said if s != "OK"]
            assert PER_MINUTE <= admitted <= PER_MINUTE + 1 + elapsed * PER_MINUTE / 60
            assert all(s.startswith("RESOURCE_EXHAUSTED") for s in refused), refused[:3]

            # A forwarded call's assertion, sent on 8 connections at once: accepted once.
            root = load_certs(city.config.path(city.config.tls.root))[0]
            chain = [c for c in load_certs(city.config.path(city.config.tls.cert)) if c != root]
            request = verify(KEYS[0])
            signed = make_assertion(
                caller=make_identity(XIAMEN, TD, Role.AGENCY, agency_code(1, XIAMEN)),
                node_key=load_private_key(city.config.path(city.config.tls.key)),
                node_chain=chain,
                resource_code=ENTRY.resource_code,
                request_bytes=request.SerializeToString(),
                deadline=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30),
                request_id="replayed-across-processes",
            )
            as_city = node_tls_files(city.config)
            before = [await handled(port) for port in ports]
            tries = await asyncio.gather(
                *(
                    outcome(address, as_city, request, metadata=[(ASSERTION_KEY, signed)])
                    for _ in range(8)
                )
            )
            after = [await handled(port) for port in ports]
            assert sorted(tries)[0] == "OK" and tries.count("OK") == 1, tries
            replays = [t for t in tries if t != "OK"]
            assert all(t.startswith("UNAUTHENTICATED") and "replay" in t for t in replays)
            assert sum(after) - sum(before) == 8
        # Both stopped: the chain both wrote verifies, every call in it.
        result = govnode("audit", "verify", "--config", setup.config_path, "--offline")
        assert result.returncode == 0, result.stderr + result.stdout


def test_reuse_port_needs_postgresql_and_without_it_a_second_process_fails(
    tmp_path: Path, sqlite_url: str
) -> None:
    setup = make_province(tmp_path / "province", sqlite_url)
    reuse_port(setup)
    result = govnode("serve", "--config", setup.config_path)
    assert_one_line_error(result, "node.reuse_port: several processes of one node need PostgreSQL")
    text = setup.config_path.read_text(encoding="utf-8")
    setup.config_path.write_text(text.replace("reuse_port = true\n", ""), encoding="utf-8")
    first = serve_process(setup.config_path, stderr=subprocess.DEVNULL)
    try:
        wait_serving(setup.config.node.listen, setup.agency(PUBLIC_SECURITY).key.parent, first)
        second = govnode("serve", "--config", setup.config_path)
        assert second.returncode != 0
        assert setup.config.node.listen in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
