"""The node's Prometheus registry: gRPC series (gateway.metrics) and govnode's own.

One :class:`NodeMetrics` per running node, with its own registry (never the global one: tests
run several nodes in one process). What happens on a hot path (a call, an audit commit, an
oracle refusal, a download) is counted where it happens, with cached children; what the node
already keeps in its database (peers, checkpoints, grades, issued certificates) is read by
:class:`~node.ops.Sampler` every ``[metrics] refresh_seconds`` into a :class:`Snapshot`, which
a scrape only copies out. No label ever holds an agency code, a caller, a resource code or a
request id: labels are regions (about ten cities), roles, desks, kinds and grade letters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.metrics import GrpcMetrics
from node.sharing import ORACLE_REFUSALS

del GC_COLLECTOR  # the global one; each node registers its own below

#: A gauge family held by the snapshot: (help, label names).
_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "govnode_peer_up": (
        "1 if the peer region was heard from within 3 heartbeat periods, else 0",
        ("peer_region",),
    ),
    "govnode_peer_last_heartbeat_timestamp_seconds": (
        "when the peer region was last heard from (Unix time)",
        ("peer_region",),
    ),
    "govnode_catalog_feed_lag_changes": (
        "catalog changes the peer last said it had that this node has not applied yet (a city: "
        "its province's feed; the province: each city's)",
        ("peer_region",),
    ),
    "govnode_witnessed_checkpoint_timestamp_seconds": (
        "when the newest checkpoint of the audit log that a witness cosigned was signed",
        (),
    ),
    "govnode_audit_log_size_records": ("records in the audit log's newest checkpoint", ()),
    "govnode_quality_resources": (
        "resources whose latest quality check gave this grade",
        ("grade",),
    ),
    "govnode_aggregation_overdue_resources": (
        "this region's active resources not aggregated (汇聚) within their update cycle now "
        "(第二十一条; supervision's 'aggregated on time'), by update cycle",
        ("update_cycle",),
    ),
    "govnode_certificate_expiry_timestamp_seconds": (
        "when a certificate expires (Unix time): the node's own, its CAs, and the earliest of "
        "the certificates it issued that are neither expired nor revoked, by kind",
        ("kind",),
    ),
}


class Snapshot(Collector):
    """Gauges refreshed by the sampler, exposed as they were last read."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _GAUGES}

    def replace(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        """Set one family's samples (labels in the family's order -> value) all at once."""
        self._values[name] = dict(values)

    def set(self, name: str, value: float, *labels: str) -> None:
        self._values[name][labels] = value

    def value(self, name: str, *labels: str) -> float | None:
        return self._values[name].get(labels)

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, label_names) in _GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=label_names)
            for labels, value in sorted(self._values[name].items()):
                family.add_metric(list(labels), value)
            yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(n, h, labels=ln) for n, (h, ln) in _GAUGES.items()]


class NodeMetrics:
    """Everything one node exposes on ``/metrics``."""

    def __init__(self, *, region: str, mode: str, version: str) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.server = GrpcMetrics(registry, "server")
        self.client = GrpcMetrics(registry, "client")
        Gauge(
            "govnode_build_info",
            "always 1: the node's version, region and mode",
            ["version", "region", "mode"],
            registry=registry,
        ).labels(version, region, mode).set(1)
        self.audit_batch = Histogram(
            "govnode_audit_batch_records",
            "records per group commit of the audit log",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.audit_commit = Histogram(
            "govnode_audit_commit_seconds",
            "time to write one batch of the audit log durably (every call waits for it)",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
        )
        self._audit_batch_observe = self.audit_batch.observe
        self._audit_commit_observe = self.audit_commit.observe
        oracle = Counter(
            "govnode_oracle_refusals_total",
            "Verify/Compare calls the oracle guard refused (第二十四条), by reason",
            ["reason"],
            registry=registry,
        )
        self.oracle_refusals = {reason: oracle.labels(reason) for reason in ORACLE_REFUSALS}
        self.oracle_enumerations = Counter(
            "govnode_oracle_enumeration_suspected_total",
            "runs of Verify/Compare over many different keys the oracle guard flagged (and "
            "notified the provider and authority of)",
            registry=registry,
        )
        downloads = Counter(
            "govnode_opendata_downloads_total",
            "open data files this node served to their end (relayed ones count at the city "
            "that owns them), by kind: public (无条件开放) or keyed (授权开放)",
            ["kind"],
            registry=registry,
        )
        self.opendata_downloads = {kind: downloads.labels(kind) for kind in ("public", "keyed")}
        self.loop_lag = Gauge(
            "govnode_event_loop_lag_seconds",
            "the most the event loop woke a periodic sleep late in the last 10 s (a blocked "
            "loop delays every call)",
            registry=registry,
        )
        self.snapshot = Snapshot()
        registry.register(self.snapshot)

    def audit_committed(self, records: int, seconds: float) -> None:
        """node.audit.AuditLog.on_commit."""
        self._audit_batch_observe(records)
        self._audit_commit_observe(seconds)

    def oracle_event(self, event: str) -> None:
        """node.sharing.OracleGuard.observer: a refusal's reason, or ``enumeration``."""
        if event == "enumeration":
            self.oracle_enumerations.inc()
        elif (counter := self.oracle_refusals.get(event)) is not None:
            counter.inc()

    def downloaded(self, kind: str) -> None:
        """node.servicers.Services.on_download."""
        if (counter := self.opendata_downloads.get(kind)) is not None:
            counter.inc()
