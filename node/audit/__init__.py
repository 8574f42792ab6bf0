"""The audit log (第三十九条): every call, hash-chained and group-committed (``_log``); the
RFC 6962 Merkle tree over it, grown with each batch, and its proofs (``_tree``); its signed
checkpoints and their cosignatures (``_checkpoints``); which witnesses a checkpoint needs
(``_policy``); this node as a witness of other nodes' logs (``_witness``); checking the log
against what was witnessed (``_verify``); proof files anyone checks offline
(``_prooffile``); usage logs for providers, with signed statements of what they list
(``_usage``); sealing closed segments into an archive (``_archive``), checking it offline in
parallel (``_archive_check``), and pruning archived segments past their retention from the
live database (``_prune``, ``_pruned``); the keys behind all of it and how a verifier learns
them (``_keys``); the hook that turns a call into its record (``_hook``); reading it back
(``_query``).
"""

from __future__ import annotations

from node.audit._archive import ArchiveError, Manifest, archived_segments, seal_closed
from node.audit._archive_check import SegmentCheck, check_archive
from node.audit._checkpoints import (
    Checkpoints,
    CosignerKeys,
    LogDiverged,
    StoredCheckpoint,
    cosigners,
    newest_cosigned,
    remember_cosigner,
    witness_vkeys,
)
from node.audit._hook import NodeAuditSink
from node.audit._keys import (
    Cosigner,
    KeyStatementError,
    claimed_origin,
    epoch_origin,
    log_origin,
    log_signer,
    log_verifier,
    node_key_name,
    origin_epoch,
    origin_parts,
    read_log_signer,
    read_witness_statement,
    witness_name,
    witness_signer,
    witness_statement,
)
from node.audit._log import (
    MAX_QUERY_LIMIT,
    AuditEntry,
    AuditLog,
    AuditLogClosed,
    AuditRecord,
    AuditWriteFailed,
    ChainCheck,
    Operation,
    request_digest,
)
from node.audit._node_notes import NodeNoteError, open_node_note, sign_node_note
from node.audit._policy import WitnessRule, federation_rule, province_of
from node.audit._prooffile import (
    MAX_PROOF_BYTES,
    CannotProve,
    CheckedProof,
    ProofFileError,
    check_proof_file,
    make_proof_file,
    prove_record,
)
from node.audit._prune import Pruned, PruneRefused, prune
from node.audit._pruned import PrunedMark, RecordsPruned
from node.audit._query import AuditQuery, query_audit
from node.audit._restart import (
    RESTART_ACTION,
    Cosigned,
    Epoch,
    PendingRestore,
    current_epoch,
    epochs,
    lost_history,
    mark_restored,
    pending_restore,
    restart,
    settle_restores,
)
from node.audit._tree import TreeHead, record_leaf
from node.audit._usage import (
    MAX_SPAN,
    CosignedWatch,
    SignedStatement,
    UsageCheck,
    UsageError,
    UsageLog,
    UsageRecord,
    UsageStatement,
    check_usage,
    parse_statement,
    provided_resources,
    read_statement,
    sequences_digest,
)
from node.audit._verify import (
    Witnessed,
    WitnessedError,
    problems,
    sizes_to_check,
    stored_witnessed,
    witnessed_note,
)
from node.audit._witness import (
    MAX_BODY_BYTES,
    Evidence,
    SizeConflict,
    Witness,
    witness_evidence,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROOF_BYTES",
    "MAX_QUERY_LIMIT",
    "MAX_SPAN",
    "RESTART_ACTION",
    "ArchiveError",
    "AuditEntry",
    "AuditLog",
    "AuditLogClosed",
    "AuditQuery",
    "AuditRecord",
    "AuditWriteFailed",
    "CannotProve",
    "ChainCheck",
    "CheckedProof",
    "Checkpoints",
    "Cosigned",
    "CosignedWatch",
    "Cosigner",
    "CosignerKeys",
    "Epoch",
    "Evidence",
    "KeyStatementError",
    "LogDiverged",
    "Manifest",
    "NodeAuditSink",
    "NodeNoteError",
    "Operation",
    "PendingRestore",
    "ProofFileError",
    "PruneRefused",
    "Pruned",
    "PrunedMark",
    "RecordsPruned",
    "SegmentCheck",
    "SignedStatement",
    "SizeConflict",
    "StoredCheckpoint",
    "TreeHead",
    "UsageCheck",
    "UsageError",
    "UsageLog",
    "UsageRecord",
    "UsageStatement",
    "Witness",
    "WitnessRule",
    "Witnessed",
    "WitnessedError",
    "archived_segments",
    "check_archive",
    "check_proof_file",
    "check_usage",
    "claimed_origin",
    "cosigners",
    "current_epoch",
    "epoch_origin",
    "epochs",
    "federation_rule",
    "log_origin",
    "log_signer",
    "log_verifier",
    "lost_history",
    "make_proof_file",
    "mark_restored",
    "newest_cosigned",
    "node_key_name",
    "open_node_note",
    "origin_epoch",
    "origin_parts",
    "parse_statement",
    "pending_restore",
    "problems",
    "prove_record",
    "provided_resources",
    "province_of",
    "prune",
    "query_audit",
    "read_log_signer",
    "read_statement",
    "read_witness_statement",
    "record_leaf",
    "remember_cosigner",
    "request_digest",
    "restart",
    "seal_closed",
    "sequences_digest",
    "settle_restores",
    "sign_node_note",
    "sizes_to_check",
    "stored_witnessed",
    "witness_evidence",
    "witness_name",
    "witness_signer",
    "witness_statement",
    "witness_vkeys",
    "witnessed_note",
]
