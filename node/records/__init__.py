"""Records of the resources this node owns: 汇聚 (Submit), 联机验证 (Verify), 比对验证 (Compare),
检索查询 (Query), 数据交换 (Exchange) and the change feed Subscribe follows.

- ``_store``: the service (:class:`Records`) over the database;
- ``_validation``: the value rules of data items (GB 11643, GB 32100, dates, patterns, ...);
- ``_submit``, ``_rejections``, ``_hold``: Submit's checks, bulk writes, bounded
  acknowledgements, and the records held as change requests (第四十一条);
- ``_lookup``: rows of a resource looked up by many record keys at once (Submit, Compare, held
  records), in a plan that stays good without the database's statistics;
- ``_query``: query planning, paging and row shaping; ``_exchange`` and ``_feed``: bulk export
  and the shared change feed; ``_change``: applying an approved record change;
- ``_types``: values in and out.
"""

from __future__ import annotations

from node.records._change import CHANGE_BATCH_PREFIX, current_record, write_record_change
from node.records._disputes import MAX_DISPUTE_IDS, OPEN_STATUSES, disputes_of
from node.records._exchange import ChangeKind, FeedChange, FeedShaper, RecordsExchange
from node.records._query import full_key, key_text
from node.records._store import CYCLE_ALLOWANCE, Records, aggregation_status_on
from node.records._types import (
    DUPLICATE_BATCH_MESSAGE,
    KEY_CONFLICT_REASON,
    MAX_COMPARE_RESULTS_PER_MESSAGE,
    BatchOutcome,
    Dispute,
    MatchResult,
    QueryFilter,
    SubmitBatch,
    TemporaryCollection,
    VerifyOutcome,
)
from node.records._validation import MAX_CHECK_SECONDS, UNDECLARED, schema_for

__all__ = [
    "CHANGE_BATCH_PREFIX",
    "CYCLE_ALLOWANCE",
    "DUPLICATE_BATCH_MESSAGE",
    "KEY_CONFLICT_REASON",
    "MAX_CHECK_SECONDS",
    "MAX_COMPARE_RESULTS_PER_MESSAGE",
    "MAX_DISPUTE_IDS",
    "OPEN_STATUSES",
    "UNDECLARED",
    "BatchOutcome",
    "ChangeKind",
    "Dispute",
    "FeedChange",
    "FeedShaper",
    "MatchResult",
    "QueryFilter",
    "Records",
    "RecordsExchange",
    "SubmitBatch",
    "TemporaryCollection",
    "VerifyOutcome",
    "aggregation_status_on",
    "current_record",
    "disputes_of",
    "full_key",
    "key_text",
    "schema_for",
    "write_record_change",
]
