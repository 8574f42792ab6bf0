"""Quality checks over small data on SQLite and PostgreSQL: every figure of a check is counted
again here, in plain Python over the rows the check read, and must agree; scores, grades,
thresholds, drops against history and who may read a report."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from statistics import fmean
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from gateway.identity import Identity, Role
from node.audit import AuditEntry, AuditLog, Operation
from node.catalog import Catalog, ResourceEntry, UpdateCycle
from node.codes import make_citizen_id
from node.errors import FailedPrecondition, NotFound, PermissionDenied
from node.quality import (
    CHECK_METHOD,
    DailyCheck,
    Dimension,
    Grade,
    Level,
    Quality,
    QualityReport,
    QualitySettings,
    Thresholds,
    check_reader,
    grade_of,
    metadata_missing,
    next_run,
)
from node.records import CYCLE_ALLOWANCE, DUPLICATE_BATCH_MESSAGE, Records, SubmitBatch
from node.storage import Database
from tests.support.entries import (
    NODE_REGION,
    TRUST_DOMAIN,
    agency,
    agency_code,
    person_entry,
)

PROVIDER = agency_code(7)
ENTRY = person_entry(2, PROVIDER, update_cycle=UpdateCycle.DAILY)
OTHER = person_entry(3, PROVIDER)
T0 = dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)  # registration
NOW = T0 + dt.timedelta(days=10)  # the check
WINDOW_DAYS = 7
SHARE = "/govnode.v1.SharingService/"


def cid(i: int) -> str:
    birth = dt.date(1980, 1, 1) + dt.timedelta(days=i)
    return make_citizen_id(f"350102{birth:%Y%m%d}{i % 1000:03d}")


def person(i: int, **values: str) -> dict[str, str]:
    return {"sfzhm": cid(i), "xm": f"张{i}"} | values


def bad_cid(i: int) -> str:
    good = cid(i)
    return good[:17] + ("0" if good[17] != "0" else "1")


class Clock:
    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


def settings(**fields: Any) -> QualitySettings:
    return QualitySettings(**({"window_days": WINDOW_DAYS} | fields))


async def world(database: Database) -> tuple[Clock, Catalog, Records, AuditLog]:
    clock = Clock(T0)
    catalog = Catalog(database, NODE_REGION, clock=clock)
    await catalog.register(agency(PROVIDER), ENTRY)
    await catalog.register(agency(PROVIDER), OTHER)
    records = Records(database, NODE_REGION, clock=clock)
    audit = AuditLog(database)
    await audit.start()
    return clock, catalog, records, audit


async def submit(records: Records, clock: Clock, days: float, batch: str, *rows: Any) -> None:
    clock.at = T0 + dt.timedelta(days=days)
    await records.submit(agency(PROVIDER), ENTRY, SubmitBatch(batch_id=batch, records=tuple(rows)))


async def call(
    audit: AuditLog, days: float, method: str, outcome: str, code: str = ENTRY.resource_code
) -> None:
    await audit.append(
        AuditEntry(
            caller=agency(agency_code(9)).uri,
            method=method,
            operation=Operation.QUERY,
            outcome=outcome,
            request_digest="0" * 64,
            resource_code=code,
            message=DUPLICATE_BATCH_MESSAGE if method.endswith("Submit") else "",
            at=T0 + dt.timedelta(days=days),
        )
    )


async def the_story(database: Database) -> tuple[Clock, Catalog, Records, AuditLog]:
    """Ten days of one resource: batches in and out of the 7-day window, refusals of every
    kind, a resent batch, share calls served, failed and refused."""
    clock, catalog, records, audit = await world(database)
    # Day 1, before the window: one good record, one refused (counted only as a record).
    await submit(
        records, clock, 1, "b0", person(1, sjhm="13800000001"), person(2, sfzhm=bad_cid(2))
    )
    # Day 4.5: two good, a bad 公民身份号码, a bad date with an undeclared item, a bad enum.
    await submit(
        records,
        clock,
        4.5,
        "b1",
        person(3, csrq="1980-01-02", hyzk="已婚"),
        person(4),
        person(5, sfzhm=bad_cid(5)),
        person(6, csrq="1980-02-30", email="x@example.cn"),
        person(7, hyzk="未知"),
    )
    # Day 5: b1 sent again (the audit records it as a duplicate; nothing applied).
    await call(audit, 5, SHARE + "Submit", "OK")
    # Day 5.5: one key carried twice with other values (both refused), one good, one missing
    # its required name.
    await submit(
        records,
        clock,
        5.5,
        "b2",
        person(8, xm="甲"),
        person(8, xm="乙"),
        person(9, ysr="100"),
        {"sfzhm": cid(10)},
    )
    # Day 9: one good record; the last period has an aggregation, the one before does not.
    await submit(records, clock, 9, "b3", person(11, sjhm="13800000011"))
    # Share calls: served, failed by the node, refused for the caller; one outside the window
    # and one on another resource.
    for outcome in ("OK", "OK", "OK", "UNAVAILABLE", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
        await call(audit, 6, SHARE + "Verify", outcome)
    await call(audit, 7, SHARE + "Query", "INTERNAL")
    await call(audit, 7, SHARE + "Exchange", "OK")
    await call(audit, 1, SHARE + "Verify", "UNAVAILABLE")  # before the window
    await call(audit, 7, SHARE + "Verify", "UNAVAILABLE", OTHER.resource_code)
    await call(audit, 7, SHARE + "Subscribe", "CANCELLED")  # not a measured method
    clock.at = NOW
    return clock, catalog, records, audit


def tables() -> dict[str, sa.Table]:
    return {
        name: SQLModel.metadata.tables[name]
        for name in ("record", "submit_batch", "audit_record", "resource_data")
    }


async def rows_of(database: Database) -> dict[str, list[Any]]:
    async def read(session: Any) -> dict[str, list[Any]]:
        conn = await session.connection()
        return {
            name: list(await conn.execute(sa.select(table))) for name, table in tables().items()
        }

    return await database.read("test.rows", read)


def independent(rows: dict[str, list[Any]], entry: ResourceEntry) -> dict[str, tuple[int, int]]:
    """Every indicator recounted in Python from the rows, without the check's SQL."""
    start = NOW - dt.timedelta(days=WINDOW_DAYS)
    code = entry.resource_code
    live = [r for r in rows["record"] if r.resource_code == code and not r.deleted]
    names = [i.name for i in entry.items]
    required = [i.name for i in entry.items if i.required or i.key]

    def filled(names: list[str]) -> int:
        return sum(1 for r in live for n in names if r.item_values.get(n, "") != "")

    batches = [b for b in rows["submit_batch"] if b.resource_code == code and b.at >= start]
    submitted = sum(b.accepted + b.rejected + len(json.loads(b.held or "[]")) for b in batches)
    refusals = [(b.batch_id, r) for b in batches for r in json.loads(b.rejections)]
    conflicts = {(bid, r[0]) for bid, r in refusals if r[2].startswith("its key (")}
    by_item: dict[str, set[tuple[str, int]]] = {}
    for bid, (index, item, _) in refusals:
        by_item.setdefault(item, set()).add((bid, index))
    audit = [a for a in rows["audit_record"] if a.resource_code == code and a.at >= start]
    resent = sum(1 for a in audit if a.message == DUPLICATE_BATCH_MESSAGE)
    share = [
        a
        for a in audit
        if a.method in {SHARE + m for m in ("Verify", "Compare", "Query", "Exchange")}
    ]
    ok = sum(1 for a in share if a.outcome == "OK")
    faults = sum(
        1
        for a in share
        if a.outcome in {"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "DATA_LOSS"}
    )
    period = CYCLE_ALLOWANCE[entry.update_cycle]
    assert period is not None
    count = WINDOW_DAYS * dt.timedelta(days=1) // period
    hit = {
        int((NOW - b.at) / period)
        for b in batches
        if (b.accepted > 0 or b.held) and NOW - count * period <= b.at <= NOW
    }
    [data] = [d for d in rows["resource_data"] if d.resource_code == code]
    return {
        "010400": (submitted - sum(b.rejected for b in batches), submitted),
        "020100": (filled(required), len(live) * len(required)),
        "020101": (filled(names), len(live) * len(names)),
        "030400": (submitted - len(conflicts), submitted),
        "030300": (len(batches), len(batches) + resent),
        "040100": (0, 0),  # no item of it is sourced elsewhere (see test_consistency)
        "050100": (len(hit), count),
        "050200": (int(NOW - data.last_aggregated_at <= period), 1),
        "060100": (ok, ok + faults),
        **{f"item:{n}": (len(by_item.get(n, ())), 0) for n in names},
    }


def figures(report: QualityReport) -> dict[str, tuple[int, int]]:
    found = {i.code: (i.numerator, i.denominator) for d in report.dimensions for i in d.indicators}
    found.update({f"item:{i.item}": (i.refused, 0) for i in report.items})
    return found


async def test_every_figure_agrees_with_a_count_in_python(database: Database) -> None:
    clock, catalog, _records, _audit = await the_story(database)
    quality = Quality(database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock)

    report = await quality.check(ENTRY.resource_code, "spiffe://350100.fujian.gov.cn/authority")

    assert figures(report) == independent(await rows_of(database), ENTRY)
    # And what the story says, by hand: 10 records submitted in the window (b1 5, b2 4, b3 1;
    # b0 is before it), 6 refused, 2 of them for one key with two names.
    c = report.dimension(Dimension.CONFORMITY).indicators[0]
    assert (c.numerator, c.denominator) == (4, 10)
    u = report.dimension(Dimension.UNIQUENESS)
    assert [(i.code, i.numerator, i.denominator) for i in u.indicators] == [
        ("030400", 8, 10),
        ("030300", 3, 4),
    ]
    t = report.dimension(Dimension.TIMELINESS)
    assert [(i.numerator, i.denominator) for i in t.indicators] == [(2, 3), (1, 1)]
    a = report.dimension(Dimension.ACCESSIBILITY).indicators[0]
    assert (a.numerator, a.denominator, report.caller_refusals) == (4, 6, 2)
    assert report.records == 5  # persons 1, 3, 4, 9 and 11
    assert report.newest_data_age_seconds == 86_400


async def test_scores_grade_and_levels_follow_the_figures(database: Database) -> None:
    clock, catalog, _records, _audit = await the_story(database)
    quality = Quality(
        database,
        catalog,
        node_region=NODE_REGION,
        settings=settings(per_resource={ENTRY.resource_code: Thresholds(95.0, 70.0)}),
        clock=clock,
    )
    report = await quality.check(ENTRY.resource_code, "operator")
    for d in report.dimensions:
        scores = [i.score for i in d.indicators if i.score is not None]
        assert d.score == (round(fmean(scores), 2) if scores else None)
    overall = fmean(d.score for d in report.dimensions if d.score is not None)
    assert report.overall == round(overall, 2)
    assert report.grade is grade_of(overall)
    assert report.thresholds == Thresholds(95.0, 70.0)
    assert report.dimension(Dimension.CONFORMITY).level is Level.CRITICAL  # 40 < 70
    assert report.dimension(Dimension.UNIQUENESS).level is Level.WARN  # 77.5: under 95
    # Stored, and served back as it was made.
    assert await quality.latest(ENTRY.resource_code) == report


def test_grade_bands() -> None:
    assert [grade_of(s) for s in (100, 90, 89.99, 80, 70, 60, 59.99, 0)] == [
        Grade.A,
        Grade.A,
        Grade.B,
        Grade.B,
        Grade.C,
        Grade.D,
        Grade.E,
        Grade.E,
    ]
    assert Thresholds().level(None) is Level.UNMEASURED


async def test_a_resource_with_nothing_to_count_is_unmeasured(database: Database) -> None:
    clock, catalog, _records, _audit = await world(database)
    clock.at = T0 + dt.timedelta(hours=1)  # registered an hour ago: no whole cycle yet
    quality = Quality(database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock)
    report = await quality.check(OTHER.resource_code, "operator")
    assert report.overall is None and report.grade is None
    assert report.level is Level.UNMEASURED
    assert all(d.score is None for d in report.dimensions)


async def test_a_drop_against_recent_checks_is_flagged(database: Database) -> None:
    clock, catalog, _records, audit = await the_story(database)
    quality = Quality(
        database, catalog, node_region=NODE_REGION, settings=settings(drop_points=10.0), clock=clock
    )
    first = await quality.check(ENTRY.resource_code, "operator")
    assert first.drops == ()
    again = await quality.check(ENTRY.resource_code, "operator")
    assert again.drops == ()  # nothing changed
    # The node fails twenty calls: 可访问性 falls from 66.67 to 4 / 26.
    for _ in range(20):
        await call(audit, 9.5, SHARE + "Query", "UNAVAILABLE")
    fell = await quality.check(ENTRY.resource_code, "operator")
    accessibility = fell.dimension(Dimension.ACCESSIBILITY).score
    assert accessibility == round(100 * 4 / 26, 2)
    [drop] = [d for d in fell.drops if d.dimension == "accessibility"]
    assert (drop.score, drop.baseline, drop.checks) == (accessibility, 66.67, 2)
    assert {d.dimension for d in fell.drops} <= {"accessibility", "overall"}
    # The history the console charts: the checks, oldest first, with their overall scores.
    history = await quality.history(ENTRY.resource_code)
    assert [p.overall for p in history] == [first.overall, again.overall, fell.overall]
    assert [p.checked_at for p in history] == [first.checked_at, again.checked_at, fell.checked_at]
    assert [p.overall for p in await quality.history(ENTRY.resource_code, 2)] == [
        again.overall,
        fell.overall,
    ]


async def test_checks_are_audited_and_checked_all_together(database: Database) -> None:
    clock, catalog, _records, audit = await the_story(database)
    quality = Quality(
        database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock, audit=audit
    )
    seen: list[tuple[int, int, str]] = []
    reports = await quality.check_all(
        "operator", lambda n, total, code: seen.append((n, total, code))
    )
    codes = sorted([ENTRY.resource_code, OTHER.resource_code])
    assert [r.resource_code for r in reports] == codes
    assert seen == [(1, 2, codes[0]), (2, 2, codes[1])]
    analyses = await audit.query(operation=Operation.ANALYZE, limit=10)
    checked = [r for r in analyses if r.method == CHECK_METHOD]
    assert sorted(r.resource_code for r in checked) == codes
    assert {r.operation for r in checked} == {Operation.ANALYZE}


async def test_unknown_foreign_and_unchecked_resources_are_refused(database: Database) -> None:
    clock, catalog, _records, _audit = await world(database)
    quality = Quality(database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock)
    with pytest.raises(NotFound, match="is not in the catalog of this node"):
        await quality.check("350100-3-999999", "operator")
    with pytest.raises(NotFound, match="has no quality check yet"):
        await quality.latest(ENTRY.resource_code)
    elsewhere = Quality(database, catalog, node_region="350200", settings=settings(), clock=clock)
    with pytest.raises(FailedPrecondition, match="belongs to region 350100"):
        await elsewhere.check(ENTRY.resource_code, "operator")


def test_who_may_read_a_report() -> None:
    entry = ENTRY.model_copy(update={"region": "350100"})
    readers = [
        agency(PROVIDER),
        Identity("350100", TRUST_DOMAIN, Role.AUTHORITY),
        Identity("350000", TRUST_DOMAIN, Role.AUTHORITY),
    ]
    for reader in readers:
        check_reader(reader, entry, TRUST_DOMAIN)
    refused = [
        agency(agency_code(9)),  # another agency
        agency(PROVIDER, region="350200"),  # the provider's code, minted in another city
        Identity("350200", TRUST_DOMAIN, Role.AUTHORITY),  # another city's authority
        Identity("350100", TRUST_DOMAIN, Role.NODE),
    ]
    for caller in refused:
        with pytest.raises(PermissionDenied) as info:
            check_reader(caller, entry, TRUST_DOMAIN)
        assert info.value.message == (
            f"the quality report of resource {entry.resource_code} is read by its provider "
            f"(agency {PROVIDER} of region 350100), the data management authority of region "
            f"350100 and the province's authority (第十五条); {caller.uri} is none of them"
        )


def test_metadata_counts_the_fields_registration_lets_pass_empty() -> None:
    bare = ENTRY.model_copy(update={"summary": "", "publish_date": "", "format": ""})
    assert metadata_missing(bare)[:3] == ["summary", "format", "publish_date"]
    assert "items.xm.description" in metadata_missing(bare)


def test_the_daily_check_runs_at_check_time_china_standard_time() -> None:
    # 02:30 CST is 18:30 UTC the day before.
    before = dt.datetime(2025, 3, 1, 18, 0, tzinfo=dt.UTC)
    assert next_run(before, "02:30") == dt.datetime(2025, 3, 1, 18, 30, tzinfo=dt.UTC)
    at = dt.datetime(2025, 3, 1, 18, 30, tzinfo=dt.UTC)
    assert next_run(at, "02:30") == dt.datetime(2025, 3, 2, 18, 30, tzinfo=dt.UTC)


async def test_the_daily_check_checks_every_resource_when_its_time_comes(
    database: Database,
) -> None:
    clock, catalog, _, audit = await the_story(database)
    quality = Quality(
        database, catalog, node_region=NODE_REGION, settings=settings(), clock=clock, audit=audit
    )
    # The node's clock says 02:29:59.999 China Standard Time: the check is due at once.
    moment = dt.datetime(2025, 3, 10, 18, 29, 59, 999_000, tzinfo=dt.UTC)
    daily = DailyCheck(quality, "spiffe://350100.fujian.gov.cn/node", "02:30", lambda: moment)
    daily.start()
    try:
        await asyncio.wait_for(daily.ran.wait(), timeout=30)
    finally:
        await daily.stop()
    for code in (ENTRY.resource_code, OTHER.resource_code):
        assert (await quality.latest(code)).resource_code == code
    # Another process of the node, due at the same moment, finds today's check done.
    due = next_run(moment, "02:30")
    assert await quality.check_all("another process", unless_checked_since=due) == []
