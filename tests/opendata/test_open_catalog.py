"""The open catalog the public sees (node.opendata._catalog), on each backend: only served
datasets, by code, their entries restricted to the opened items; a text query reads a bounded
number of datasets per call and says where to go on; a dataset that stopped being served is
refused with the reason OpenData gives."""

from __future__ import annotations

import pytest

from node.catalog import Catalog, OpenType
from node.errors import InvalidArgument, NotFound
from node.opendata import OpenCatalog, OpenData, Publisher, open_data_gate
from node.opendata import _catalog as catalog_module
from node.storage import Database
from tests.opendata.test_publish import BY, PROVIDER, open_entry, opendata, person, setup
from tests.support.entries import NODE_REGION, agency

PUBLISHER = Publisher(region=NODE_REGION, name="福州市数据管理机构", base_url="https://o.fz.cn")
SUMMARIES = ("道路名录", "公交线路", "人口抽样", "道路养护", "学校名录")


async def published(db: Database) -> tuple[Catalog, OpenData, OpenCatalog]:
    rows = [person(i, 1980) for i in range(10)]
    for n, summary in enumerate(SUMMARIES, start=41):
        catalog = await setup(db, rows, open_entry(n, summary=summary))
    data = opendata(db, catalog)
    for n in range(41, 41 + len(SUMMARIES)):
        await data.publish(open_entry(n).resource_code, BY)
    return catalog, data, OpenCatalog(db, data, open_data_gate(db, province=True), PUBLISHER)


async def test_a_query_reads_a_bounded_number_of_datasets_per_call(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, data, public = await published(database)
    codes = [open_entry(n).resource_code for n in range(41, 46)]
    found, after = await public.search()
    assert [s.entry.resource_code for s in found] == codes and after == ""
    served = found[0]
    assert served.columns == ("bh", "csrq", "qh", "bz")  # sfzhm (level 3) never opens
    assert served.dataset_iri == f"https://o.fz.cn/dataset/{codes[0]}"
    assert served.rows == 10 and served.version == 1
    assert PROVIDER in served.source and "福州市数据管理机构" in served.source

    monkeypatch.setattr(catalog_module, "SCAN_LIMIT", 2)
    monkeypatch.setattr(catalog_module, "_BATCH", 1)
    pages, after, seen = [], "", 0
    while True:
        found, after = await public.search(after=after, limit=1, query="名录")
        pages.append([s.entry.summary for s in found])
        seen += 1
        if not after or seen > 10:
            break
    # 道路名录 | (公交线路, 人口抽样: read, no match) | 道路养护 | 学校名录
    assert pages == [["道路名录"], [], ["学校名录"]]

    with pytest.raises(InvalidArgument, match="query: is 101 characters, at most 100"):
        await public.search(query="名" * 101)

    # An entry changed since its publication is no longer listed, and its download says why.
    entry = await catalog.current(codes[1])
    await catalog.update(agency(PROVIDER), entry.model_copy(update={"summary": "改"}))
    found, _ = await public.search()
    assert codes[1] not in [s.entry.resource_code for s in found]
    with pytest.raises(NotFound, match="its catalog entry changed"):
        await public.get(codes[1])
    await data.unpublish(codes[2], BY)
    with pytest.raises(NotFound, match="its publication was withdrawn"):
        await public.get(codes[2])
    assert (await public.get(codes[0])).entry.open_type is OpenType.AUTHORIZED
