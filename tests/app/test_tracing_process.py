"""`govnode serve` with ``[tracing] exporter = "otlp"`` (set from the environment) as a real
process: its spans reach an OTLP/gRPC collector on loopback (a real gRPC server in the test,
speaking opentelemetry-proto's TraceService) under the node's service name, continuing the
caller's traceparent, with a refused call's status; and the JSON log line the guard writes
while refusing the call names the same trace id."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from node.ports import free_port
from tests.support.cli import govnode
from tests.support.nodes import make_province, serve_process, stock_channel, wait_serving

pytestmark = pytest.mark.slow

ACCEPTED = "5bf92f3577b34da6a3ce929d0e0e4736"
REFUSED = "6bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CHECK = "/grpc.health.v1.Health/Check"


class Collector:
    """An OTLP trace receiver: what the node exports, as it arrives."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def export(
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        self.requests.append(request)
        return ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) of every span received."""
        out: list[tuple[str, Any]] = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    out.extend((attrs["service.name"], span) for span in scope.spans)
        return out


def check(address: str, bundle: Path, trace_id: str, request_id: str) -> grpc.StatusCode:
    with stock_channel(address, bundle) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(),
                timeout=5,
                metadata=(
                    ("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01"),
                    ("govnode-request-id", request_id),
                ),
            )
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return exc.code()
    return grpc.StatusCode.OK


async def test_a_served_node_exports_its_spans_to_an_otlp_collector(
    tmp_path: Path, sqlite_url: str
) -> None:
    collector = Collector()
    await collector.server.start()
    setup = make_province(tmp_path / "province", sqlite_url)
    config = setup.config_path
    address = f"127.0.0.1:{free_port()}"
    bundle = tmp_path / "agency"
    added = await asyncio.to_thread(
        govnode, "agency", "add", "--config", config, "--code", "113500000035910014",
        "--name", "福建省公安厅", "--out", bundle,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    log_path = tmp_path / "node.log"
    env = {
        "GOVNODE_NODE__LISTEN": address,
        "GOVNODE_TRACING__EXPORTER": "otlp",
        "GOVNODE_TRACING__ENDPOINT": f"127.0.0.1:{collector.port}",
    }
    with log_path.open("wb") as log:
        proc = serve_process(config, stderr=log, env=env)
        try:
            await asyncio.to_thread(wait_serving, address, bundle, proc)
            accepted = await asyncio.to_thread(check, address, bundle, ACCEPTED, "rid-ok")
            assert accepted is grpc.StatusCode.OK
            revoked = await asyncio.to_thread(
                govnode, "certs", "revoke", "--config", config, "--cert", bundle / "client.crt",
                "--reason", "key_compromise",
            )  # fmt: skip
            assert revoked.returncode == 0, revoked.stderr
            refused = await asyncio.to_thread(check, address, bundle, REFUSED, "rid-refused")
            assert refused is grpc.StatusCode.UNAUTHENTICATED
        finally:
            # SIGTERM: the node stops and flushes the spans it still holds.
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
    await collector.server.stop(None)
    assert proc.returncode == 0

    spans = {span.trace_id.hex(): (service, span) for service, span in collector.spans()}
    for trace_id, status in ((ACCEPTED, 0), (REFUSED, grpc.StatusCode.UNAUTHENTICATED.value[0])):
        service, span = spans[trace_id]
        assert service == "govnode-350000"
        assert span.name == CHECK and span.parent_span_id.hex() == CALLER_SPAN
        attrs = {a.key: a.value for a in span.attributes}
        assert attrs["rpc.grpc.status_code"].int_value == status
        assert span.status.code == (2 if status else 0)  # STATUS_CODE_ERROR / _UNSET
    named = {a.key: a.value.string_value for a in spans[ACCEPTED][1].attributes}
    assert named["govnode.request_id"] == "rid-ok"

    # The guard's log line of the refusal leads to its trace, and to the span of that call.
    lines = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    [refusal] = [line for line in lines if line.get("event") == "call_refused"]
    assert refusal["request_id"] == "rid-refused"
    assert refusal["trace_id"] == REFUSED
    assert refusal["span_id"] == spans[REFUSED][1].span_id.hex()
    assert "trace_id" not in next(line for line in lines if line["event"] == "node_serving")
