"""The open catalog as the public sees it (政务数据开放目录, 第二十九条): the datasets served now,
each with its entry restricted to the opened items, its source and its acquisition date
(第三十五条), listed with filters and a text query, or looked up one by one for a download.

A dataset is served while its publication stands, this node may open data and its catalog
entry is still the version the data was made from (node.opendata._publish). Here that rule is
one join over ``open_dataset``, ``open_version`` and ``catalog_entry``, so a listing reads a
page of served datasets in one statement on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func
from sqlalchemy import select as sa_select
from sqlmodel.ext.asyncio.session import AsyncSession

from node.catalog import OpenType, ResourceEntry, ResourceStatus, entry_from_json
from node.errors import InvalidArgument, NotFound
from node.models import CatalogEntryRow, OpenDatasetRow, OpenVersionRow
from node.opendata._deid import opened_items
from node.opendata._publish import OPEN_TYPES, MayOpen, OpenData
from node.storage import Database

#: Characters of a text query: enough for any name, short enough that matching stays cheap.
MAX_QUERY = 100
#: Served datasets one listing call reads at most, however few of them match its query.
SCAN_LIMIT = 1000
_BATCH = 100
#: The download formats every dataset is offered in (node.opendata._download).
FORMATS = ("csv", "jsonl")

_d = OpenDatasetRow.__table__  # type: ignore[attr-defined]
_v = OpenVersionRow.__table__  # type: ignore[attr-defined]
_e = CatalogEntryRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Publisher:
    """The data management authority that opens this node's data (数据管理机构)."""

    region: str
    name: str
    #: ``[opendata] base_url``: dataset IRIs are ``<base_url>/dataset/<resource code>``.
    base_url: str

    def dataset_iri(self, code: str) -> str:
        return f"{self.base_url}/dataset/{code}"


@dataclass(frozen=True)
class Served:
    """A dataset served now: the version and what the public sees of its entry."""

    #: The entry the version was made from, its items restricted to the opened ones.
    entry: ResourceEntry
    version: int
    #: When the version was made from the provider's records (获取日期, 第三十五条).
    made_at: dt.datetime
    rows: int
    dataset_iri: str
    #: 数据来源 (第三十五条), one line: provider, resource, publishing authority.
    source: str
    #: The authority that published it when not this node's: an approved city's dataset in
    #: the province's catalog (node.opendata._cities).
    publisher: Publisher | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The opened items' names, in catalog order: a file's columns."""
        return tuple(item.name for item in self.entry.items)


def query_problem(query: str) -> str | None:
    if len(query) > MAX_QUERY:
        return f"is {len(query)} characters, at most {MAX_QUERY}"
    if not query.isprintable():
        return "holds control characters or line breaks"
    return None


class OpenCatalog:
    """What this node serves of its open data, for the public (through its portal) and any
    authenticated caller."""

    def __init__(
        self, db: Database, opendata: OpenData, may_open: MayOpen, publisher: Publisher
    ) -> None:
        self._db = db
        self._opendata = opendata
        self._may_open = may_open
        self.publisher = publisher

    async def get(self, code: str) -> Served:
        """The dataset ``code`` as served now; NotFound saying why when it is not served."""
        found = await self._read([_d.c.resource_code == code], limit=1)
        if found:
            served = self._served(found[0])
            # Before its approval a city serves only testers' probe data (trial mode, 第三十一条).
            if served.entry.probe or await self._may_open() is None:
                return served
        await self._opendata.served(code)  # raises NotFound naming why
        raise NotFound(f"resource {code} is not in the open catalog: it was just changed")

    async def search(
        self,
        *,
        after: str = "",
        limit: int = 50,
        open_type: OpenType | None = None,
        region: str = "",
        query: str = "",
    ) -> tuple[list[Served], str]:
        """Up to ``limit`` served datasets after resource code ``after``, by code, matching the
        filters, and the code the next page continues after ("" when there is none). At most
        :data:`SCAN_LIMIT` served datasets are read per call: with a query that matches few of
        them, a page may be short (even empty) and still have a next page."""
        problem = query_problem(query)
        if problem is not None:
            raise InvalidArgument(f"query: {problem}")
        # Before its approval a city lists only testers' probe data (trial mode, 第三十一条).
        probes_only = await self._may_open() is not None
        where: list[ColumnElement[bool]] = []
        if open_type is not None:
            where.append(_e.c.open_type == open_type.value)
        if region:
            where.append(_e.c.region == region)
        needle = query.strip().casefold()
        found: list[Served] = []
        scanned = 0
        while True:
            # In batches, so that the entries held at once stay few however large they are.
            picky = needle or probes_only
            batch = limit + 1 - len(found) if not picky else min(_BATCH, SCAN_LIMIT - scanned)
            rows = await self._read([_d.c.resource_code > after, *where], limit=batch)
            for row in rows:
                served = self._served(row)
                if needle and not _matches(served.entry, needle):
                    continue
                if probes_only and not served.entry.probe:
                    continue
                found.append(served)
                if len(found) > limit:
                    return found[:limit], found[limit - 1].entry.resource_code
            scanned += len(rows)
            if len(rows) < batch:
                return found, ""
            after = str(rows[-1][0])
            if scanned >= SCAN_LIMIT:
                return found, after

    async def page(self, offset: int, limit: int) -> tuple[list[Served], int]:
        """Up to ``limit`` served datasets from the ``offset``-th on (from 0), by resource code,
        and how many are served in all: a page of the catalog for harvesters (node.opendata.
        _dcat). Past the last, none."""
        if await self._may_open() is not None:
            # Trial mode (第三十一条): only testers' probes, which only the entry says; few.
            probes: list[Served] = []
            after = ""
            while rows := await self._read([_d.c.resource_code > after], limit=_BATCH):
                probes += [s for s in map(self._served, rows) if s.entry.probe]
                after = str(rows[-1][0])
            return probes[offset : offset + limit], len(probes)

        async def count(session: AsyncSession) -> int:
            statement = self._served_rows(sa_select(func.count()), [])
            return int((await (await session.connection()).execute(statement)).scalar_one())

        total = await self._db.read("opendata.open_catalog_count", count)
        if offset >= total:
            return [], total
        rows = await self._read([], limit=limit, offset=offset)
        return [self._served(row) for row in rows], total

    @staticmethod
    def _served_rows(statement: Select[Any], where: Sequence[ColumnElement[bool]]) -> Select[Any]:
        """``statement`` over the served datasets (one join, see the module docs)."""
        return statement.select_from(
            _d.join(
                _v, and_(_v.c.resource_code == _d.c.resource_code, _v.c.version == _d.c.version)
            ).join(_e, _e.c.resource_code == _d.c.resource_code)
        ).where(
            _d.c.published.is_(True),
            _v.c.state == "published",
            _e.c.status == ResourceStatus.ACTIVE.value,
            _e.c.open_type.in_([t.value for t in OPEN_TYPES]),
            _e.c.version == _v.c.entry_version,
            *where,
        )

    async def _read(
        self, where: Sequence[ColumnElement[bool]], *, limit: int, offset: int = 0
    ) -> list[Any]:
        statement = (
            self._served_rows(
                sa_select(_d.c.resource_code, _v.c.version, _v.c.made_at, _v.c.rows, _e.c.body),
                where,
            )
            .order_by(_d.c.resource_code)
            .limit(limit)
            .offset(offset)
        )

        async def txn(session: AsyncSession) -> list[Any]:
            return list((await (await session.connection()).execute(statement)).all())

        return await self._db.read("opendata.open_catalog", txn)

    def _served(self, row: Any) -> Served:
        code, version, made_at, rows, body = row
        entry = entry_from_json(body)
        entry = entry.model_copy(update={"items": opened_items(entry.items)})
        publisher = self.publisher
        return Served(
            entry=entry,
            version=int(version),
            made_at=made_at if made_at.tzinfo else made_at.replace(tzinfo=dt.UTC),
            rows=int(rows),
            dataset_iri=publisher.dataset_iri(code),
            source=(
                f"来源：{entry.provider_name}（统一社会信用代码 {entry.provider_code}），"
                f"数据资源：{entry.name}（{code}），开放单位：{publisher.name}"
                f"（{publisher.region}）"
            ),
        )


def _matches(entry: ResourceEntry, needle: str) -> bool:
    return any(
        needle in text.casefold() for text in (entry.name, entry.summary, entry.provider_name)
    )
