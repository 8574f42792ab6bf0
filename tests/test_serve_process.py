"""`govnode serve` as a real process: stock gRPC clients, CLI revocation, graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from node.servicers import service_descriptors
from tests.nodes import make_province
from tests.test_cli import govnode

pytestmark = pytest.mark.slow


def stock_channel(address: str, bundle: Path) -> grpc.Channel:
    """What any agency system would do with the three PEM files, and nothing of ours."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(bundle / "ca.crt").read_bytes(),
        private_key=(bundle / "client.key").read_bytes(),
        certificate_chain=(bundle / "client.crt").read_bytes(),
    )
    return grpc.secure_channel(address, creds)


def wait_serving(address: str, bundle: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"govnode serve exited early: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        with stock_channel(address, bundle) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise AssertionError("node did not report SERVING within 30 s")


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
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from node.cli import main; main()",
            "serve",
            "--config",
            str(setup.config_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "GOVNODE_LOG__FORMAT": "json"},
    )
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
