"""一致性 against the authoritative source (相同数据一致性, 一数一源, 第十一、十三条): where a
resource this node owns holds a standard data element that another resource is the registered
source of, a sample of its values is checked against that source by key, with the semantics of
Compare (比对验证, 第二十六条): match, mismatch, or no record at the source.

Which source counts: the element's source in the resource's own region (this node's region,
read from ``element_source``, which this node keeps for its region) and, when there is none
there, in the province (read from the province's catalog entries this node replicates). A
resource that is itself the element's source is not checked against anything.

Keying the source: every key item of the source must carry a standard data element that one of
the resource's items carries too; those items' values make the source key. Otherwise the item is
left unmeasured, saying which key element is missing.

The sample: up to ``sample`` current records with a value for the item and for the key items,
ordered by ``(data_seq × a + b) mod p`` with ``a`` and ``b`` drawn from a hash of the resource
code and the China Standard Time day: the same records all day (a check run twice agrees),
other records the next day. The product fits in the 64-bit integers SQLite and PostgreSQL
compute it in while ``data_seq`` is below 2^32 (four billion versions of one resource).

Where the source is: at this node, the records are compared in process through
:meth:`node.records.Records.compare`, the code Compare serves with; at another node, through the
injected :data:`SourceCompare` (the node routes a Compare there as this region's data management
authority, a quality sample: node.sharing.check_quality_sample). Each comparison is bounded by
:data:`COMPARE_SECONDS`; a source that cannot be compared (unreachable, refusing, too slow)
leaves that item unmeasured with the reason, and the rest of the check goes on. A sampled value
the source's rule would not accept is compared as it is (stripped, as Compare does) and so can
never match: it counts as a mismatch, or as not found when it is a key value.

Only counts and :func:`node.sharing.key_digest` of mismatching keys are kept, never values.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.refusal import Refusal
from node.catalog import Catalog, DataItem, ResourceEntry, ResourceStatus
from node.codes import Region
from node.errors import DomainError, NotFound
from node.quality._types import ItemConsistency
from node.records import MatchResult, Records, VerifyOutcome
from node.sharing import key_digest
from node.storage import Database

__all__ = [
    "COMPARE_SECONDS",
    "MAX_MISMATCH_KEYS",
    "CompareItems",
    "Link",
    "SourceCompare",
    "links_of",
    "measure_consistency",
    "sample_order",
]

RECORD = SQLModel.metadata.tables["record"]
SOURCE = SQLModel.metadata.tables["element_source"]

#: Longest one comparison against a source may take (seconds), in process or routed.
COMPARE_SECONDS = 30.0
#: Mismatching key digests kept per item.
MAX_MISMATCH_KEYS = 20
#: The modulus of the sample order: a prime, 2^31 − 1, so ``data_seq × a`` fits in 63 bits.
_P = 2_147_483_647
#: Longest reason kept for an unmeasured item.
_REASON_CHARS = 300

#: One Compare's records: (ref, key at the source, claimed values at the source).
CompareItems = Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]
#: Compare ``records`` against ``source`` at the node that owns it, as a quality sample for
#: resource ``for_resource``, within ``seconds``; the outcomes in input order.
SourceCompare = Callable[
    [ResourceEntry, str, CompareItems, float], Awaitable[list[tuple[str, VerifyOutcome]]]
]


@dataclass(frozen=True)
class Link:
    """One item of a resource whose element another resource sources, and how to key it."""

    item: str
    element: str
    source: ResourceEntry
    source_item: str
    #: Source key item -> this resource's item with the same element (empty when unkeyable).
    key_items: Mapping[str, str]
    #: Why the source cannot be keyed from this resource ("" when it can).
    unkeyable: str = ""


async def _local_sources(db: Database, region: str, elements: set[str]) -> dict[str, str]:
    """Element -> resource code of its source in this node's region (element_source)."""
    if not elements:
        return {}

    async def txn(session: AsyncSession) -> dict[str, str]:
        conn = await session.connection()
        rows = await conn.execute(
            sa.select(SOURCE.c.standard_element, SOURCE.c.resource_code).where(
                SOURCE.c.region == region, SOURCE.c.standard_element.in_(sorted(elements))
            )
        )
        return {str(e): str(c) for e, c in rows}

    return await db.read("quality.element_sources", txn)


async def _region_sources(
    catalog: Catalog, region: str, elements: set[str]
) -> dict[str, ResourceEntry]:
    """Element -> the entry sourcing it in ``region``, from the catalog entries held here (a
    replicated region's claims are in its entries, not in this node's element_source)."""
    found: dict[str, ResourceEntry] = {}
    token = ""
    while True:
        page, token = await catalog.list(region=region, page_size=500, page_token=token)
        for entry in page:
            if entry.probe or entry.status is not ResourceStatus.ACTIVE:
                continue
            for item in entry.items:
                if item.authoritative_source and item.standard_element in elements:
                    found.setdefault(item.standard_element, entry)
        if not token:
            return found


def _item_of(entry: ResourceEntry, element: str) -> DataItem | None:
    return next((i for i in entry.items if i.standard_element == element), None)


def _link(entry: ResourceEntry, item: DataItem, source: ResourceEntry) -> Link | None:
    source_item = next(
        (
            i
            for i in source.items
            if i.authoritative_source and i.standard_element == item.standard_element
        ),
        None,
    )
    if source_item is None:
        return None
    keys: dict[str, str] = {}
    missing: list[str] = []
    for key in (i for i in source.items if i.key):
        mine = _item_of(entry, key.standard_element) if key.standard_element else None
        if mine is None:
            missing.append(f"{key.name} ({key.standard_element or 'no element'})")
        else:
            keys[key.name] = mine.name
    unkeyable = ""
    if missing:
        unkeyable = (
            f"source {source.resource_code} is keyed by {', '.join(missing)}: no item of "
            f"{entry.resource_code} carries that standard data element"
        )
        keys = {}
    return Link(
        item=item.name,
        element=item.standard_element,
        source=source,
        source_item=source_item.name,
        key_items=keys,
        unkeyable=unkeyable,
    )


async def links_of(
    db: Database, catalog: Catalog, entry: ResourceEntry, node_region: str
) -> list[Link]:
    """The items of ``entry`` whose standard element another resource sources: in the
    entry's region first, else in the province."""
    elements = {
        i.standard_element for i in entry.items if i.standard_element and not i.authoritative_source
    }
    if not elements:
        return []
    sources: dict[str, ResourceEntry] = {}
    for element, code in (await _local_sources(db, node_region, elements)).items():
        if code == entry.resource_code:
            continue
        try:
            source = await catalog.get(code)
        except NotFound:  # withdrawn between the two reads: it claims nothing any more
            continue
        if not source.probe and source.status is ResourceStatus.ACTIVE:
            sources[element] = source
    province = Region(node_region).province_code
    rest = elements - set(sources)
    if rest and province != node_region:
        sources.update(await _region_sources(catalog, province, rest))
    links = []
    for item in entry.items:
        if item.authoritative_source or item.standard_element not in sources:
            continue
        source = sources[item.standard_element]
        if source.resource_code == entry.resource_code:
            continue
        link = _link(entry, item, source)
        if link is not None:
            links.append(link)
    return links


def sample_order(code: str, day: str) -> tuple[int, int]:
    """``a`` and ``b`` of the sample order ``(data_seq × a + b) mod p`` for one resource and
    day: 1 <= a < p, 0 <= b < p."""
    digest = hashlib.sha256(f"{code}\n{day}".encode()).digest()
    a = 1 + int.from_bytes(digest[:8], "big") % (_P - 1)
    b = int.from_bytes(digest[8:16], "big") % _P
    return a, b


def _filled(name: str) -> sa.ColumnElement[bool]:
    return sa.func.coalesce(RECORD.c.item_values[name].as_string(), "") != ""


async def _sample(
    db: Database, entry: ResourceEntry, link: Link, size: int, day: str
) -> list[dict[str, Any]]:
    """Up to ``size`` current records of ``entry`` with a value for the item and its key items
    (see the module for the order)."""
    a, b = sample_order(entry.resource_code, day)
    names = [link.item, *link.key_items.values()]
    statement = (
        sa.select(RECORD.c.item_values)
        .where(
            RECORD.c.resource_code == entry.resource_code,
            sa.not_(RECORD.c.deleted),
            *(_filled(n) for n in dict.fromkeys(names)),
        )
        .order_by((RECORD.c.data_seq * a + b) % _P, RECORD.c.record_key)
        .limit(size)
    )

    async def txn(session: AsyncSession) -> list[dict[str, Any]]:
        conn = await session.connection()
        return [dict(row[0]) for row in await conn.execute(statement)]

    return await db.read("quality.consistency_sample", txn)


def _unmeasured(link: Link, reason: str, compared: int = 0) -> ItemConsistency:
    return ItemConsistency(
        item=link.item,
        element=link.element,
        source_resource=link.source.resource_code,
        source_item=link.source_item,
        compared=compared,
        matched=0,
        mismatched=0,
        not_found=0,
        unmeasured=reason[:_REASON_CHARS],
    )


def _why(exc: BaseException) -> str:
    if isinstance(exc, Refusal):
        return f"{exc.code.name}: {exc.message}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {COMPARE_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}"


async def _measure_link(
    db: Database,
    records: Records,
    entry: ResourceEntry,
    link: Link,
    *,
    sample: int,
    day: str,
    local: bool,
    remote: SourceCompare | None,
) -> ItemConsistency:
    if link.unkeyable:
        return _unmeasured(link, link.unkeyable)
    if not local and remote is None:
        return _unmeasured(
            link,
            f"source {link.source.resource_code} is held by region {link.source.region}'s node, "
            "and this check was run without the federation",
        )
    rows = await _sample(db, entry, link, sample, day)
    own_keys = [i.name for i in entry.items if i.key]
    sent: list[tuple[str, Mapping[str, str], Mapping[str, str]]] = []
    mine: dict[str, dict[str, str]] = {}
    for n, values in enumerate(rows):
        ref = str(n)
        mine[ref] = {k: str(values.get(k, "")) for k in own_keys}
        key = {theirs: str(values[ours]) for theirs, ours in link.key_items.items()}
        sent.append((ref, key, {link.source_item: str(values[link.item])}))
    if not sent:
        return ItemConsistency(
            item=link.item,
            element=link.element,
            source_resource=link.source.resource_code,
            source_item=link.source_item,
            compared=0,
            matched=0,
            mismatched=0,
            not_found=0,
        )
    try:
        if local:
            outcomes = await asyncio.wait_for(records.compare(link.source, sent), COMPARE_SECONDS)
        else:
            assert remote is not None
            outcomes = await asyncio.wait_for(
                remote(link.source, entry.resource_code, sent, COMPARE_SECONDS),
                COMPARE_SECONDS + 1,
            )
    except (DomainError, Refusal, TimeoutError, OSError) as exc:
        return _unmeasured(link, f"compared with {link.source.resource_code}: {_why(exc)}")
    matched = mismatched = not_found = 0
    digests: list[str] = []
    for ref, outcome in outcomes:
        if not outcome.found:
            not_found += 1
            continue
        result = dict(outcome.matches).get(link.source_item)
        if result is MatchResult.MATCH:
            matched += 1
            continue
        mismatched += 1
        if len(digests) < MAX_MISMATCH_KEYS and ref in mine:
            digests.append(key_digest(mine[ref]).hex())
    return ItemConsistency(
        item=link.item,
        element=link.element,
        source_resource=link.source.resource_code,
        source_item=link.source_item,
        compared=len(sent),
        matched=matched,
        mismatched=mismatched,
        not_found=not_found,
        mismatch_keys=tuple(digests),
    )


async def measure_consistency(
    db: Database,
    catalog: Catalog,
    records: Records,
    entry: ResourceEntry,
    *,
    node_region: str,
    sample: int,
    day: str,
    remote: SourceCompare | None,
) -> tuple[ItemConsistency, ...]:
    """一致性 of every item of ``entry`` sourced elsewhere (see the module); ``day``: the China
    Standard Time day the sample is drawn for (YYYY-MM-DD)."""
    links = await links_of(db, catalog, entry, node_region)
    return tuple(
        [
            await _measure_link(
                db,
                records,
                entry,
                link,
                sample=sample,
                day=day,
                local=link.source.region == node_region,
                remote=remote,
            )
            for link in links
        ]
    )
