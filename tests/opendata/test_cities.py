"""The province's cache of its approved cities' open catalogs (node.opendata._cities): a page
over its own datasets and its cities' in code order, never skipping or repeating one; a city
listed only with its own region's datasets, within the bounds; refreshed in the background,
waited for only the first time and only briefly; kept for a while when the city is silent,
then dropped; dropped at once when no longer approved."""

from __future__ import annotations

import asyncio

import pytest

from node.catalog import OpenType
from node.opendata import MAX_CITY_DATASETS, CityCatalogs, CityDataset, merge_page
from node.opendata._cities import own_datasets


def city(code: str, name: str = "数据", open_type: OpenType = OpenType.UNIVERSAL) -> CityDataset:
    return CityDataset(
        code=code,
        region=code[:6],
        open_type=open_type,
        name=name,
        summary="",
        provider_name="",
        payload=code.encode(),
    )


def own_page(codes: list[str], after: str, size: int) -> tuple[list[str], str]:
    """What OpenCatalog.search returns for the node's own codes (no query)."""
    rest = [c for c in codes if c > after]
    return (rest[:size], rest[size - 1]) if len(rest) > size else (rest, "")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 50])
def test_paging_over_the_merged_list_lists_each_dataset_once_in_code_order(size: int) -> None:
    own = ["350000-1-000001", "350000-1-000005", "350000-3-000002"]
    others = [city("350100-1-000001"), city("350100-3-000009"), city("350200-1-000001")]
    seen: list[str] = []
    after = ""
    for _ in range(20):
        mine, mine_next = own_page(own, after, size)
        page, after = merge_page(
            mine, mine_next, [d for d in others if d.code > after], size, lambda c: c
        )
        assert len(page) <= size
        seen += [p.code if isinstance(p, CityDataset) else p for p in page]
        if not after:
            break
    assert seen == sorted(own + [d.code for d in others])


def test_a_short_own_page_holds_back_the_cities_past_where_it_stopped() -> None:
    # The node's own read stopped at 350000-3-000002 (its scan limit, with a query): the
    # cities' datasets past it wait for the next page, which reads the node's own beyond it.
    none: list[str] = []
    page, after = merge_page(none, "350000-3-000002", [city("350100-1-000001")], 50, str)
    assert (page, after) == ([], "350000-3-000002")


def test_a_city_lists_only_its_own_regions_datasets_within_the_bounds() -> None:
    listed = [city("350100-1-000002"), city("350200-1-000001"), city("350100-1-000001")]
    forged = CityDataset("350100-1-000003", "350200", None, "", "", "", b"")
    kept, dropped = own_datasets("350100", [*listed, forged])
    assert [d.code for d in kept] == ["350100-1-000001", "350100-1-000002"] and dropped == 2
    many = [city(f"350100-1-{n:06d}") for n in range(MAX_CITY_DATASETS + 10)]
    assert len(own_datasets("350100", many)[0]) == MAX_CITY_DATASETS


def test_a_listing_matches_its_filters() -> None:
    road = city("350100-1-000002", name="道路名录", open_type=OpenType.AUTHORIZED)
    assert road.matches(after="", open_type=None, region="", needle="道路")
    assert not road.matches(after="350100-1-000002", open_type=None, region="", needle="")
    assert not road.matches(after="", open_type=OpenType.UNIVERSAL, region="", needle="")
    assert not road.matches(after="", open_type=None, region="350200", needle="")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_cache_refreshes_keeps_a_silent_city_for_a_while_then_drops_it() -> None:
    clock = Clock()
    approved = ["350100"]
    answers: list[list[CityDataset] | Exception] = []
    asked: list[str] = []

    async def fetch(region: str) -> list[CityDataset]:
        asked.append(region)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def approvals() -> list[str]:
        return list(approved)

    cache = CityCatalogs(approvals, fetch, refresh_s=300, keep_s=1800, wait_s=1.0, clock=clock)
    answers.append([city("350100-1-000001")])
    assert [d.code for d in await cache.datasets()] == ["350100-1-000001"]  # waited for it
    assert await cache.datasets() and asked == ["350100"]  # fresh: not asked again

    # Past refresh_s it is asked again, in the background: this listing has the old one.
    clock.now += 301
    answers.append(ConnectionError("city down"))
    assert [d.code for d in await cache.datasets()] == ["350100-1-000001"]
    await asyncio.sleep(0)
    assert asked == ["350100", "350100"]
    # A failed fetch is tried again after RETRY_S, not on every listing.
    assert await cache.datasets() and len(asked) == 2

    # Silent past keep_s after its last answer: dropped.
    clock.now += 1800
    answers.append(ConnectionError("still down"))
    assert await cache.datasets() == []
    await asyncio.sleep(0)

    # No longer approved: gone at once, never asked.
    approved.clear()
    assert await cache.datasets() == [] and len(asked) == 3
    await cache.close()


async def test_a_slow_city_holds_the_first_listing_only_for_wait_s() -> None:
    release = asyncio.Event()

    async def fetch(region: str) -> list[CityDataset]:
        await release.wait()
        return [city(f"{region}-1-000001")]

    async def approvals() -> list[str]:
        return ["350100"]

    cache = CityCatalogs(approvals, fetch, refresh_s=300, keep_s=1800, wait_s=0.2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await cache.datasets() == []
    assert loop.time() - began < 1.0
    release.set()
    await asyncio.sleep(0.05)
    assert [d.code for d in await cache.datasets()] == ["350100-1-000001"]
    await cache.close()
