"""一致性 against the authoritative source (一数一源), on SQLite and PostgreSQL: a resource
holding a standard data element another resource sources is sampled and checked against the
source by key. In process for a source at the same node (every figure recounted here from the
rows of both resources), and over real nodes for a source at the province: the city's authority
samples through the federation without a grant, an agency cannot use that exception, and a
source node that is down leaves the indicator unmeasured with the reason while the rest of the
check is done."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from govnode.v1 import sharing_pb2
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from node.audit import AuditLog, AuditRecord
from node.catalog import Catalog, ShareMethod, ShareType
from node.quality import (
    MAX_MISMATCH_KEYS,
    Dimension,
    Level,
    Quality,
    QualitySettings,
    report_from_json,
    report_to_json,
)
from node.records import Records, SubmitBatch
from node.storage import Database
from tests.quality.test_quality_service import get_report, indicators
from tests.support.access import M, access, apply_request, approve, refused, sharing, submit
from tests.support.cli import cli
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import NODE_REGION, agency, agency_code, item, make_entry
from tests.support.nodes import FUZHOU, PROVINCE, entry_of, federation

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SOURCE_PROVIDER = agency_code(7)  # 公安: the source of 姓名 by 身份号码
HOLDER = agency_code(8)  # 民政: holds names of its own clients
T0 = dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)
RECORD = SQLModel.metadata.tables["record"]

SOURCE = make_entry(
    21,
    SOURCE_PROVIDER,
    name="人口基础信息",
    items=(
        item("sfzhm", key=True, required=True, standard_element="DE.GMSFHM"),
        item("xm", standard_element="DE.XM", authoritative_source=True),
        item("zz", standard_element="DE.ZZ", authoritative_source=True),
    ),
    share_type=ShareType.CONDITIONAL,
    share_methods=(ShareMethod.COMPARE,),
)
HOLDER_ENTRY = make_entry(
    22,
    HOLDER,
    name="低保对象",
    items=(
        item("dbbh", key=True, required=True),
        item("gmsfhm", standard_element="DE.GMSFHM"),
        item("xingming", standard_element="DE.XM"),
        item("zhuzhi", standard_element="DE.ZZ"),
        item("bz"),
    ),
)


def person_id(i: int) -> str:
    return f"P{i:05d}"


def source_rows() -> list[dict[str, str]]:
    return [{"sfzhm": person_id(i), "xm": f"张{i}", "zz": f"福州路{i}号"} for i in range(12)]


def holder_rows() -> list[dict[str, str]]:
    """Twelve records: names as the source has them (0-5), other names (6-7), people the source
    does not know (8-9), one without a name (10), one without an id (11)."""
    rows = []
    for i in range(12):
        row = {"dbbh": f"DB{i:03d}", "gmsfhm": person_id(i), "bz": "x"}
        if i < 6:
            row["xingming"] = f"张{i}"
        elif i < 8:
            row["xingming"] = f"李{i}"
        elif i < 10:
            row["gmsfhm"] = person_id(100 + i)
            row["xingming"] = f"王{i}"
        elif i == 11:
            del row["gmsfhm"]
            row["xingming"] = "赵11"
        row["zhuzhi"] = f"福州路{i}号"
        rows.append(row)
    return rows


def digest(key: dict[str, str]) -> str:
    """A key's digest, written out here as the report documents it (BLAKE2b-96 of the sorted
    items' JSON)."""
    text = json.dumps(sorted(key.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


async def load(database: Database) -> tuple[Catalog, Records]:
    catalog = Catalog(database, NODE_REGION, clock=lambda: T0)
    await catalog.register(agency(SOURCE_PROVIDER), SOURCE)
    await catalog.register(agency(HOLDER), HOLDER_ENTRY)
    records = Records(database, NODE_REGION, clock=lambda: T0)
    await records.submit(agency(SOURCE_PROVIDER), SOURCE, SubmitBatch("s1", tuple(source_rows())))
    await records.submit(agency(HOLDER), HOLDER_ENTRY, SubmitBatch("h1", tuple(holder_rows())))
    return catalog, records


def quality(database: Database, catalog: Catalog, **fields: Any) -> Quality:
    return Quality(
        database,
        catalog,
        node_region=NODE_REGION,
        settings=QualitySettings(**fields),
        clock=lambda: T0 + dt.timedelta(days=1),
    )


async def stored(database: Database, code: str) -> list[dict[str, str]]:
    async def txn(session: AsyncSession) -> list[dict[str, str]]:
        conn = await session.connection()
        rows = await conn.execute(
            sa.select(RECORD.c.item_values).where(RECORD.c.resource_code == code)
        )
        return [dict(r[0]) for r in rows]

    return await database.read("test.stored", txn)


async def test_a_local_source_agrees_disagrees_and_misses_keys(database: Database) -> None:
    catalog, _ = await load(database)
    report = await quality(database, catalog).check(HOLDER_ENTRY.resource_code, "operator")

    # Recounted from the stored rows of both resources.
    source = {r["sfzhm"]: r for r in await stored(database, SOURCE.resource_code)}
    held = await stored(database, HOLDER_ENTRY.resource_code)
    expected: dict[str, dict[str, Any]] = {}
    for mine, theirs in (("xingming", "xm"), ("zhuzhi", "zz")):
        sample = [r for r in held if r.get(mine) and r.get("gmsfhm")]
        found = [r for r in sample if r["gmsfhm"] in source]
        agree = [r for r in found if source[r["gmsfhm"]].get(theirs) == r[mine]]
        expected[mine] = {
            "compared": len(sample),
            "matched": len(agree),
            "mismatched": len(found) - len(agree),
            "not_found": len(sample) - len(found),
            "keys": sorted(digest({"dbbh": r["dbbh"]}) for r in found if r not in agree),
        }
    assert expected["xingming"]["matched"] == 6  # the story above, as a sanity check
    assert expected["xingming"]["mismatched"] == 2
    assert expected["xingming"]["not_found"] == 2

    by_item = {c.item: c for c in report.consistency}
    assert set(by_item) == {"xingming", "zhuzhi"}
    for name, want in expected.items():
        got = by_item[name]
        assert (got.source_resource, got.unmeasured) == (SOURCE.resource_code, "")
        assert (got.compared, got.matched, got.mismatched, got.not_found) == (
            want["compared"],
            want["matched"],
            want["mismatched"],
            want["not_found"],
        )
        assert sorted(got.mismatch_keys) == want["keys"]
    assert by_item["xingming"].source_item == "xm"

    dim = report.dimension(Dimension.CONSISTENCY)
    (indicator,) = dim.indicators
    assert indicator.code == "040100"
    matched = sum(w["matched"] for w in expected.values())
    found = matched + sum(w["mismatched"] for w in expected.values())
    assert (indicator.numerator, indicator.denominator) == (matched, found)
    assert dim.score == round(100 * matched / found, 2)
    # The overall score is the mean of the measured dimensions, this one among them.
    measured = [d.score for d in report.dimensions if d.score is not None]
    assert dim.score in measured
    assert report.overall == pytest.approx(sum(measured) / len(measured), abs=0.01)

    # No value is kept in the report, only counts and digests.
    text = report_to_json(report)
    assert "李6" not in text and "张0" not in text
    assert report_from_json(text) == report


async def test_the_sample_is_bounded_and_the_same_all_day(database: Database) -> None:
    catalog, _ = await load(database)
    check = quality(database, catalog, consistency_sample=3)
    first = await check.check(HOLDER_ENTRY.resource_code, "operator")
    again = await check.check(HOLDER_ENTRY.resource_code, "operator")
    for a, b in zip(first.consistency, again.consistency, strict=True):
        assert a.compared == 3
        assert a.matched + a.mismatched + a.not_found == 3
        assert a == b


async def test_many_mismatches_keep_twenty_digests(database: Database) -> None:
    catalog = Catalog(database, NODE_REGION, clock=lambda: T0)
    await catalog.register(agency(SOURCE_PROVIDER), SOURCE)
    await catalog.register(agency(HOLDER), HOLDER_ENTRY)
    records = Records(database, NODE_REGION, clock=lambda: T0)
    people = range(30)
    await records.submit(
        agency(SOURCE_PROVIDER),
        SOURCE,
        SubmitBatch("s", tuple({"sfzhm": person_id(i), "xm": f"张{i}"} for i in people)),
    )
    await records.submit(
        agency(HOLDER),
        HOLDER_ENTRY,
        SubmitBatch(
            "h",
            tuple(
                {"dbbh": f"DB{i:03d}", "gmsfhm": person_id(i), "xingming": f"李{i}"} for i in people
            ),
        ),
    )
    report = await quality(database, catalog).check(HOLDER_ENTRY.resource_code, "operator")
    names, addresses = report.consistency
    assert (names.item, names.compared, names.mismatched) == ("xingming", 30, 30)
    assert (addresses.item, addresses.compared, addresses.unmeasured) == ("zhuzhi", 0, "")
    assert len(names.mismatch_keys) == MAX_MISMATCH_KEYS
    assert report.dimension(Dimension.CONSISTENCY).level is Level.CRITICAL


async def test_a_source_this_resource_cannot_key_is_unmeasured(database: Database) -> None:
    catalog = Catalog(database, NODE_REGION, clock=lambda: T0)
    await catalog.register(agency(SOURCE_PROVIDER), SOURCE)
    lonely = make_entry(
        23,
        HOLDER,
        items=(item("dbbh", key=True, required=True), item("xingming", standard_element="DE.XM")),
    )
    await catalog.register(agency(HOLDER), lonely)
    report = await quality(database, catalog).check(lonely.resource_code, "operator")
    (names,) = report.consistency
    assert names.unmeasured == (
        f"source {SOURCE.resource_code} is keyed by sfzhm (DE.GMSFHM): no item of "
        f"{lonely.resource_code} carries that standard data element"
    )
    assert report.dimension(Dimension.CONSISTENCY).level is Level.UNMEASURED
    # The source itself is checked against nothing.
    own = await quality(database, catalog).check(SOURCE.resource_code, "operator")
    assert own.consistency == ()


def test_an_old_report_without_consistency_still_loads() -> None:
    # Written as reports were stored before 一致性 was measured.
    old = {
        "resource_code": "350100-3-000001",
        "provider_code": HOLDER,
        "entry_version": 1,
        "checked_at": T0.isoformat(),
        "window_start": T0.isoformat(),
        "records": 0,
        "dimensions": [],
        "overall": None,
        "grade": None,
        "level": "unmeasured",
        "thresholds": {"warn_below": 80.0, "critical_below": 60.0},
        "metadata": {
            "code": "M",
            "dimension": "completeness",
            "name": "n",
            "numerator": 0,
            "denominator": 0,
            "counted": "",
        },
        "items": [],
        "rules": [],
        "caller_refusals": 0,
        "newest_data_age_seconds": None,
        "drops": [],
    }
    assert report_from_json(json.dumps(old)).consistency == ()


# --- over real nodes: a 福州 resource whose names the province's resource sources -------------

#: Sensitive (level 3), so the Verify oracle guards it: with a daily quota of 3 rows per caller,
#: an agency's Compare of the sample would be refused; the authority's sample is outside it.
PROVINCE_SOURCE = entry_of(
    PROVINCE,
    31,
    name="全省人口基础信息",
    items=tuple(i.model_copy(update={"sensitivity_level": 3}) for i in SOURCE.items[:2]),
    share_type=ShareType.CONDITIONAL,
    share_methods=(ShareMethod.COMPARE,),
)
CITY_HOLDER = entry_of(FUZHOU, 32, name="低保对象", items=HOLDER_ENTRY.items[:3])


def compare(code: str, sampled: str = "", **claims: str) -> sharing_pb2.CompareRequest:
    return sharing_pb2.CompareRequest(
        resource_code=code,
        records=[sharing_pb2.CompareRecord(ref="1", key={"sfzhm": person_id(0)}, claimed=claims)],
        quality_sample_for=sampled,
    )


async def audited_compares(db: Database) -> list[AuditRecord]:
    """The province's audit records of Compare calls by 福州's authority (polled every 0.1 s
    for at most 5 s: a call's record may land just after its answer)."""
    found: list[AuditRecord] = []
    for _ in range(50):
        records = await AuditLog(db).query(
            resource_code=PROVINCE_SOURCE.resource_code,
            caller=f"spiffe://{FUZHOU}.fujian.gov.cn/authority",
        )
        found = [r for r in records if r.method == "/govnode.v1.SharingService/Compare"]
        if found:
            return found
        await asyncio.sleep(0.1)
    return found


async def test_a_source_at_the_province_is_sampled_over_the_federation(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls, verify_per_day=3) as fed:
        city, province = fed.fuzhou, fed.province
        await province.register(PROVINCE_SOURCE)
        await city.register(CITY_HOLDER)
        source = [{k: r[k] for k in ("sfzhm", "xm")} for r in source_rows()]
        held = [{k: v for k, v in r.items() if k != "zhuzhi" and k != "bz"} for r in holder_rows()]
        await submit(province.running, province.agency(), PROVINCE_SOURCE.resource_code, source)
        await submit(city.running, city.agency(), CITY_HOLDER.resource_code, held)
        await fed.converged(2)

        code, out, errors = await cli(
            "quality", "check", "--resource", CITY_HOLDER.resource_code,
            "--config", city.setup.config_path,
        )  # fmt: skip
        assert code == 0, errors
        report = await get_report(city.running, city.setup.authority(), CITY_HOLDER.resource_code)
        (names,) = report.consistency
        # Recounted from what was submitted on each side.
        known = {r["sfzhm"]: r["xm"] for r in source}
        sample = [r for r in held if r.get("xingming") and r.get("gmsfhm")]
        found = [r for r in sample if r["gmsfhm"] in known]
        agree = [r for r in found if known[r["gmsfhm"]] == r["xingming"]]
        assert (names.item, names.element, names.source_resource, names.source_item) == (
            "xingming",
            "DE.XM",
            PROVINCE_SOURCE.resource_code,
            "xm",
        )
        assert (names.compared, names.matched, names.mismatched, names.not_found) == (
            len(sample),
            len(agree),
            len(found) - len(agree),
            len(sample) - len(found),
        )
        assert sorted(names.mismatch_keys) == sorted(
            digest({"dbbh": r["dbbh"]}) for r in found if r not in agree
        )
        assert names.unmeasured == ""
        assert indicators(report)["040100"] == (len(agree), len(found))
        (dimension,) = [d for d in report.dimensions if d.dimension == "consistency"]
        assert dimension.term == "一致性" and dimension.measured

        # The province audits the sample as a Compare by 福州's authority, routed by 福州's node.
        [call] = await audited_compares(province.running.db)
        assert (call.outcome, call.origin_node) == ("OK", f"spiffe://{FUZHOU}.fujian.gov.cn/node")
        assert call.detail["quality_sample_for"] == CITY_HOLDER.resource_code

        code, out, errors = await cli(
            "quality", "report", "--resource", CITY_HOLDER.resource_code,
            "--config", city.setup.config_path,
        )  # fmt: skip
        assert code == 0, errors
        assert (
            f"一致性 xingming (DE.XM) against {PROVINCE_SOURCE.resource_code} xm: compared "
            f"{len(sample)}, matched {len(agree)}, mismatched {len(found) - len(agree)}, "
            f"not found at the source {len(sample) - len(found)}"
        ) in out

        # The exception is the authority's only: the city's agency naming a sample is refused,
        # as it is without one (有条件共享, no grant); the city's authority is refused without one.
        sampling = compare(PROVINCE_SOURCE.resource_code, CITY_HOLDER.resource_code, xm="张0")
        err = await refused(sharing(city.running, city.agency(), "Compare", sampling))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "quality samples are taken by the data management authority" in (err.details() or "")
        assert "is not an authority" in (err.details() or "")
        plain = compare(PROVINCE_SOURCE.resource_code, xm="张0")
        err = await refused(sharing(city.running, city.agency(), "Compare", plain))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "有条件共享" in (err.details() or "")
        err = await refused(sharing(city.running, city.setup.authority(), "Compare", plain))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        # 厦门's authority may not sample 福州's resource.
        err = await refused(
            sharing(fed.xiamen.running, fed.xiamen.setup.authority(), "Compare", sampling)
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (
            f"resource {CITY_HOLDER.resource_code} belongs to region {FUZHOU}; only that "
            "region's data management authority samples it"
        ) in (err.details() or "")
        # The city's authority itself: allowed for the source items, keyed on the source key.
        (answer,) = await sharing(city.running, city.setup.authority(), "Compare", sampling)
        assert answer.found and answer.all_match
        unknown = compare(PROVINCE_SOURCE.resource_code, "9" * 10_000, xm="张0")
        err = await refused(sharing(city.running, city.setup.authority(), "Compare", unknown))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert len(err.details() or "") < 200 and "is not in the catalog" in (err.details() or "")
        wrong = compare(PROVINCE_SOURCE.resource_code, CITY_HOLDER.resource_code, sfzhm="x")
        err = await refused(sharing(city.running, city.setup.authority(), "Compare", wrong))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "a quality sample claims only xm" in (err.details() or "")

        # The oracle's quota is in force for an agency holding a grant: its Compare of the same
        # ten records is over it, where the authority's sample was not.
        applied = await access(
            city.running,
            city.agency(),
            "Apply",
            apply_request(
                PROVINCE_SOURCE.resource_code, ("sfzhm", "xm"), (M.SHARE_METHOD_COMPARE,)
            ),
        )
        await access(
            province.running,
            province.setup.authority(),
            "ReviewApplication",
            approve(applied.application.id),
        )
        ten = sharing_pb2.CompareRequest(
            resource_code=PROVINCE_SOURCE.resource_code,
            records=[
                sharing_pb2.CompareRecord(
                    ref=str(n), key={"sfzhm": r["gmsfhm"]}, claimed={"xm": r["xingming"]}
                )
                for n, r in enumerate(sample)
            ],
        )
        err = await refused(sharing(city.running, city.agency(), "Compare", ten))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()

        # The province down: 一致性 unmeasured with the reason, the rest of the check done.
        await province.stop()
        code, out, errors = await cli(
            "quality", "check", "--resource", CITY_HOLDER.resource_code,
            "--config", city.setup.config_path,
        )  # fmt: skip
        assert code == 0, errors
        report = await get_report(city.running, city.setup.authority(), CITY_HOLDER.resource_code)
        (names,) = report.consistency
        assert names.unmeasured.startswith(
            f"compared with {PROVINCE_SOURCE.resource_code}: UNAVAILABLE"
        ), names.unmeasured
        assert (names.compared, names.matched, names.mismatched) == (0, 0, 0)
        (dimension,) = [d for d in report.dimensions if d.dimension == "consistency"]
        assert not dimension.measured
        assert report.records == len(held) and report.overall_measured
        assert indicators(report)["020101"][1] == len(held) * len(CITY_HOLDER.items)
