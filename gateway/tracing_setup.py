"""``[tracing]``: where a node's (or the portal's) spans go, and the SDK that records them.

The node and the portal read the same keys (one model, here, since the portal does not import
node). The OpenTelemetry SDK and its OTLP exporter are the optional extra ``govnode[otel]``:
they are imported only when ``exporter`` is not ``none``, and their absence is then a clear
start-up error, never an ImportError at the first call.

```toml
[tracing]
exporter = "otlp"              # "none" (default), "otlp" (gRPC), "console" (stdout)
endpoint = "127.0.0.1:4317"    # the OTLP collector (plaintext gRPC: keep it on this host)
sample_ratio = 1.0             # share of new traces recorded; a caller's decision is kept
service_name = ""              # default govnode-<region> (the portal: govnode-portal)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.tracing import SCOPE, Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

INSTALL_HINT = "pip install 'govnode[otel]'"


class TracingUnavailable(Exception):
    """``[tracing]`` asks for an exporter, but the SDK (the ``otel`` extra) is not installed."""


class TracingSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: none: no spans are recorded (a caller's trace context is still passed on);
    #: otlp: OTLP over gRPC to ``endpoint``; console: one JSON document per span on stdout.
    exporter: Literal["none", "otlp", "console"] = "none"
    endpoint: str = "127.0.0.1:4317"
    #: Parent-based: a call whose caller sent a trace follows the caller's sampling decision;
    #: a new trace is recorded with this probability.
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    #: The ``service.name`` of every span; empty: govnode-<region> (the portal's own default).
    service_name: str = Field(default="", max_length=64)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value[:64]!r} must be HOST:PORT, e.g. 127.0.0.1:4317")
        return value


def make_tracer_provider(
    section: TracingSection,
    default_service: str,
    *,
    public: bool = False,
    exporter: SpanExporter | None = None,
) -> TracerProvider | None:
    """A TracerProvider of its own for one node or portal (never the process's global one),
    exporting in batches as ``section`` says; None when ``exporter`` is ``none``. Its sampler
    records every new trace: the :class:`Tracing` samples them (``tracing_of(provider,
    section.sample_ratio)``).
    ``public``: its callers are anyone (the portal): a caller's trace is continued, but its
    "sampled" flag is not obeyed, so the public cannot make every request of theirs recorded.
    ``exporter``: instead of the one ``section`` names (the bench's, which drops every span).
    Raises :class:`TracingUnavailable` without the SDK."""
    if section.exporter == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise TracingUnavailable(
            f'tracing.exporter = "{section.exporter}" needs the OpenTelemetry SDK: '
            f"{INSTALL_HINT} ({exc})"
        ) from None
    if exporter is not None:
        pass
    elif section.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingUnavailable(
                f'tracing.exporter = "otlp" needs the OTLP exporter: {INSTALL_HINT} ({exc})'
            ) from None
        exporter = OTLPSpanExporter(endpoint=section.endpoint, insecure=True)
    # A new trace (no parent) is sampled by the Tracing before it asks this provider for a
    # span (tracing_of(provider, section.sample_ratio): a call sampled out then costs almost
    # nothing), so the provider records every root it is given. A caller's trace follows the
    # caller's decision, except at the portal.
    ratio = TraceIdRatioBased(section.sample_ratio)
    provider = TracerProvider(
        resource=Resource.create({"service.name": section.service_name or default_service}),
        sampler=ParentBased(ALWAYS_ON, remote_parent_sampled=ratio, remote_parent_not_sampled=ratio)
        if public
        else ParentBased(ALWAYS_ON),
    )
    # The SDK's batch processor with its defaults (a batch of 512 spans handed to the exporter
    # from its own thread, or every 5 s): measured (bench/tracing_cost.py), building and
    # ending a span costs far more than queueing it; a processor of our own would not pay.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracing_of(provider: TracerProvider | None, root_ratio: float | None = None) -> Tracing:
    """The spans of a node or portal recorded by ``provider`` (None: tracing off).
    ``root_ratio``: the share of new traces recorded, decided before the provider is asked
    (a provider made by :func:`make_tracer_provider` records every root it is given: pass its
    section's ``sample_ratio``); None: ``provider``'s own sampler decides."""
    if provider is None:
        return Tracing()
    return Tracing(provider.get_tracer(SCOPE), root_ratio)
