"""检索查询 (第二十六条): turning a query into SQL, paging it and shaping its rows.

Portability: a record's values are one JSON column, and filters use SQLAlchemy's JSON element
expressions (``item_values[item].as_string()``), which compile to ``JSON_EXTRACT`` on SQLite and
``->>`` on PostgreSQL. No index covers them: a filtered query scans the resource's current
records (the primary key narrows it to the resource; a full key is a primary-key lookup).
That is the price of a schema that does not change per catalog entry; the per-query row cap
keeps each scan's output bounded, and bulk reading is Exchange's job.

Comparisons are on the canonical strings records are stored in (node.records._validation), except
RANGE on INTEGER and DECIMAL items, which compares numerically (as double precision, exact up
to about 15 significant digits). DATE and DATETIME canonical forms sort chronologically as
text (datetimes to the second).

Paging: rows come in record-key order; the page token carries the last key served, the rows
served so far and a fingerprint of the query, so a token only continues the query it came
from. At most :data:`MAX_QUERY_ROWS` rows are served per query across all its pages; the page
that reaches the cap says ``truncated`` when more rows matched, and has no next token. The
cap bounds the work of one query; it is not an access control (that is decided before the
query runs, by the caller's grant). A page also stops at about :data:`PAGE_BYTES` of values
(at least one row), so that it fits in a message however large the records are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from gateway.quote import quote, quote_each
from node import paging
from node.catalog import DataItem, DataType, MaskingKind, ResourceEntry, effective_masking
from node.errors import InvalidArgument, PermissionDenied
from node.records._types import (
    MatchResult,
    QueryFilter,
    QueryOperator,
    QueryRow,
    RecordVersion,
    VerifyOutcome,
)
from node.records._validation import ItemCheck, RecordSchema
from node.sharing import mask

__all__ = [
    "DEFAULT_HISTORY_PAGE",
    "DEFAULT_PAGE_SIZE",
    "MAX_HISTORY_PAGE",
    "MAX_PAGE_SIZE",
    "MAX_QUERY_ROWS",
    "PAGE_BYTES",
    "PageCursor",
    "QueryPlan",
    "decode_history_token",
    "decode_token",
    "encode_history_token",
    "encode_token",
    "plan_query",
    "projection",
    "row_bytes",
    "shape_row",
    "version_bytes",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_QUERY_ROWS = 1000
#: A page stops before the row that would take its values past this many bytes (it has at
#: least one row): 200 records of 100 KB would be 20 MB, over the 4 MiB a message may take.
#: GetRecordHistory's pages stop the same way.
PAGE_BYTES = 1024 * 1024
#: Versions per GetRecordHistory page: one batch may write 10,000 versions of a record (where
#: changes apply at once), and years of approved changes add up.
DEFAULT_HISTORY_PAGE = 100
MAX_HISTORY_PAGE = 200
_HISTORY_PREFIX = "h1:"
MAX_FILTERS = 32

_TOKEN_PREFIX = "q1:"  # noqa: S105 (a page-token version tag, not a secret)
_NUMERIC = frozenset({DataType.INTEGER, DataType.DECIMAL})


_KEY_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def key_text(values: Sequence[str]) -> str:
    """The record key: canonical JSON array of the key items' values in catalog order."""
    return _KEY_JSON.encode(list(values))


@dataclass(frozen=True, slots=True)
class QueryPlan:
    conditions: tuple[sa.ColumnElement[bool], ...]
    projection: tuple[str, ...]
    fingerprint: str


@dataclass(frozen=True, slots=True)
class PageCursor:
    after: str  # last record key served; "" before the first page
    served: int  # rows served by earlier pages


def plan_query(
    entry: ResourceEntry,
    schema: RecordSchema,
    values_column: sa.ColumnElement[Any],
    key_column: sa.ColumnElement[str],
    *,
    key: Mapping[str, str] | None,
    filters: Sequence[QueryFilter],
    items: Sequence[str],
    visible_items: frozenset[str],
) -> QueryPlan:
    """Check a query against the entry and the caller's visible items; build its conditions."""
    key = key or {}
    if not key and not filters:
        raise InvalidArgument(
            "query: give key values or at least one filter; to read a whole resource use Exchange"
        )
    if len(filters) > MAX_FILTERS:
        raise InvalidArgument(f"filters: at most {MAX_FILTERS}, got {len(filters)}")
    conditions: list[sa.ColumnElement[bool]] = []
    conditions += _key_conditions(schema, values_column, key_column, key)
    for i, flt in enumerate(filters):
        conditions.append(_filter_condition(schema, values_column, i, flt, visible_items))
    projection = _projection(entry, items, visible_items)
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                entry.resource_code,
                sorted(key.items()),
                [[f.item, str(f.op), f.value, f.lower, f.upper] for f in filters],
                projection,
            ],
            ensure_ascii=False,
        ).encode()
    ).hexdigest()[:16]
    return QueryPlan(tuple(conditions), projection, fingerprint)


def _key_conditions(
    schema: RecordSchema,
    values_column: sa.ColumnElement[Any],
    key_column: sa.ColumnElement[str],
    key: Mapping[str, str],
) -> list[sa.ColumnElement[bool]]:
    if not key:
        return []
    _check_count(schema, key, "key")
    unknown = sorted(set(key) - set(schema.key_items))
    if unknown:
        raise InvalidArgument(
            f"key: {quote_each(unknown)} not a key item of this resource; key items are "
            f"{', '.join(schema.key_items)}"
        )
    for name, value in key.items():
        if not value.strip():
            raise InvalidArgument(f"key.{name}: must not be empty")
    normalised = {name: schema.items[name].normalise(v) for name, v in key.items()}
    if len(normalised) == len(schema.key_items):
        # The whole key: one primary-key lookup.
        return [key_column == key_text([normalised[n] for n in schema.key_items])]
    # A subset of the key items: equality on each (a scan of the resource's records).
    return [values_column[name].as_string() == value for name, value in normalised.items()]


def _filter_condition(
    schema: RecordSchema,
    values_column: sa.ColumnElement[Any],
    index: int,
    flt: QueryFilter,
    visible_items: frozenset[str],
) -> sa.ColumnElement[bool]:
    path = f"filters[{index}]"
    check = schema.items.get(flt.item)
    if check is None:
        raise InvalidArgument(f"{path}.item: {quote(flt.item)} is not an item of this resource")
    if flt.item not in visible_items:
        raise PermissionDenied(
            f"{path}.item: the caller may not see item {quote(flt.item)}, so may not filter on it "
            "(第三十七条: no use beyond a grant)"
        )
    element: sa.ColumnElement[str] = values_column[flt.item].as_string()
    try:
        op = QueryOperator(flt.op)
    except ValueError:
        raise InvalidArgument(f"{path}.op: must be eq, prefix or range, got {flt.op!r}") from None
    match op:
        case QueryOperator.EQ:
            if not flt.value.strip():
                raise InvalidArgument(f"{path}.value: EQ needs a value")
            return element == check.normalise(flt.value)
        case QueryOperator.PREFIX:
            prefix = flt.value.strip()
            if not prefix:
                raise InvalidArgument(f"{path}.value: PREFIX needs a value")
            # substr, not LIKE: LIKE ignores ASCII case on SQLite and needs escaping.
            return sa.func.substr(element, 1, len(prefix)) == prefix
        case QueryOperator.RANGE:
            return _range_condition(check, element, path, flt)


def _range_condition(
    check: ItemCheck, element: sa.ColumnElement[str], path: str, flt: QueryFilter
) -> sa.ColumnElement[bool]:
    bounds: list[sa.ColumnElement[bool]] = []
    for name, raw in (("lower", flt.lower), ("upper", flt.upper)):
        if not raw.strip():
            continue
        canonical, problem = check.lookup_form(raw)
        if canonical is None:
            raise InvalidArgument(f"{path}.{name}: {problem}")
        operand: sa.ColumnElement[Any] = element
        bound: Any = canonical
        if check.item.data_type in _NUMERIC:
            operand = sa.cast(element, sa.Float)
            bound = float(canonical)
        bounds.append(operand >= bound if name == "lower" else operand < bound)
    if not bounds:
        raise InvalidArgument(f"{path}: RANGE needs a lower or an upper bound")
    return sa.and_(*bounds)


def _projection(
    entry: ResourceEntry, items: Sequence[str], visible_items: frozenset[str]
) -> tuple[str, ...]:
    declared = [item.name for item in entry.items]
    if len(items) > len(declared):
        raise InvalidArgument(f"items: {len(items)} names; the resource has {len(declared)} items")
    if not items:
        projection = tuple(name for name in declared if name in visible_items)
        if not projection:
            raise PermissionDenied(
                f"no item of resource {entry.resource_code} is visible to the caller"
            )
        return projection
    unknown = [name for name in items if name not in set(declared)]
    if unknown:
        raise InvalidArgument(f"items: {quote_each(unknown)} not an item of this resource")
    hidden = [name for name in items if name not in visible_items]
    if hidden:
        raise PermissionDenied(
            f"items: the caller may not see {quote_each(dict.fromkeys(hidden))} "
            "(第三十七条: no use beyond a grant)"
        )
    return tuple(dict.fromkeys(items))


def projection(
    entry: ResourceEntry, items: Sequence[str], visible_items: frozenset[str]
) -> tuple[str, ...]:
    """The items a caller gets: ``items`` (empty: every visible item), checked as Query checks
    them (unknown: INVALID_ARGUMENT; not visible: PERMISSION_DENIED). Exchange uses it too."""
    return _projection(entry, items, visible_items)


def shape_row(
    entry_items: Mapping[str, DataItem],
    projection: Sequence[str],
    clear_items: frozenset[str],
    stored: Mapping[str, str],
    version: int,
) -> QueryRow:
    """Project a stored record and mask (脱敏) what the caller may not see in clear."""
    values: dict[str, str] = {}
    masked: list[str] = []
    for name in projection:
        value = stored.get(name)
        if value is None:
            continue
        # Level-4 items without a masking rule are masked fully (node.catalog._grading, 第三十七条).
        rule = effective_masking(entry_items[name])
        if name not in clear_items and rule.kind is not MaskingKind.NONE:
            values[name] = mask(value, rule)
            masked.append(name)
        else:
            values[name] = value
    return QueryRow(values=values, version=version, masked_items=tuple(masked))


def row_bytes(row: QueryRow) -> int:
    """About what ``row`` takes in a reply: its names and values (UTF-8) and their framing."""
    size = sum(len(k) + len(v.encode()) + 8 for k, v in row.values.items())
    return size + sum(len(name) + 2 for name in row.masked_items) + 16


def encode_token(cursor: PageCursor, fingerprint: str) -> str:
    raw = _TOKEN_PREFIX + json.dumps([cursor.after, cursor.served, fingerprint], ensure_ascii=False)
    return paging.encode_text(raw)


def decode_token(token: str, fingerprint: str) -> PageCursor:
    if not token:
        return PageCursor("", 0)
    refused = InvalidArgument(
        "page_token: not a page token of this query; repeat the query without it to start over"
    )
    raw = paging.decode_text(token)
    if raw is None or not raw.startswith(_TOKEN_PREFIX):
        raise refused
    try:
        after, served, print_ = json.loads(raw.removeprefix(_TOKEN_PREFIX))
    except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
        raise refused from None
    if (
        not isinstance(after, str)
        or type(served) is not int
        or not 0 < served < MAX_QUERY_ROWS
        or print_ != fingerprint
    ):
        raise refused
    return PageCursor(after, served)


def version_bytes(version: RecordVersion) -> int:
    """About what ``version`` takes in a GetRecordHistory reply."""
    size = sum(len(k) + len(v.encode()) + 8 for k, v in version.values.items())
    return size + len(version.batch_id.encode()) + len(version.submitted_by.encode()) + 64


def encode_history_token(after_seq: int) -> str:
    return paging.encode_text(f"{_HISTORY_PREFIX}{after_seq}")


def decode_history_token(token: str) -> int:
    """The data version a GetRecordHistory page token continues after (0: from the start)."""
    if not token:
        return 0
    raw = paging.decode_text(token) if len(token) <= 64 else None
    after = None if raw is None else paging.parse_count(raw.removeprefix(_HISTORY_PREFIX))
    if raw is None or not raw.startswith(_HISTORY_PREFIX) or after is None:
        raise InvalidArgument(
            "page_token: not a page token of this record's history; omit it to start over"
        )
    return after


# --- keys and claims (Verify, Compare, history) ------------------------------


def full_key(schema: RecordSchema, key: Mapping[str, str], path: str) -> str:
    """The record key for ``key``, which must name exactly the entry's key items."""
    _check_count(schema, key, path)
    wanted = schema.key_items
    missing = [name for name in wanted if name not in key]
    extra = sorted(name for name in key if name not in wanted)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key item(s) {', '.join(missing)}")
        if extra:
            parts.append(f"{quote_each(extra)} not a key item")
        raise InvalidArgument(
            f"{path}: {'; '.join(parts)}; the key of this resource is {', '.join(wanted)}"
        )
    values = []
    for name in wanted:
        if not key[name].strip():
            raise InvalidArgument(f"{path}.{name}: must not be empty")
        values.append(schema.items[name].normalise(key[name]))
    return key_text(values)


def _check_count(schema: RecordSchema, names: Mapping[str, str], path: str) -> None:
    # Before any name is sorted or listed in a message: a request can carry many thousands,
    # and more names than the resource has items cannot all be its items.
    if len(names) > len(schema.items):
        raise InvalidArgument(f"{path}: {len(names)} items; the resource has {len(schema.items)}")


def claims(schema: RecordSchema, claimed: Mapping[str, str], path: str) -> list[tuple[str, str]]:
    """Claimed (item, canonical value) pairs ordered by item name."""
    _check_count(schema, claimed, path)
    unknown = sorted(name for name in claimed if name not in schema.items)
    if unknown:
        raise InvalidArgument(
            f"{path}: {quote_each(unknown)} not an item of this resource's catalog entry"
        )
    pairs = []
    for name in sorted(claimed):
        if not claimed[name].strip():
            raise InvalidArgument(f"{path}.{name}: a claimed value must not be empty")
        pairs.append((name, schema.items[name].normalise(claimed[name])))
    return pairs


def outcome(stored: Mapping[str, str] | None, wanted: list[tuple[str, str]]) -> VerifyOutcome:
    if stored is None:
        return VerifyOutcome(found=False)
    matches = []
    for name, value in wanted:
        held = stored.get(name)
        if held is None:
            result = MatchResult.NOT_PRESENT
        elif held == value:
            result = MatchResult.MATCH
        else:
            result = MatchResult.MISMATCH
        matches.append((name, result))
    return VerifyOutcome(found=True, matches=tuple(matches))
