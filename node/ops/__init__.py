"""Operations: the node's Prometheus metrics, its metrics listener and the event-loop monitor.

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
from node.ops._metrics import ORACLE_REASONS, NodeMetrics, Snapshot

__all__ = [
    "MONITOR_ROLES",
    "ORACLE_REASONS",
    "HealthFacts",
    "LoopLagMonitor",
    "MetricsListener",
    "NodeMetrics",
    "Snapshot",
    "metrics_app",
    "start_listener",
]
