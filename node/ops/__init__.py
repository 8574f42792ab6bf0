"""Operations: the node's Prometheus metrics, its metrics listener, the sampler that reads
what the node keeps for them, and the event-loop monitor.

An edge of node (like node.app): it reads what the domain packages keep and exposes it; the
domain packages only offer plain hooks (e.g. ``AuditLog.on_commit``) and never import it.
"""

from node.ops._listener import (
    MONITOR_ROLES,
    HealthFacts,
    MetricsListener,
    metrics_app,
    start_listener,
)
from node.ops._loop import LoopLagMonitor
from node.ops._metrics import NodeMetrics, Snapshot
from node.ops._sampler import Sampler, certificate_expiries

__all__ = [
    "MONITOR_ROLES",
    "HealthFacts",
    "LoopLagMonitor",
    "MetricsListener",
    "NodeMetrics",
    "Sampler",
    "Snapshot",
    "certificate_expiries",
    "metrics_app",
    "start_listener",
]
