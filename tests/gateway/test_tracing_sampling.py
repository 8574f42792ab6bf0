"""New traces are sampled by gateway.tracing.Tracing before the OpenTelemetry SDK is asked:
a call sampled out records nothing anywhere and tells the next hop "not sampled"; a caller's
trace keeps the caller's decision; a call made outside any traced call is sampled like a new
trace. The SDK is the real one (the provider ``[tracing]`` makes), its spans exported into
memory."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.tracing import Tracing, inject, inject_current
from gateway.tracing_setup import TracingSection, make_tracer_provider, tracing_of

VERIFY = "/govnode.v1.SharingService/Verify"
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SAMPLED = (("traceparent", f"00-{CALLER_TRACE}-b7ad6b7169203331-01"),)


class Recorded:
    def __init__(self, ratio: float) -> None:
        self.exporter = InMemorySpanExporter()
        section = TracingSection(exporter="otlp", sample_ratio=ratio)
        provider = make_tracer_provider(section, "govnode-test", exporter=self.exporter)
        assert provider is not None
        self.provider = provider
        self.tracing: Tracing = tracing_of(provider, ratio)

    def spans(self) -> list[ReadableSpan]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def never() -> Iterator[Recorded]:
    recorded = Recorded(0.0)
    yield recorded
    recorded.provider.shutdown()


@pytest.fixture
def always() -> Iterator[Recorded]:
    recorded = Recorded(1.0)
    yield recorded
    recorded.provider.shutdown()


def flags(metadata: tuple[tuple[str, str], ...]) -> str:
    """The W3C "sampled" flag the metadata carries: "01" or "00" (other flag bits, such as
    the SDK's "random trace id", left out)."""
    [(key, value)] = metadata
    assert key == "traceparent"
    return f"{int(value.rsplit('-', 1)[1], 16) & 1:02x}"


def test_a_new_trace_sampled_out_records_nothing_and_says_not_sampled(never: Recorded) -> None:
    for n in range(20):
        server = never.tracing.server_span(VERIFY, (), f"rid-{n}")
        assert server is not None and server.span is None
        assert flags(inject_current()) == "00"  # the portal's calls into its node
        client = never.tracing.client_span(
            VERIFY, endpoint="127.0.0.1:1", region="350100", request_id=f"rid-{n}"
        )
        assert flags(inject(client)) == "00"  # a forwarded call
        never.tracing.client_done(client, grpc.StatusCode.OK)
        never.tracing.end(server, grpc.StatusCode.OK, role="agency")
        assert inject_current() == ()  # the call's mark is gone with it
    assert never.spans() == []


def test_a_callers_sampled_trace_is_recorded_whatever_the_ratio(never: Recorded) -> None:
    server = never.tracing.server_span(VERIFY, SAMPLED, "rid-caller")
    assert server is not None and server.span is not None
    client = never.tracing.client_span(
        VERIFY, endpoint="127.0.0.1:1", region="350100", request_id="rid-caller"
    )
    assert flags(inject(client)) == "01"
    never.tracing.client_done(client, grpc.StatusCode.OK)
    never.tracing.end(server, grpc.StatusCode.OK, role="agency")
    spans = never.spans()
    assert sorted(s.kind.name for s in spans) == ["CLIENT", "SERVER"]
    assert {format(s.context.trace_id, "032x") for s in spans} == {CALLER_TRACE}


def test_every_new_trace_is_recorded_at_ratio_one(always: Recorded) -> None:
    for n in range(5):
        server = always.tracing.server_span(VERIFY, (), f"rid-{n}")
        assert server is not None and server.span is not None
        always.tracing.end(server, grpc.StatusCode.OK, role="agency")
    spans = always.spans()
    assert [s.kind for s in spans] == [SpanKind.SERVER] * 5
    assert [(s.attributes or {})["govnode.request_id"] for s in spans] == [
        f"rid-{n}" for n in range(5)
    ]


def test_a_call_made_outside_any_traced_call_is_sampled_as_a_new_trace(
    never: Recorded, always: Recorded
) -> None:
    dropped = never.tracing.client_span(
        VERIFY, endpoint="127.0.0.1:1", region="350100", request_id="rid-job"
    )
    assert flags(inject(dropped)) == "00"
    never.tracing.client_done(dropped, grpc.StatusCode.OK)
    assert never.spans() == []
    kept = always.tracing.client_span(
        VERIFY, endpoint="127.0.0.1:1", region="350100", request_id="rid-job"
    )
    assert flags(inject(kept)) == "01"
    always.tracing.client_done(kept, grpc.StatusCode.OK)
    assert [s.kind for s in always.spans()] == [SpanKind.CLIENT]
