"""Publishing a resource's data to the open catalog (第二十九条), on a real database of each
backend: the published table is de-identified as the entry declares, k-anonymous over its
quasi-identifiers as an independent computation finds it, refused (with its report kept and no
row left) when too many rows would have to be left out or a direct identifier shows in clear,
and served only while its entry is the one it was made from."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence

import pytest
from sqlalchemy import text

from gateway.identity import Identity, Role
from node.catalog import (
    Catalog,
    DataItem,
    DataType,
    Generalization,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
)
from node.codes import make_citizen_id
from node.errors import FailedPrecondition, NotFound, PermissionDenied
from node.opendata import (
    NOT_APPROVED,
    OpenCatalog,
    OpenData,
    PublicationRefused,
    Publisher,
    open_data_gate,
)
from node.records import Records, SubmitBatch
from node.storage import Database
from tests.support.entries import NODE_REGION, TRUST_DOMAIN, agency, agency_code, make_entry

PROVIDER = agency_code(1)
BY = "spiffe://350100.fujian.gov.cn/authority"
PUBLISHER = Publisher(NODE_REGION, "福州市数据管理机构", "https://opendata.fujian.gov.cn")
MIN_K = 5


def treated(kind: OpenTreatmentKind, **fields: object) -> OpenTreatment:
    return OpenTreatment(kind=kind, **fields)


ITEMS = (
    DataItem(
        name="bh",
        title="编号",
        data_type=DataType.STRING,
        key=True,
        sensitivity_level=2,
        open=treated(OpenTreatmentKind.PSEUDONYMIZE),
    ),
    DataItem(
        name="csrq",
        title="出生日期",
        data_type=DataType.DATE,
        sensitivity_level=2,
        open=treated(OpenTreatmentKind.GENERALIZE, generalize=Generalization.YEAR),
        quasi_identifier=True,
    ),
    DataItem(
        name="qh",
        title="区划",
        data_type=DataType.STRING,
        sensitivity_level=1,
        open=treated(
            OpenTreatmentKind.GENERALIZE, generalize=Generalization.PREFIX, prefix_length=4
        ),
        quasi_identifier=True,
    ),
    DataItem(
        name="bz",
        title="备注",
        data_type=DataType.STRING,
        sensitivity_level=1,
        open=treated(OpenTreatmentKind.AS_STORED),
    ),
    DataItem(name="sfzhm", title="公民身份号码", data_type=DataType.STRING, sensitivity_level=3),
)


def open_entry(n: int = 40, **fields: object) -> ResourceEntry:
    return make_entry(
        n,
        provider=PROVIDER,
        name="人口抽样统计",
        items=ITEMS,
        open_type=OpenType.AUTHORIZED,  # its level-3 item allows no more (第三十七条)
        **fields,
    )


def person(i: int, year: int, district: str = "350102", note: str = "") -> dict[str, str]:
    return {
        "bh": f"P{i:05d}",
        "csrq": f"{year}-0{1 + i % 9}-1{i % 10}",
        "qh": district,
        "bz": note,
        "sfzhm": make_citizen_id(f"350102{year}0101{i % 1000:03d}"),
    }


async def setup(db: Database, rows: Sequence[dict[str, str]], entry: ResourceEntry) -> Catalog:
    catalog = Catalog(db, node_region=NODE_REGION)
    await catalog.register(agency(PROVIDER), entry)
    records = Records(db, NODE_REGION)
    for start in range(0, len(rows), 500):
        batch = SubmitBatch(batch_id=f"b{start}", records=tuple(rows[start : start + 500]))
        outcome = await records.submit(agency(PROVIDER), entry, batch)
        assert not outcome.rejections, outcome.rejections
    return catalog


def opendata(db: Database, catalog: Catalog, *, province: bool = True) -> OpenData:
    return OpenData(
        db,
        catalog,
        node_region=NODE_REGION,
        min_k=MIN_K,
        max_suppressed=0.05,
        may_open=open_data_gate(db, province=province),
    )


async def open_rows(db: Database, code: str, version: int = 0) -> list[dict[str, str]]:
    """The stored open rows of ``code`` (of every version if ``version`` is 0)."""
    async with db.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT data FROM open_row WHERE resource_code = :c AND (:v = 0 OR version = :v) "
                "ORDER BY version, row"
            ),
            {"c": code, "v": version},
        )
        return [json.loads(r[0]) for r in rows]


async def test_a_published_version_is_de_identified_and_k_anonymous_as_computed_apart(
    database: Database,
) -> None:
    # 200 people born in the 1980s in three districts, and 3 born in 1950: a class too small.
    rows = [person(i, 1980 + i % 10, ("350102", "350103", "350111")[i % 3]) for i in range(200)]
    rows += [person(900 + i, 1950) for i in range(3)]
    entry = open_entry()
    catalog = await setup(database, rows, entry)
    report = await opendata(database, catalog).publish(entry.resource_code, BY)

    # Independently: the classes over (birth year, district prefix) of what was stored.
    classes = Counter((r["csrq"][:4], r["qh"][:4]) for r in rows)
    small = {c for c, n in classes.items() if n < MIN_K}
    kept = [r for r in rows if (r["csrq"][:4], r["qh"][:4]) not in small]
    assert report.outcome == "published" and report.version == 1
    assert report.rows_read == len(rows)
    assert report.rows_suppressed == len(rows) - len(kept) == 3
    assert report.rows_published == len(kept)
    assert report.classes == len(classes) - len(small)
    assert report.k_reached == min(n for c, n in classes.items() if c not in small)
    assert report.quasi_identifiers == ("csrq", "qh")

    published = await open_rows(database, entry.resource_code)
    assert len(published) == len(kept)
    assert {tuple(sorted(r)) for r in published} == {("bh", "bz", "csrq", "qh")}  # no sfzhm
    assert Counter((r["csrq"], r["qh"]) for r in published) == Counter(
        (r["csrq"][:4], r["qh"][:4]) for r in kept
    )
    pseudonyms = {r["bh"] for r in published}
    assert len(pseudonyms) == len(kept)  # one per person ...
    assert not pseudonyms & {r["bh"] for r in rows}  # ... none of them the stored number
    assert await opendata(database, catalog).served(entry.resource_code) == 1

    # The next version pseudonymises under another key: nobody can be followed across.
    again = await opendata(database, catalog).publish(entry.resource_code, BY)
    assert again.version == 2
    assert not pseudonyms & {r["bh"] for r in await open_rows(database, entry.resource_code, 2)}


async def test_too_many_rare_classes_refuse_the_publication_naming_the_quasi_identifiers(
    database: Database,
) -> None:
    rows = [person(i, 1980 + i % 4) for i in range(100)]
    rows += [person(500 + i, 1900 + i) for i in range(10)]  # 10 of 110 rows alone in a class
    entry = open_entry()
    catalog = await setup(database, rows, entry)
    data = opendata(database, catalog)
    with pytest.raises(PublicationRefused) as refused:
        await data.publish(entry.resource_code, BY)
    message = refused.value.message
    assert "not 5-anonymous over its quasi-identifiers (csrq, qh)" in message
    assert "10 of 110 rows" in message and "generalise csrq, qh further" in message
    assert refused.value.report.outcome == "refused"
    assert await open_rows(database, entry.resource_code) == []  # nothing half-written
    with pytest.raises(NotFound, match="never published"):
        await data.served(entry.resource_code)
    kept = await data.report(entry.resource_code, 1)
    assert kept.outcome == "refused" and kept.rows_suppressed == 10


async def test_a_citizen_id_in_clear_is_never_published_whatever_the_entry_declares(
    database: Database,
) -> None:
    rows = [person(i, 1980 + i % 2) for i in range(40)]
    rows[7]["bz"] = f"联系人证件 {make_citizen_id('35010219850101123')}"
    entry = open_entry()
    catalog = await setup(database, rows, entry)
    with pytest.raises(PublicationRefused) as refused:
        await opendata(database, catalog).publish(entry.resource_code, BY)
    assert "bz" in refused.value.message and "公民身份号码" in refused.value.message
    assert await open_rows(database, entry.resource_code) == []


async def test_a_changed_entry_is_not_served_until_published_again(database: Database) -> None:
    rows = [person(i, 1980 + i % 2) for i in range(40)]
    entry = open_entry()
    catalog = await setup(database, rows, entry)
    data = opendata(database, catalog)
    await data.publish(entry.resource_code, BY)
    changed = entry.model_copy(update={"summary": "抽样统计（修订）"})
    await catalog.update(agency(PROVIDER), changed)
    with pytest.raises(NotFound, match="its catalog entry changed"):
        await data.served(entry.resource_code)
    [listed] = await data.datasets()
    assert listed.published and "publish it again" in listed.not_served
    assert (await data.publish(entry.resource_code, BY)).version == 2
    assert await data.served(entry.resource_code) == 2
    await data.unpublish(entry.resource_code, BY)
    with pytest.raises(NotFound, match="withdrawn"):
        await data.served(entry.resource_code)


async def test_what_may_not_open_is_refused_with_the_article(database: Database) -> None:
    closed = make_entry(41, provider=PROVIDER, open_type=OpenType.NOT_OPEN)
    catalog = await setup(database, [], closed)
    with pytest.raises(FailedPrecondition, match="不予开放"):
        await opendata(database, catalog).publish(closed.resource_code, BY)
    entry = open_entry(42)
    await catalog.register(agency(PROVIDER), entry)
    with pytest.raises(FailedPrecondition) as city:
        await opendata(database, catalog, province=False).publish(entry.resource_code, BY)
    assert city.value.message == NOT_APPROVED and "第三十一条" in NOT_APPROVED


async def test_a_served_dataset_is_published_again_on_its_update_cycle_once_its_data_changed(
    database: Database,
) -> None:
    rows = [person(i, 1980 + i % 2) for i in range(40)]
    entry = open_entry(43)  # updated daily
    catalog = await setup(database, rows, entry)
    data = opendata(database, catalog)
    start = dt.datetime.now(dt.UTC)
    await data.publish(entry.resource_code, BY, now=start)
    assert await data.due(start + dt.timedelta(days=2)) == []  # nothing new to publish
    more = SubmitBatch(batch_id="more", records=tuple(person(100 + i, 1981) for i in range(5)))
    await Records(database, NODE_REGION).submit(agency(PROVIDER), entry, more)
    assert await data.due(start + dt.timedelta(hours=12)) == []  # not a day yet
    later = start + dt.timedelta(days=1, minutes=1)
    assert await data.due(later) == [entry.resource_code]
    [again] = await data.republish_due(BY, now=later)
    assert (again.version, again.rows_published) == (2, 45)
    assert await data.due(later + dt.timedelta(days=2)) == []


async def test_before_its_approval_a_city_opens_only_a_testers_probe_data(
    database: Database,
) -> None:
    """Trial mode (第三十一条): the conformance tests of an open-data sub-platform need data to
    open before the province approves the city; only testers' probe resources qualify."""
    tester = Identity(NODE_REGION, TRUST_DOMAIN, Role.TESTER, "lab-1")
    probe = open_entry(44, probe=True)
    catalog = Catalog(database, node_region=NODE_REGION)
    await catalog.register(tester, probe)
    batch = SubmitBatch(batch_id="p", records=tuple(person(i, 1980 + i % 2) for i in range(20)))
    await Records(database, NODE_REGION).submit(tester, probe, batch)
    real = open_entry(45)
    await catalog.register(agency(PROVIDER), real)
    city = opendata(database, catalog, province=False)
    assert (await city.publish(probe.resource_code, tester.uri, tester=True)).version == 1
    with pytest.raises(PermissionDenied, match="only its probe resources"):
        await city.publish(real.resource_code, tester.uri, tester=True)
    with pytest.raises(FailedPrecondition, match="not approved as an open-data sub-platform"):
        await city.publish(real.resource_code, BY)
    assert await city.served(probe.resource_code) == 1
    served, _ = await OpenCatalog(
        database, city, open_data_gate(database, province=False), PUBLISHER
    ).search()
    assert [s.entry.resource_code for s in served] == [probe.resource_code]
