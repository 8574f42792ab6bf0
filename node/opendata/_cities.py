"""The open datasets of the province's approved city sub-platforms (第三十一条), as the
province's portal lists them beside the province's own.

Only the province and the cities it approved as sub-platforms (`govnode federation approve`)
open data; the province's portal lists both. The province does not copy a city's data: it
asks each approved city for its open catalog (its served datasets, as the city's
ListOpenResources has them) and keeps the answer here, in process memory, which may cache and
never owns (the city's database does). Downloads and row queries of a city's dataset are
forwarded to the city (node.servicers.open_catalog), which serves and signs them itself.

The cache, per approved city:

- refreshed when a listing finds it older than ``refresh_s`` (``[opendata]
  city_catalog_seconds``), one fetch per city at a time, in the background: a listing waits
  at most ``wait_s`` for a city it has never listed (the first listing after a start), and
  never for one it has (that one is served from the cache while it refreshes);
- a city that does not answer keeps its last listing for ``keep_s`` after it last answered,
  then drops out of the listing until it answers again; a failed fetch is tried again after
  :data:`RETRY_S` at the soonest (or ``refresh_s``, if shorter);
- bounded: at most :data:`MAX_CITY_DATASETS` datasets and :data:`MAX_CITY_BYTES` bytes of a
  city (the fetch stops there), and only the approved cities (at most
  node.federation.MAX_APPROVED);
- a dataset whose code or entry names another region than the city that listed it is
  dropped: a city lists only its own data.

Domain: no grpc; the fetch (a gRPC call) is given in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog

from node.catalog import OpenType

log = structlog.get_logger("govnode.opendata")

#: Datasets of one city the province keeps at most.
MAX_CITY_DATASETS = 5000
#: Bytes of one city's listing (its OpenResource messages) the province keeps at most.
MAX_CITY_BYTES = 16 * 1024 * 1024
#: A city whose fetch failed is asked again after this many seconds at the soonest.
RETRY_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class CityDataset:
    """One served dataset of a city, as the city listed it."""

    code: str
    region: str
    open_type: OpenType | None
    name: str
    summary: str
    provider_name: str
    #: The city's OpenResource message for it, serialized: passed on unchanged.
    payload: bytes

    def matches(self, *, after: str, open_type: OpenType | None, region: str, needle: str) -> bool:
        """Whether a listing with these filters (``needle``: the query, casefolded) shows it."""
        if self.code <= after or (region and self.region != region):
            return False
        if open_type is not None and self.open_type is not open_type:
            return False
        return not needle or text_matches(needle, self.name, self.summary, self.provider_name)


def text_matches(needle: str, *texts: str) -> bool:
    """A listing's text query: a substring of any of ``texts``, ASCII letters in either case."""
    return any(needle in text.casefold() for text in texts)


def own_datasets(region: str, datasets: Iterable[CityDataset]) -> tuple[list[CityDataset], int]:
    """The datasets of ``datasets`` that ``region``'s node may list (its own region's), by
    code, within the bounds; and how many were dropped for naming another region."""
    kept: list[CityDataset] = []
    dropped = spent = 0
    for dataset in datasets:
        if dataset.region != region or not dataset.code.startswith(f"{region}-"):
            dropped += 1
            continue
        spent += len(dataset.payload)
        if len(kept) >= MAX_CITY_DATASETS or spent > MAX_CITY_BYTES:
            break
        kept.append(dataset)
    kept.sort(key=lambda d: d.code)
    unique = [d for i, d in enumerate(kept) if i == 0 or kept[i - 1].code != d.code]
    return unique, dropped


#: Reads a city's open catalog: its served datasets (raises when the city does not answer).
Fetch = Callable[[str], Awaitable[list[CityDataset]]]
#: The cities approved as sub-platforms now (node.federation.approved_cities).
Approved = Callable[[], Awaitable[list[str]]]


@dataclass
class _City:
    datasets: list[CityDataset] | None = None
    #: When the city last answered, and when it was last asked (time.monotonic()).
    answered_at: float = 0.0
    asked_at: float = float("-inf")
    failures: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = None


class CityCatalogs:
    """The province's cache of its approved cities' open catalogs (see the module)."""

    def __init__(
        self,
        approved: Approved,
        fetch: Fetch,
        *,
        refresh_s: float,
        keep_s: float,
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._approved = approved
        self._fetch = fetch
        self.refresh_s = refresh_s
        self.keep_s = max(keep_s, refresh_s)
        self.wait_s = wait_s
        self._clock = clock
        self._cities: dict[str, _City] = {}

    async def approved(self) -> list[str]:
        return await self._approved()

    async def datasets(self, remaining: float | None = None) -> list[CityDataset]:
        """Every approved city's served datasets as last listed (within ``keep_s``), by code.
        Waits at most ``wait_s`` (and ``remaining``, the caller's time left) for a city never
        listed yet; refreshes the others in the background."""
        regions = await self._approved()
        for gone in set(self._cities) - set(regions):
            city = self._cities.pop(gone)
            if city.task is not None:
                city.task.cancel()
        now = self._clock()
        first: list[asyncio.Task[None]] = []
        for region in regions:
            city = self._cities.setdefault(region, _City())
            due = now - city.answered_at >= self.refresh_s or city.datasets is None
            retry = min(RETRY_S, self.refresh_s) if city.failures else 0.0
            if due and city.task is None and now - city.asked_at >= retry:
                city.asked_at = now
                city.task = asyncio.create_task(self._refresh(region, city))
            if city.datasets is None and city.task is not None:
                first.append(city.task)
        wait = self.wait_s if remaining is None else min(self.wait_s, max(remaining - 0.5, 0.0))
        if first and wait > 0:
            # asyncio.wait neither cancels the fetches nor raises their errors: a city that is
            # slow is listed once it answers, by a later listing.
            await asyncio.wait(first, timeout=wait)
        now = self._clock()
        found: list[CityDataset] = []
        for region in regions:
            city = self._cities[region]
            if city.datasets is not None and now - city.answered_at <= self.keep_s:
                found.extend(city.datasets)
        found.sort(key=lambda d: d.code)
        return found

    async def _refresh(self, region: str, city: _City) -> None:
        try:
            datasets, dropped = own_datasets(region, await self._fetch(region))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the city did not answer, or answered nonsense
            city.failures += 1
            city.last_error = str(exc)[:300]
            log.warning(
                "city_open_catalog_unavailable",
                region=region,
                failures=city.failures,
                error=city.last_error,
                listed_until_s=round(max(city.answered_at + self.keep_s - self._clock(), 0), 1)
                if city.datasets is not None
                else 0,
            )
        else:
            if dropped:
                log.warning("city_open_catalog_foreign_datasets", region=region, dropped=dropped)
            city.datasets = datasets
            city.answered_at = self._clock()
            city.failures = 0
            city.last_error = ""
        finally:
            city.task = None

    async def close(self) -> None:
        tasks = [c.task for c in self._cities.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def merge_page(
    own: Sequence[T],
    own_next: str,
    others: Sequence[CityDataset],
    size: int,
    code_of: Callable[[T], str],
) -> tuple[list[T | CityDataset], str]:
    """One page of a listing over the node's own datasets and its cities', by resource code:
    ``own`` is the node's own page (after the same cursor, matching the same filters) and
    ``own_next`` the code it continues after ("" when it has no more); ``others`` the cities'
    datasets after the cursor that match, by code. Returns the page and the code the next one
    continues after ("" when there is none). The cities' datasets past ``own_next`` wait for
    the page that reads the node's own beyond it, so no dataset is skipped or listed twice."""
    cities = [d for d in others if not own_next or d.code <= own_next]
    merged: list[T | CityDataset] = sorted(
        [*own, *cities],
        key=lambda x: x.code if isinstance(x, CityDataset) else code_of(x),
    )
    if len(merged) > size:
        page = merged[:size]
        last = page[-1]
        return page, last.code if isinstance(last, CityDataset) else code_of(last)
    if own_next:
        return merged, own_next
    return merged, ""
