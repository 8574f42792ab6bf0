"""The values :class:`node.records.Records` takes and returns (pure: no database, no grpc).

Names follow the wire contract (govnode.v1 SharingService) so the servicer maps them field by
field.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from node.catalog import UpdateCycle

__all__ = [
    "MAX_BATCH_ID",
    "MAX_BATCH_RECORDS",
    "MAX_COMPARE",
    "MAX_COMPARE_RESULTS_PER_MESSAGE",
    "MAX_TEMPORARY_DAYS",
    "AggregationStatus",
    "BatchOutcome",
    "HeldRecord",
    "MatchResult",
    "QueryFilter",
    "QueryOperator",
    "QueryPage",
    "QueryRow",
    "RecordVersion",
    "Rejection",
    "SubmitBatch",
    "TemporaryCollection",
    "VerifyOutcome",
]

MAX_BATCH_ID = 128
MAX_BATCH_RECORDS = 10_000
MAX_COMPARE = 10_000
#: Compare results one streamed message may carry (CompareRequest.results_per_message).
MAX_COMPARE_RESULTS_PER_MESSAGE = 1_000
MAX_TEMPORARY_DAYS = 90


#: The audit message of a Submit batch whose id was applied before with the same content (its
#: first outcome is sent again, nothing applied): data quality counts resent batches by it.
DUPLICATE_BATCH_MESSAGE = "duplicate batch, nothing applied"
#: How the rejection of a record that carries its key with other values in the same batch
#: begins (node.records._submit.one_value_per_key): data quality counts duplicate keys by it.
KEY_CONFLICT_REASON = "its key ("


@dataclass(frozen=True, slots=True)
class TemporaryCollection:
    """临时采集 (第十二条第二款): items outside the catalog, collected for special business or
    urgent needs, with a reason and an expiry; flagged on the batch and every record version."""

    reason: str
    expires_at: dt.datetime
    extra_items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubmitBatch:
    """One batch of records to aggregate (汇聚). ``batch_id`` is the idempotency key."""

    batch_id: str
    records: tuple[Mapping[str, str], ...]
    temporary: TemporaryCollection | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the record at ``index`` of a batch was refused; ``item`` is "" for the whole
    record."""

    index: int
    item: str
    reason: str


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What a committed batch did. ``duplicate``: the batch id had been applied before and
    this is that first outcome, nothing was applied again. ``held``: valid records that would
    change a stored record and wait for approval as change requests (第四十一条); ``accepted``
    does not count them."""

    batch_id: str
    accepted: int
    rejected: int
    rejections: tuple[Rejection, ...]
    duplicate: bool
    data_version: int
    committed_at: dt.datetime
    held: tuple[HeldRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """A record of a batch held for approval: its position and its change request's id."""

    index: int
    change_request_id: str


class MatchResult(enum.StrEnum):
    """Outcome of comparing one claimed value with the stored one."""

    MATCH = "match"
    MISMATCH = "mismatch"
    NOT_PRESENT = "not_present"  # the stored record has no value for the item


@dataclass(frozen=True, slots=True)
class Dispute:
    """The mark of a disputed record (异议标注): its open error reports (纠错, 第十六条)."""

    #: Ids of the open reports, oldest first (at most node.records._disputes.MAX_DISPUTE_IDS).
    report_ids: tuple[str, ...]
    #: The items they name, each once ("" for a report on the whole record).
    items: tuple[str, ...]
    #: When the oldest one was made.
    since: dt.datetime
    open_reports: int


@dataclass(frozen=True, slots=True)
class VerifyOutcome:
    """联机验证 / 比对验证 result for one record; never carries a stored value."""

    found: bool
    matches: tuple[tuple[str, MatchResult], ...] = ()
    #: Set when the record is disputed.
    dispute: Dispute | None = None

    @property
    def all_match(self) -> bool:
        return self.found and all(result is MatchResult.MATCH for _, result in self.matches)


class QueryOperator(enum.StrEnum):
    EQ = "eq"
    PREFIX = "prefix"
    RANGE = "range"  # lower <= value < upper; an empty bound is open


@dataclass(frozen=True, slots=True)
class QueryFilter:
    """One condition of a query; all must hold. ``op`` may be given as its string value."""

    item: str
    op: QueryOperator | str
    value: str = ""
    lower: str = ""
    upper: str = ""


@dataclass(frozen=True, slots=True)
class QueryRow:
    """One record as a query caller may see it: projected, masked items in masked form."""

    values: dict[str, str]
    version: int
    masked_items: tuple[str, ...] = ()
    #: Set when the record is disputed.
    dispute: Dispute | None = None


@dataclass(frozen=True, slots=True)
class QueryPage:
    rows: tuple[QueryRow, ...]
    next_page_token: str = ""
    truncated: bool = False  # the query hit the per-query row cap; narrow it or use Exchange


@dataclass(frozen=True, slots=True)
class RecordVersion:
    """One stored version of a record, unmasked (for its provider and authority: 第四十一条).
    ``kind`` is "upsert", or "delete" for a deletion approved by the authority (no values);
    ``batch_id`` is "change:<id>" for a version an approved change request wrote."""

    values: dict[str, str]
    version: int
    data_seq: int
    batch_id: str
    submitted_by: str
    at: dt.datetime
    temporary_reason: str | None = None
    temporary_expires_at: dt.datetime | None = None
    temporary_items: tuple[str, ...] = field(default=())
    kind: str = "upsert"


@dataclass(frozen=True, slots=True)
class AggregationStatus:
    """Whether a resource is aggregated within its update cycle (第二十一条, 第四十二条)."""

    resource_code: str
    provider_code: str
    update_cycle: UpdateCycle
    last_aggregated_at: dt.datetime | None
    due_at: dt.datetime | None
    overdue: bool
    record_count: int
    data_version: int
