"""Quality reports across the federation (第十五条), on SQLite and PostgreSQL: a city's report is
read at the city by the city's provider, the city's authority and the province's authority;
another city's authority is refused; the province does not answer for a city's resource."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from node.app import quality_of
from node.catalog import Catalog
from tests.quality.test_quality_service import get_report
from tests.support.access import ACME, ITEMS, refused, submit
from tests.support.databases import NewDatabaseUrl
from tests.support.nodes import FUZHOU, entry_of, federation

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_a_city_report_is_read_by_the_city_and_the_province_authorities(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        city = fed.fuzhou
        entry = entry_of(FUZHOU, 7, items=ITEMS)
        await city.register(entry)
        code = entry.resource_code
        await submit(city.running, city.agency(), code, [ACME])
        node = city.running
        quality = quality_of(city.setup.config, node.db, Catalog(node.db, node_region=FUZHOU))
        checked = await quality.check(code, "operator")

        readers = [city.agency(), city.setup.authority(), fed.province.setup.authority()]
        for files in readers:
            report = await get_report(node, files, code)
            assert (report.resource_code, report.records) == (code, checked.records)

        err = await refused(get_report(node, fed.xiamen.setup.authority(), code))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "spiffe://350200.fujian.gov.cn/authority is none of them" in (err.details() or "")

        # The province holds the catalog entry, not the records: ask the city.
        await fed.converged(1)
        err = await refused(get_report(fed.province.running, fed.province.setup.authority(), code))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == (
            f"resource {code} belongs to region 350100: its records and their quality are at "
            "that region's node, not at 350000"
        )
