"""The audit log (第三十九条): every call, hash-chained and group-committed (``_log``); the
RFC 6962 Merkle tree over it, grown with each batch, and its proofs (``_tree``); the hook that
turns a call into its record (``_hook``); reading it back (``_query``).
"""

from __future__ import annotations

from node.audit._hook import NodeAuditSink
from node.audit._log import (
    MAX_QUERY_LIMIT,
    AuditLog,
    AuditLogClosed,
    AuditRecord,
    AuditWriteFailed,
    Operation,
)
from node.audit._query import AuditQuery, query_audit
from node.audit._tree import TreeHead, record_leaf

__all__ = [
    "MAX_QUERY_LIMIT",
    "AuditLog",
    "AuditLogClosed",
    "AuditQuery",
    "AuditRecord",
    "AuditWriteFailed",
    "NodeAuditSink",
    "Operation",
    "TreeHead",
    "query_audit",
    "record_leaf",
]
